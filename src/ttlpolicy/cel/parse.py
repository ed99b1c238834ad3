"""Parse CEL text with cel-python's grammar, reporting errors at a line and column."""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lark

from .fastparse import parse_common

# cel-python keeps one Lark parser per process (a class attribute). Lark's LALR parser is
# re-entrant, but the first construction is not, so build it once under a lock.
_parser_lock = threading.Lock()
_parser: lark.Lark | None = None


def _cache_file() -> str | bool:
    """Where to keep lark's analysed grammar between processes, or ``False`` for nowhere.

    Building the LALR tables takes ~0.2-1 s, a good part of a ``ttlpolicy lint`` run; lark's
    ``cache=`` option pickles them to this file at first use and checks a digest of the grammar,
    the options and the lark version on load (a stale or broken file is rebuilt). It lives in the
    user's own cache directory, never a shared temp directory (the file is unpickled).
    """
    if os.environ.get("TTLPOLICY_NO_PARSER_CACHE"):
        return False
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "ttlpolicy")
    path = os.path.join(folder, f"cel-parser-lark{lark.__version__}-py{sys.version_info[0]}{sys.version_info[1]}.pickle")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not (_private(folder) and (not os.path.exists(path) or _private(path))):
            return False  # someone else could plant a pickle here: build in memory instead
    except OSError:
        return False
    return path if os.access(folder, os.W_OK) else False


def _private(path: str) -> bool:
    """Owned by this user and writable by nobody else."""
    info = os.stat(path)
    owner = os.getuid() if hasattr(os, "getuid") else info.st_uid
    return info.st_uid == owner and not info.st_mode & 0o022


def _bool_literal(token: lark.Token) -> lark.Token:
    """``true`` and ``false`` are ``BOOL_LIT``, not identifiers (as cel-python's
    ``CELParser.ambiguous_literals``), keeping their position: cel-python's callback makes new
    tokens without one, which left every node that starts with ``true`` without a position and
    lint without a line for its errors."""
    if token.value == "true" or token.value == "false":
        return lark.Token.new_borrow_pos("BOOL_LIT", token.value, token)
    return token


def _build() -> lark.Lark:
    """cel-python's parser (its grammar and options, as ``CELParser()``, but with positions on
    ``true`` and ``false``), built from the cache."""
    from celpy import celparser  # only when lark parses: most policies never need it (see fastparse)
    from celpy.celparser import CELParser

    grammar = (Path(celparser.__file__).parent / "cel.lark").read_text()
    options: dict[str, Any] = dict(
        parser="lalr", start="expr", debug=True, g_regex_flags=re.M,
        lexer_callbacks={"IDENT": _bool_literal}, propagate_positions=True,
        maybe_placeholders=False, priority="invert", tree_class=lark.Tree)
    try:
        return lark.Lark(grammar, cache=_cache_file(), **options)
    except Exception:  # noqa: BLE001 - a cache problem must never stop parsing: build afresh
        return lark.Lark(grammar, **options)


def _lark() -> lark.Lark:
    global _parser
    if _parser is None:
        from celpy.celparser import CELParser

        with _parser_lock:
            if _parser is None:
                # Our own even when cel-python built one already (its bool literals have no position).
                _parser = _build()
                if CELParser.CEL_PARSER is None:
                    CELParser.CEL_PARSER = _parser  # shared with cel-python (the reference backend)
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


# The deepest syntax tree an expression may have. Every stage after parsing (type checking,
# compiling, generating, analysing, proving) walks the tree recursively; far deeper trees (a
# hundred nested parentheses, a chain of thousands of `||`) would exhaust Python's stack.
# Generous for people: 20 nested parentheses, or a chain of 200 `||` terms, stay below it.
MAX_TREE_DEPTH = 250
# Every level of the tree beyond its first dozen begins at one of these characters (a bracket, an
# operator, a dot), and no character begins more than a dozen levels (a `(` starts the grammar's
# chain from `expr` down to `primary` again): so a text with few of them needs no walk.
_NESTING = "([{.!-?:&|<>=+*/%,"
_LEVELS_PER_CHARACTER = 12


def parse(text: str) -> lark.Tree:
    """Parse ``text`` into cel-python's tree; raises :class:`CelSyntaxError`.

    >>> parse('device.trust == "managed"').data
    'expr'
    """
    tree = parse_common(text)  # the same tree, ten times faster, for the common shapes
    if tree is None:
        tree = _parse_lark(text)
    if _LEVELS_PER_CHARACTER * (1 + sum(map(text.count, _NESTING))) > MAX_TREE_DEPTH:
        _check_depth(tree)
    return tree


def _check_depth(tree: lark.Tree) -> None:
    """Refuse a tree deeper than :data:`MAX_TREE_DEPTH`, at the first node past it."""
    stack: list[tuple[lark.Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            line, column = position(node)
            _raise_code("cel-too-deep", "the expression nests too deeply here (its syntax tree is deeper than "
                        f"{MAX_TREE_DEPTH} levels): split the condition, use `x in [...]` instead of a long chain "
                        "of `||`, or drop parentheses", line, column)
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))


def _parse_lark(text: str) -> lark.Tree:
    try:
        return _lark().parse(text)
    except lark.exceptions.UnexpectedEOF:
        return _end_of_text(text)
    except lark.exceptions.UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            return _end_of_text(text)
        expected = sorted(_describe(name) for name in exc.expected if not name.startswith("__"))
        hint = f"; expected {', '.join(expected[:6])}" if expected and len(expected) <= 8 else ""
        return _raise(f"unexpected {token.value!r}{hint}", exc.line, exc.column)
    except lark.exceptions.UnexpectedCharacters as exc:
        return _raise(f"unexpected character {exc.char!r}", exc.line, exc.column)
    except lark.exceptions.LarkError as exc:  # pragma: no cover - defensive
        return _raise(str(exc).splitlines()[0], 1, 1)


def _end_of_text(text: str) -> lark.Tree:
    """The text ended early: point at the bracket left open, if one was, else at the end."""
    opener = unclosed_bracket(text)
    if opener is not None:
        char, line, column = opener
        closer = {"(": ")", "[": "]", "{": "}"}[char]
        return _raise(f"this {char!r} is never closed; add {closer!r} where it should end", line, column)
    line = text.count("\n") + 1
    return _raise("unexpected end of expression", line, len(text.rsplit("\n", 1)[-1]) + 1)


def unclosed_bracket(text: str) -> tuple[str, int, int] | None:
    """The innermost bracket still open at the end of ``text`` (outside string literals), with its
    1-based line and column; ``None`` when every bracket is closed.

    >>> unclosed_bracket('(a && b == "(" ')
    ('(', 1, 1)
    """
    stack: list[tuple[str, int, int]] = []
    line, column, quote, i = 1, 0, "", 0
    while i < len(text):
        ch = text[i]
        column += 1
        if ch == "\n":
            line, column = line + 1, 0
        elif quote:
            if ch == "\\":
                i, column = i + 1, column + 1
            elif text.startswith(quote, i):
                i, column, quote = i + len(quote) - 1, column + len(quote) - 1, ""
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            i, column = i + len(quote) - 1, column + len(quote) - 1
        elif ch in "([{":
            stack.append((ch, line, column))
        elif ch in ")]}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def _raise(message: str, line: int, column: int) -> lark.Tree:
    return _raise_code("cel-syntax", message, line, column)


def _raise_code(code: str, message: str, line: int, column: int) -> lark.Tree:
    raise CelSyntaxError(CelIssue(code, message, max(line, 1), max(column, 1)))


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
