"""A hand-written parser for the common shapes of CEL, giving exactly the tree lark gives.

cel-python's grammar runs on lark's general LALR machinery, which builds every node through a
chain of callbacks (child filters, position propagation) and cost ~60% of loading a 1,000-rule
policy. Policy conditions are nearly always ``&&`` / ``||`` / ``!`` / comparisons over attribute
paths, string and number literals, lists and function calls: this module parses those by
recursive descent, about ten times faster, into the *same* tree — the same ``lark.Tree`` node
names and children, the same ``lark.Token`` types and values, the same positions (``meta``) —
so the type checker, the compilers and the analysis cannot tell the difference.

**Anything else is lark's.** :func:`parse_common` returns ``None`` for any text it is not sure
about: a syntax error (so that every error message comes from one place, lark's parser), escapes
or raw/bytes/triple-quoted strings, exponents, hex and unsigned numbers, ``Type{...}`` messages,
a leading-dot name, reserved words. ``tests/test_cel_fastparse.py`` holds it to lark's tree,
node by node and position by position, on hypothesis-generated texts.

Shapes of the grammar (``cel.lark``) it reproduces, since no rule there is inlined: every level
of precedence is a node even with one child (``expr → conditionalor → conditionaland → relation
→ addition → multiplication → unary → member → primary → literal``); left-recursive operators
nest to the left (``a < b`` is ``relation(relation_lt(relation(a)), addition(b))``); anonymous
punctuation is dropped from the children but counts for the positions; ``true`` and ``false``
are ``BOOL_LIT`` tokens (with their positions: see ``parse._bool_literal``).
"""

from __future__ import annotations

import bisect
import re
from typing import Any, Callable

from lark import Token, Tree
from lark.tree import Meta

# One token per match, tried in this order. A number, string or name that runs into something
# this parser does not handle (``1.`` ``1e3`` ``0x1`` ``1u`` ``r"..."`` ``"""``) ends in ``bad``.
_TOKEN = re.compile(r"""
    (?P<space>[\t\n\f\r ]+|//[^\n]*)
  | (?P<number>\d+(?:\.\d+)?)(?P<number_bad>[.\w])?
  | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')(?P<string_bad>["'])?
  | (?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?P<name_bad>["'])?
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>!+\-*/%?:.,()\[\]{}])
""", re.VERBOSE)

_RELATIONS = {"<": "relation_lt", "<=": "relation_le", ">": "relation_gt", ">=": "relation_ge",
              "==": "relation_eq", "!=": "relation_ne", "in": "relation_in"}
_ADDITIONS = {"+": "addition_add", "-": "addition_sub"}
_MULTIPLICATIONS = {"*": "multiplication_mul", "/": "multiplication_div", "%": "multiplication_mod"}
# Names that are not plain identifiers to cel-python's lexer, or that this parser leaves to lark.
_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while", "in", "true",
                       "false", "null"})

# A token: (kind, text, start, end); kind is "name", "number", "string" or the operator itself.
_Tok = tuple[str, str, int, int]


class _NotCommon(Exception):
    """The text is not in the common shapes (or not CEL): lark parses it."""


def parse_common(text: str) -> Tree | None:
    """lark's tree for ``text``, or ``None`` when lark has to parse it.

    >>> parse_common('device.trust == "managed"').data
    'expr'
    >>> parse_common('x == 1e3') is None
    True
    """
    try:
        parser = _Parser(text)
        tree = parser.expr()
        if parser.i != len(parser.tokens):
            return None
        return tree
    except (_NotCommon, RecursionError):
        return None


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        # Line starts, for (line, column) of an offset; one line is the common case.
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)] if "\n" in text else None

    # -- tokens and positions --------------------------------------------------------------

    def peek(self) -> str:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else ""

    def take(self) -> _Tok:
        if self.i >= len(self.tokens):
            raise _NotCommon
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str) -> _Tok:
        tok = self.take()
        if tok[0] != kind:
            raise _NotCommon
        return tok

    def where(self, offset: int) -> tuple[int, int]:
        if self.starts is None:
            return 1, offset + 1
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1

    def token_meta(self, start: int, end: int) -> Meta:
        meta = Meta()
        meta.empty = False
        meta.line, meta.column = self.where(start)
        meta.end_line, meta.end_column = self.where(end)
        meta.start_pos, meta.end_pos = start, end
        return meta

    def token(self, kind: str, tok: _Tok) -> Token:
        _, value, start, end = tok
        line, column = self.where(start)
        return Token(kind, value, start, line, column, line, column + end - start, end)

    # -- the grammar, one method per level of precedence ------------------------------------

    def expr(self) -> Tree:
        condition = self.conditionalor()
        if self.peek() != "?":
            return Tree("expr", [condition], condition.meta)
        self.take()
        then = self.conditionalor()
        self.expect(":")
        otherwise = self.expr()
        return Tree("expr", [condition, then, otherwise], _span(condition.meta, otherwise.meta))

    def conditionalor(self) -> Tree:
        right = self.conditionaland()
        node = Tree("conditionalor", [right], right.meta)
        while self.peek() == "||":
            self.take()
            right = self.conditionaland()
            node = Tree("conditionalor", [node, right], _span(node.meta, right.meta))
        return node

    def conditionaland(self) -> Tree:
        right = self.relation()
        node = Tree("conditionaland", [right], right.meta)
        while self.peek() == "&&":
            self.take()
            right = self.relation()
            node = Tree("conditionaland", [node, right], _span(node.meta, right.meta))
        return node

    def relation(self) -> Tree:
        return self._binary("relation", self.addition, _RELATIONS)

    def addition(self) -> Tree:
        return self._binary("addition", self.multiplication, _ADDITIONS)

    def multiplication(self) -> Tree:
        return self._binary("multiplication", self.unary, _MULTIPLICATIONS)

    def _binary(self, rule: str, operand: Callable[[], Tree], operators: dict[str, str]) -> Tree:
        """``rule: [rule_op] operand`` with ``rule_op: rule "op"`` (left-recursive)."""
        right = operand()
        node = Tree(rule, [right], right.meta)
        while True:
            kind = self.peek()
            if kind == "name" and self.tokens[self.i][1] == "in":
                kind = "in"
            name = operators.get(kind)
            if name is None:
                return node
            _, _, start, end = self.take()
            op = Tree(name, [node], _span(node.meta, self.token_meta(start, end)))
            right = operand()
            node = Tree(rule, [op, right], _span(op.meta, right.meta))

    def unary(self) -> Tree:
        kind = self.peek()
        if kind == "!" or (kind == "-" and not self._signed_number()):
            _, _, start, end = self.take()
            op: Tree = Tree("unary_not" if kind == "!" else "unary_neg", [], self.token_meta(start, end))
            operand = self.unary()
            return Tree("unary", [op, operand], _span(op.meta, operand.meta))
        member = self.member()
        return Tree("unary", [member], member.meta)

    def _signed_number(self) -> bool:
        """``-`` right before digits, where an operand starts: cel-python's lexer reads one
        number token with its sign (``-1`` is the literal -1, not the negation of 1)."""
        nxt = self.i + 1
        return (nxt < len(self.tokens) and self.tokens[nxt][0] == "number"
                and self.tokens[nxt][2] == self.tokens[self.i][3])

    def member(self) -> Tree:
        inner = self.primary()
        node = Tree("member", [inner], inner.meta)
        while True:
            kind = self.peek()
            if kind == ".":
                self.take()
                name = self.name()
                if self.peek() == "(":
                    self.take()
                    args = self.arguments(")")
                    close = self.expect(")")
                    inner = Tree("member_dot_arg", [node, self.token("IDENT", name), *args],
                                 _span(node.meta, self.token_meta(close[2], close[3])))
                else:
                    inner = Tree("member_dot", [node, self.token("IDENT", name)],
                                 _span(node.meta, self.token_meta(name[2], name[3])))
            elif kind == "[":
                self.take()
                index = self.expr()
                close = self.expect("]")
                inner = Tree("member_index", [node, index], _span(node.meta, self.token_meta(close[2], close[3])))
            else:  # `Type{field: value}` (member_object) included: lark's
                return node
            node = Tree("member", [inner], inner.meta)

    def name(self) -> _Tok:
        tok = self.expect("name")
        if tok[1] in _RESERVED:
            raise _NotCommon
        return tok

    def arguments(self, closer: str) -> list[Tree]:
        """``[exprlist]`` before ``closer``: no child at all when empty."""
        if self.peek() == closer:
            return []
        items = [self.expr()]
        while self.peek() == ",":
            self.take()
            items.append(self.expr())
        return [Tree("exprlist", items, _span(items[0].meta, items[-1].meta))]

    def primary(self) -> Tree:
        inner = self._primary()
        return Tree("primary", [inner], inner.meta)

    def _primary(self) -> Tree:
        kind = self.peek()
        if kind == "-":  # a signed number (see _signed_number)
            sign = self.take()
            digits = self.take()
            return self.literal(("number", "-" + digits[1], sign[2], digits[3]))
        tok = self.take()
        if kind in ("number", "string"):
            return self.literal(tok)
        if kind == "name":
            value = tok[1]
            if value in ("true", "false"):
                token = self.token("BOOL_LIT", tok)
                return Tree("literal", [token], _token_span(token))
            if value == "null":
                return self.literal(tok)
            if value in _RESERVED:
                raise _NotCommon
            if self.peek() == "(":
                self.take()
                args = self.arguments(")")
                close = self.expect(")")
                return Tree("ident_arg", [self.token("IDENT", tok), *args],
                            _span(self.token_meta(tok[2], tok[3]), self.token_meta(close[2], close[3])))
            ident = self.token("IDENT", tok)
            return Tree("ident", [ident], _token_span(ident))
        if kind == "(":
            inner = self.expr()
            close = self.expect(")")
            return Tree("paren_expr", [inner], _span(self.token_meta(tok[2], tok[3]), self.token_meta(close[2], close[3])))
        if kind == "[":
            args = self.arguments("]")
            close = self.expect("]")
            return Tree("list_lit", args, _span(self.token_meta(tok[2], tok[3]), self.token_meta(close[2], close[3])))
        if kind == "{":
            inits = self.map_inits()
            close = self.expect("}")
            return Tree("map_lit", inits, _span(self.token_meta(tok[2], tok[3]), self.token_meta(close[2], close[3])))
        raise _NotCommon  # a leading-dot name, an operator where an operand belongs, ...

    def map_inits(self) -> list[Tree]:
        if self.peek() == "}":
            return []
        items: list[Tree] = []
        while True:
            items.append(self.expr())
            self.expect(":")
            items.append(self.expr())
            if self.peek() != ",":
                return [Tree("mapinits", items, _span(items[0].meta, items[-1].meta))]
            self.take()

    def literal(self, tok: _Tok) -> Tree:
        kind, value = tok[0], tok[1]
        if kind == "number":
            kind = "FLOAT_LIT" if "." in value else "INT_LIT"
        elif kind == "string":
            kind = "STRING_LIT"
        else:
            kind = "NULL_LIT"
        token = self.token(kind, tok)
        return Tree("literal", [token], _token_span(token))


def _tokens(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    position, end = 0, len(text)
    match = _TOKEN.match
    while position < end:
        m = match(text, position)
        if m is None:
            raise _NotCommon  # a character lark will report (or a construct it parses)
        kind = m.lastgroup
        if kind is None or kind.endswith("_bad"):
            raise _NotCommon
        if kind != "space":
            value = m.group()
            tokens.append((value if kind == "op" else kind, value, position, m.end()))
        position = m.end()
    return tokens


def _span(first: Meta, last: Meta) -> Meta:
    """The position of a node: from its first child's start to its last child's end."""
    meta = Meta()
    meta.empty = False
    meta.line, meta.column, meta.start_pos = first.line, first.column, first.start_pos
    meta.end_line, meta.end_column, meta.end_pos = last.end_line, last.end_column, last.end_pos
    return meta


def _token_span(token: Token) -> Meta:
    """The position of a node of one token."""
    meta: Any = Meta()
    meta.empty = False
    meta.line, meta.column, meta.start_pos = token.line, token.column, token.start_pos
    meta.end_line, meta.end_column, meta.end_pos = token.end_line, token.end_column, token.end_pos
    return meta


__all__ = ["parse_common"]
