"""Parse CEL text with cel-python's grammar, reporting errors at a line and column."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import lark
from celpy.celparser import CELParser

# cel-python keeps one Lark parser per process (a class attribute). Lark's LALR parser is
# re-entrant, but the first construction is not, so build it once under a lock.
_parser_lock = threading.Lock()
_parser: lark.Lark | None = None


def _lark() -> lark.Lark:
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                CELParser()
                assert CELParser.CEL_PARSER is not None
                _parser = CELParser.CEL_PARSER
    return _parser


@dataclass(frozen=True, slots=True)
class CelIssue:
    """A problem inside one expression; line and column are 1-based within its text."""

    code: str
    message: str
    line: int
    column: int


class CelSyntaxError(Exception):
    def __init__(self, issue: CelIssue):
        super().__init__(issue.message)
        self.issue = issue


def parse(text: str) -> lark.Tree:
    """Parse ``text`` into cel-python's tree; raises :class:`CelSyntaxError`.

    >>> parse('device.trust == "managed"').data
    'expr'
    """
    try:
        return _lark().parse(text)
    except lark.exceptions.UnexpectedEOF:
        line = text.count("\n") + 1
        return _raise("unexpected end of expression", line, len(text.rsplit("\n", 1)[-1]) + 1)
    except lark.exceptions.UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            line = text.count("\n") + 1
            return _raise("unexpected end of expression", line, len(text.rsplit("\n", 1)[-1]) + 1)
        expected = sorted(_describe(name) for name in exc.expected if not name.startswith("__"))
        hint = f"; expected {', '.join(expected[:6])}" if expected and len(expected) <= 8 else ""
        return _raise(f"unexpected {token.value!r}{hint}", exc.line, exc.column)
    except lark.exceptions.UnexpectedCharacters as exc:
        return _raise(f"unexpected character {exc.char!r}", exc.line, exc.column)
    except lark.exceptions.LarkError as exc:  # pragma: no cover - defensive
        return _raise(str(exc).splitlines()[0], 1, 1)


def _raise(message: str, line: int, column: int) -> lark.Tree:
    raise CelSyntaxError(CelIssue("cel-syntax", message, max(line, 1), max(column, 1)))


_PUNCT = {"RPAR": "')'", "LPAR": "'('", "RSQB": "']'", "LSQB": "'['", "COLON": "':'",
          "COMMA": "','", "DOT": "'.'", "RBRACE": "'}'", "QMARK": "'?'"}


def _describe(terminal: str) -> str:
    if terminal in _PUNCT:
        return _PUNCT[terminal]
    return terminal.lower().replace("_lit", "").replace("_", " ")


def position(node: lark.Tree | lark.Token) -> tuple[int, int]:
    """1-based (line, column) of a tree node or token within its expression."""
    if isinstance(node, lark.Token):
        return (node.line or 1, node.column or 1)
    meta = node.meta
    if getattr(meta, "empty", True):
        for child in node.children:
            if isinstance(child, (lark.Tree, lark.Token)):
                return position(child)
        return (1, 1)
    return (meta.line, meta.column)
