"""CEL conditions and factors as SMT terms, with CEL's errors as terms too.

Every sub-expression becomes a :class:`Sym`: its kind, its value as a z3 term, and ``err``,
the condition under which evaluating it raises (an absent attribute, a division by zero, an
int64 overflow, a timestamp leaving CEL's range). ``&&`` and ``||`` absorb errors where the
answer is known, exactly as :mod:`ttlpolicy.cel.native` evaluates them.

Supported: literals (int, double, string, bool, lists of them), attributes, ``has()``,
``== != < <= > >=`` on ints, doubles, timestamps and durations (``== !=`` on strings and bools),
``+ - * / %`` and unary ``-`` on ints (with CEL's overflow and division errors) and doubles
(IEEE 754), timestamp and duration arithmetic, ``&& || ! ?:``, ``in`` on list literals and
list attributes, ``size()`` of strings and lists, ``startsWith``/``endsWith``/``contains``,
and any sub-expression that reads no attribute (evaluated once by the native backend, so
``duration("72h")`` or ``timestamp("2026-01-01T00:00:00Z")`` are constants). Anything else —
macros (``exists``, ``all`` ...), ``matches``, indexing, maps, conversions of attributes,
ordering of strings — raises :class:`Unsupported` at the construct's line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import lark
import z3

from .symbols import DOUBLE, INT_MAX, INT_MIN, RNE, US, Unsupported

FALSE, TRUE = z3.BoolVal(False), z3.BoolVal(True)
_TS_MIN_US = (datetime(1, 1, 1).toordinal() - datetime(1970, 1, 1).toordinal()) * 86400 * US
_TS_MAX_US = (datetime(9999, 12, 31).toordinal() - datetime(1970, 1, 1).toordinal() + 1) * 86400 * US - 1
_DUR_MAX_US = INT_MAX // 1000  # CEL durations are int64 nanoseconds
_LINKS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                    "unary", "member", "primary", "paren_expr"})


@dataclass(frozen=True)
class Sym:
    """A CEL value: ``kind`` (bool, int, double, string, timestamp, duration, list, null),
    its term, and when evaluating it raises."""

    kind: str
    term: Any
    err: Any = FALSE


class UnknownName(Unsupported):
    """A name that is no declared attribute: a mistake in the expression, not a limit of the prover."""


# Looks up an attribute path: returns its Sym (err = "absent"), or None when undeclared.
Lookup = Callable[[tuple[str, ...]], "Sym | None"]
# Whether an attribute path has a value: a z3 Bool, or None when undeclared.
Presence = Callable[[tuple[str, ...]], Any]


def _pos(item: lark.Tree | lark.Token) -> tuple[int, int]:
    if isinstance(item, lark.Token):
        return item.line or 1, item.column or 1
    return getattr(item.meta, "line", 1), getattr(item.meta, "column", 1)


def unsupported(item: lark.Tree | lark.Token, message: str) -> Unsupported:
    return Unsupported(message, *_pos(item))


def _not(term: Any) -> Any:
    return FALSE if z3.is_true(term) else TRUE if z3.is_false(term) else z3.Not(term)


def _or(*terms: Any) -> Any:
    terms = tuple(t for t in terms if not z3.is_false(t))
    if any(z3.is_true(t) for t in terms):
        return TRUE
    return FALSE if not terms else terms[0] if len(terms) == 1 else z3.Or(*terms)


def _and(*terms: Any) -> Any:
    terms = tuple(t for t in terms if not z3.is_true(t))
    if any(z3.is_false(t) for t in terms):
        return FALSE
    return TRUE if not terms else terms[0] if len(terms) == 1 else z3.And(*terms)


def _int_range(term: Any) -> Any:
    return z3.Or(term < INT_MIN, term > INT_MAX)


class Translator:
    """Translates one parsed expression; ``lookup``/``presence`` resolve attribute paths."""

    def __init__(self, lookup: Lookup, presence: Presence):
        self.lookup, self.presence = lookup, presence

    def translate(self, tree: lark.Tree) -> Sym:
        return self.expr(tree)

    def expr(self, t: lark.Tree) -> Sym:
        while len(t.children) == 1 and t.data in _LINKS and isinstance(t.children[0], lark.Tree):
            t = t.children[0]
        if not _reads_attributes(t) and t.data not in ("literal", "list_lit"):
            return self.constant(t)
        method = getattr(self, "n_" + str(t.data), None)
        if method is None:
            raise unsupported(t, f"'{t.data}' is not modelled by the prover")
        result: Sym = method(t)
        return result

    # -- constants: evaluated once by the native backend ----------------------------------

    def constant(self, t: lark.Tree) -> Sym:
        from ..cel.native import UnsupportedExpression, compile_expression
        from ..cel.native_functions import CELEvalError

        try:
            value = compile_expression(t)({})
        except UnsupportedExpression as exc:
            raise Unsupported(exc.message, exc.line, exc.column) from None
        except CELEvalError:
            return Sym("error", FALSE, TRUE)
        return lift(value, t)

    def n_literal(self, t: lark.Tree) -> Sym:
        return self.constant(t)

    def n_list_lit(self, t: lark.Tree) -> Sym:
        if not t.children:
            return Sym("list", z3.Empty(z3.SeqSort(z3.StringSort())))
        raise unsupported(t, "a list built from attributes is not modelled by the prover")

    # -- logic ---------------------------------------------------------------------------

    def _flatten(self, t: lark.Tree, rule: str) -> list[Sym]:
        out: list[Sym] = []
        while t.data == rule and len(t.children) == 2:
            out.append(self._bool(t.children[1]))
            t = t.children[0]
        out.append(self._bool(t))
        out.reverse()
        return out

    def _bool(self, t: lark.Tree) -> Sym:
        s = self.expr(t)
        if s.kind == "error":
            return Sym("bool", FALSE, TRUE)
        if s.kind != "bool":
            raise unsupported(t, f"a {s.kind} where a bool is expected")
        return s

    def n_conditionaland(self, t: lark.Tree) -> Sym:
        parts = self._flatten(t, "conditionaland")
        decided = _or(*[_and(_not(p.err), _not(p.term)) for p in parts])
        return Sym("bool", _not(decided), _and(_not(decided), _or(*[p.err for p in parts])))

    def n_conditionalor(self, t: lark.Tree) -> Sym:
        parts = self._flatten(t, "conditionalor")
        decided = _or(*[_and(_not(p.err), p.term) for p in parts])
        return Sym("bool", decided, _and(_not(decided), _or(*[p.err for p in parts])))

    def n_expr(self, t: lark.Tree) -> Sym:
        cond = self._bool(t.children[0])
        yes, no = self.expr(t.children[1]), self.expr(t.children[2])
        if yes.kind != no.kind:
            raise unsupported(t, "the arms of ?: have different types")
        return Sym(yes.kind, z3.If(cond.term, yes.term, no.term),
                   _or(cond.err, z3.If(cond.term, yes.err, no.err)))

    def n_unary(self, t: lark.Tree) -> Sym:
        op, operand_tree = t.children
        if op.data == "unary_not":
            v = self._bool(operand_tree)
            return Sym("bool", _not(v.term), v.err)
        v = self.expr(operand_tree)
        if v.kind == "int":
            return Sym("int", -v.term, _or(v.err, v.term == INT_MIN))
        if v.kind == "double":
            return Sym("double", z3.fpNeg(v.term), v.err)
        if v.kind == "duration":
            return Sym("duration", -v.term, v.err)
        raise unsupported(t, f"unary minus on {v.kind}")

    # -- relations and arithmetic ---------------------------------------------------------

    def n_relation(self, t: lark.Tree) -> Sym:
        op_tree, right_tree = t.children
        op = str(op_tree.data)
        left = self.expr(op_tree.children[0])
        if op == "relation_in":
            return self._in(t, left, right_tree)
        right = self.expr(right_tree)
        err = _or(left.err, right.err)
        if left.kind != right.kind:
            raise unsupported(t, f"comparing {left.kind} with {right.kind}")
        a, b, kind = left.term, right.term, left.kind
        if op in ("relation_eq", "relation_ne"):
            same = z3.fpEQ(a, b) if kind == "double" else a == b
            if kind in ("list", "null"):
                raise unsupported(t, f"equality of {kind} values")
            return Sym("bool", same if op == "relation_eq" else _not(same), err)
        if kind == "double":
            fn = {"relation_lt": z3.fpLT, "relation_le": z3.fpLEQ, "relation_gt": z3.fpGT,
                  "relation_ge": z3.fpGEQ}[op]
            return Sym("bool", fn(a, b), err)
        if kind not in ("int", "timestamp", "duration"):
            raise unsupported(t, f"ordering of {kind} values")
        result = {"relation_lt": a < b, "relation_le": a <= b, "relation_gt": a > b, "relation_ge": a >= b}[op]
        return Sym("bool", result, err)

    def _in(self, t: lark.Tree, left: Sym, right_tree: lark.Tree) -> Sym:
        inner = right_tree
        while len(inner.children) == 1 and inner.data in _LINKS and isinstance(inner.children[0], lark.Tree):
            inner = inner.children[0]
        if inner.data == "list_lit":
            items = [self.expr(c) for c in inner.children[0].children] if inner.children else []
            if any(i.kind != left.kind for i in items):
                raise unsupported(t, "'in' with items of another type")
            if left.kind in ("list", "null"):
                raise unsupported(t, f"'in' on {left.kind} values")
            same = [z3.fpEQ(left.term, i.term) if left.kind == "double" else left.term == i.term for i in items]
            return Sym("bool", _or(*same), _or(left.err, *[i.err for i in items]))
        right = self.expr(right_tree)
        if right.kind == "names":  # decision.matched / decision.errors in an invariant
            if left.kind != "string" or not z3.is_string_value(left.term):
                raise unsupported(t, "only a rule name written out can be looked up in a list of rules")
            members, _ = right.term
            return Sym("bool", members.get(left.term.as_string(), FALSE), left.err)
        if right.kind == "list" and left.kind == "string":
            return Sym("bool", z3.Contains(right.term, z3.Unit(left.term)), _or(left.err, right.err))
        raise unsupported(t, f"'in' on a {right.kind}")

    def n_addition(self, t: lark.Tree) -> Sym:
        op_tree, right_tree = t.children
        left, right = self.expr(op_tree.children[0]), self.expr(right_tree)
        err = _or(left.err, right.err)
        kinds = (left.kind, right.kind)
        add = op_tree.data == "addition_add"
        a, b = left.term, right.term
        if kinds == ("int", "int"):
            r = a + b if add else a - b
            return Sym("int", r, _or(err, _int_range(r)))
        if kinds == ("double", "double"):
            return Sym("double", z3.fpAdd(RNE, a, b) if add else z3.fpSub(RNE, a, b), err)
        if kinds == ("string", "string") and add:
            return Sym("string", z3.Concat(a, b), err)
        if kinds == ("duration", "duration"):
            r = a + b if add else a - b
            return Sym("duration", r, _or(err, r > _DUR_MAX_US, r < -_DUR_MAX_US))
        if kinds == ("timestamp", "duration") or (kinds == ("duration", "timestamp") and add):
            r = a + b if add else a - b
            return Sym("timestamp", r, _or(err, r < _TS_MIN_US, r > _TS_MAX_US))
        if kinds == ("timestamp", "timestamp") and not add:
            r = a - b
            return Sym("duration", r, _or(err, r > _DUR_MAX_US, r < -_DUR_MAX_US))
        raise unsupported(t, f"{'+' if add else '-'} on {left.kind} and {right.kind}")

    def n_multiplication(self, t: lark.Tree) -> Sym:
        op_tree, right_tree = t.children
        left, right = self.expr(op_tree.children[0]), self.expr(right_tree)
        err = _or(left.err, right.err)
        op = op_tree.data
        a, b = left.term, right.term
        if (left.kind, right.kind) == ("double", "double"):
            if op == "multiplication_mod":
                raise unsupported(t, "% on doubles")
            fn = z3.fpMul if op == "multiplication_mul" else z3.fpDiv
            return Sym("double", fn(RNE, a, b), err)
        if (left.kind, right.kind) != ("int", "int"):
            raise unsupported(t, f"arithmetic on {left.kind} and {right.kind}")
        if op == "multiplication_mul":
            r = a * b
            return Sym("int", r, _or(err, _int_range(r)))
        magnitude_a, magnitude_b = z3.If(a >= 0, a, -a), z3.If(b >= 0, b, -b)
        if op == "multiplication_div":
            q = magnitude_a / magnitude_b  # both non-negative: z3's division is then truncation
            r = z3.If((a < 0) != (b < 0), -q, q)
            return Sym("int", r, _or(err, b == 0, _int_range(r)))
        rem = magnitude_a % magnitude_b
        return Sym("int", z3.If(a < 0, -rem, rem), _or(err, b == 0, z3.And(b == -1, a == INT_MIN)))

    # -- attributes, has() and calls -------------------------------------------------------

    def _path(self, t: lark.Tree) -> tuple[str, ...] | None:
        while len(t.children) == 1 and t.data in _LINKS and isinstance(t.children[0], lark.Tree):
            t = t.children[0]
        if t.data == "ident":
            return (str(t.children[0]),)
        if t.data == "member_dot":
            base = self._path(t.children[0])
            return None if base is None else base + (str(t.children[1]),)
        return None

    def _attribute(self, t: lark.Tree) -> Sym:
        path = self._path(t)
        try:
            found = self.lookup(path) if path is not None else None
        except Unsupported as exc:
            raise unsupported(t, exc.message) from None
        if found is None:
            if path is None:
                raise unsupported(t, f"'{t.data}' is not modelled by the prover")
            line, column = _pos(t)
            raise UnknownName(f"'{'.'.join(path)}' is not a declared attribute", line, column)
        return found

    def n_ident(self, t: lark.Tree) -> Sym:
        return self._attribute(t)

    def n_member_dot(self, t: lark.Tree) -> Sym:
        return self._attribute(t)

    def n_ident_arg(self, t: lark.Tree) -> Sym:
        name_tok = t.children[0]
        name = str(name_tok)
        args = list(t.children[1].children) if len(t.children) > 1 else []
        if name == "has" and len(args) == 1:
            path = self._path(args[0])
            present = self.presence(path) if path is not None and len(path) > 1 else None
            if present is None:
                raise unsupported(t, "has() of something other than a declared attribute")
            return Sym("bool", present)
        if name == "size" and len(args) == 1:
            return self._size(t, self.expr(args[0]))
        raise unsupported(name_tok, f"{name}() of an attribute is not modelled by the prover")

    def _size(self, t: lark.Tree, v: Sym) -> Sym:
        if v.kind == "names":
            return Sym("int", v.term[1], v.err)
        if v.kind in ("string", "list"):
            return Sym("int", z3.Length(v.term), v.err)
        raise unsupported(t, f"size() of {v.kind}")

    def n_member_dot_arg(self, t: lark.Tree) -> Sym:
        target_tree, name_tok = t.children[0], t.children[1]
        name = str(name_tok)
        args = list(t.children[2].children) if len(t.children) > 2 else []
        if name == "size" and not args:
            return self._size(t, self.expr(target_tree))
        if name in ("startsWith", "endsWith", "contains") and len(args) == 1:
            target, arg = self.expr(target_tree), self.expr(args[0])
            if (target.kind, arg.kind) != ("string", "string"):
                raise unsupported(name_tok, f"{name}() on {target.kind}")
            fn = {"startsWith": z3.PrefixOf, "endsWith": z3.SuffixOf}.get(name)
            term = fn(arg.term, target.term) if fn else z3.Contains(target.term, arg.term)
            return Sym("bool", term, _or(target.err, arg.err))
        raise unsupported(name_tok, f"{name}() is not modelled by the prover")


def _reads_attributes(t: lark.Tree | lark.Token) -> bool:
    if isinstance(t, lark.Token):
        return False
    if t.data == "ident":
        return True
    return any(_reads_attributes(c) for c in t.children)


def lift(value: Any, where: lark.Tree | lark.Token) -> Sym:
    """A constant Python value (what the native backend computes) as a Sym."""
    from ..cel.native_functions import Duration, Timestamp, Uint

    if isinstance(value, bool):
        return Sym("bool", z3.BoolVal(value))
    if isinstance(value, Uint):
        raise unsupported(where, "unsigned integers are not modelled by the prover")
    if isinstance(value, int):
        return Sym("int", z3.IntVal(value))
    if isinstance(value, float):
        return Sym("double", z3.FPVal(value, DOUBLE))
    if isinstance(value, str):
        return Sym("string", z3.StringVal(_in_alphabet(value, where)))
    ns = None
    if isinstance(value, Duration):
        ns, kind = value.ns, "duration"
    elif isinstance(value, timedelta):
        ns, kind = value // timedelta(microseconds=1) * 1000, "duration"
    elif isinstance(value, Timestamp):
        ns, kind = value.ns, "timestamp"
    elif isinstance(value, datetime):
        epoch = datetime(1970, 1, 1, tzinfo=value.tzinfo)
        ns, kind = (value - epoch) // timedelta(microseconds=1) * 1000, "timestamp"
    if ns is not None:
        if ns % 1000:
            raise unsupported(where, "a time below a microsecond is not modelled by the prover")
        return Sym(kind, z3.IntVal(ns // 1000))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        seq: Any = z3.Empty(z3.SeqSort(z3.StringSort()))
        for item in value:
            seq = z3.Concat(seq, z3.Unit(z3.StringVal(_in_alphabet(item, where))))
        return Sym("list", seq)
    raise unsupported(where, f"a constant {type(value).__name__} is not modelled by the prover")


# z3's strings hold the code points up to U+2FFFF. A request's strings may hold higher ones, but
# conditions only compare them with constants (==, in, startsWith, size ...), which cannot tell
# two characters apart that no constant contains: a proof over z3's alphabet holds for every
# string as long as no constant holds a character beyond it. Such a constant is refused.
MAX_CODE_POINT = 0x2FFFF


def _in_alphabet(text: str, where: lark.Tree | lark.Token) -> str:
    if any(ord(c) > MAX_CODE_POINT for c in text):
        raise unsupported(where, "a character beyond U+2FFFF in a string is not modelled by the prover")
    return text


__all__ = ["MAX_CODE_POINT", "Sym", "Translator", "UnknownName", "lift", "unsupported"]
