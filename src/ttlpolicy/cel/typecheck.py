"""Static type checking of CEL expressions against the declared context attributes.

cel-python checks types only when an expression runs; a policy author wants to know at
lint time that ``device.trust == "manged"`` can never be true, that ``user.risk > "high"``
compares a number with a string, or that a ``when`` is not boolean. This checker walks the
same tree the evaluator compiles and infers a type for every node. It is deliberately a
little stricter than CEL at run time (e.g. it refuses ``2 * user.risk``, int times double,
which CEL rejects with "no such overload" anyway), and it never accepts what would fail.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import lark

from ..model import Attribute
from .parse import CelIssue, position
from .subset import LEFT_OUT_FUNCTIONS, TYPE_NAMES


@dataclass(frozen=True, slots=True)
class T:
    """A CEL type; ``values`` is the enum of a string attribute, ``attr`` its name."""

    kind: str  # bool int uint double string bytes null timestamp duration list map dyn namespace
    elem: "T | None" = None
    values: tuple[str, ...] | None = None
    attr: str = ""

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.elem or DYN})"
        if self.kind == "map":
            return "map"
        return self.kind


DYN, BOOL, INT, UINT, DOUBLE = T("dyn"), T("bool"), T("int"), T("uint"), T("double")
STRING, BYTES, NULL, TIMESTAMP, DURATION = T("string"), T("bytes"), T("null"), T("timestamp"), T("duration")
NUMERIC = {"int", "uint", "double"}
_ATTRIBUTE_TYPES = {"string": STRING, "int": INT, "double": DOUBLE, "bool": BOOL, "timestamp": TIMESTAMP}
_TIMESTAMP_GETTERS = {"getHours", "getMinutes", "getSeconds", "getMilliseconds", "getDayOfWeek",
                      "getDayOfMonth", "getDate", "getDayOfYear", "getMonth", "getFullYear"}
_STRING_METHODS = {"startsWith", "endsWith", "contains", "matches"}
_CONVERSIONS = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bool": BOOL,
                "timestamp": TIMESTAMP, "duration": DURATION, "bytes": BYTES}
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_UNSUPPORTED = {"member_object": "message construction (Type{field: value})", "dot_ident": "a leading-dot name",
                "dot_ident_arg": "a leading-dot function call"}


def attribute_type(attribute: Attribute) -> T:
    if attribute.type == "list":
        return T("list", T("string", values=attribute.values))
    base = _ATTRIBUTE_TYPES[attribute.type]
    return T(base.kind, values=attribute.values if attribute.type == "string" else None)


# Single-child links of the grammar. A set, not a tuple: ``Tree.data`` is a lark Token whose
# ``__eq__`` is Python code, so a tuple scan cost ~10 such calls per node (a third of lint time).
_LINKS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                    "unary", "member", "primary"})


@dataclass
class CheckResult:
    type: T
    issues: list[CelIssue] = field(default_factory=list)
    attributes: set[str] = field(default_factory=set)  # attributes the expression reads
    warnings: list[CelIssue] = field(default_factory=list)  # legal, but can fail at run time


def check(tree: lark.Tree, attributes: Mapping[str, Attribute]) -> CheckResult:
    """Infer the type of ``tree`` and collect every type error in it.

    >>> from ttlpolicy.vocabulary import BUILTIN
    >>> from ttlpolicy.cel.parse import parse
    >>> [i.message for i in check(parse('device.trust == "manged"'), BUILTIN).issues]
    ['"manged" is not a value of device.trust (allowed: managed, compliant, known, unmanaged)']
    """
    checker = _Checker(attributes)
    result_type = checker.visit(tree, {})
    return CheckResult(result_type, checker.issues, checker.used, checker.warnings)


class _Checker:
    def __init__(self, attributes: Mapping[str, Attribute]):
        self.attributes = attributes
        self.namespaces = {name.split(".", 1)[0] for name in attributes if "." in name}
        self.issues: list[CelIssue] = []
        self.warnings: list[CelIssue] = []
        self.used: set[str] = set()
        self.negated: set[int] = set()  # ids of integer literal tokens right under a unary minus

    # -- helpers -------------------------------------------------------------------------
    def error(self, node: lark.Tree | lark.Token, code: str, message: str) -> T:
        line, column = position(node)
        self.issues.append(CelIssue(code, message, line, column))
        return DYN

    def attribute(self, node: lark.Tree, name: str) -> T:
        attribute = self.attributes.get(name)
        if attribute is None:
            candidates = list(self.attributes) + sorted(self.namespaces)
            close = difflib.get_close_matches(name, candidates, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return self.error(node, "cel-unknown-attribute", f"unknown attribute {name}{hint}")
        self.used.add(name)
        return _named(attribute_type(attribute), name)

    # -- dispatch ------------------------------------------------------------------------
    def visit(self, node: lark.Tree | lark.Token, scope: dict[str, T]) -> T:
        if isinstance(node, lark.Token):  # pragma: no cover - tokens are handled by parents
            return DYN
        children = [c for c in node.children if isinstance(c, (lark.Tree, lark.Token))]
        kind = node.data
        if len(children) == 1 and kind in _LINKS:
            return self.visit(children[0], scope)
        method = getattr(self, f"v_{kind}", None)
        if method is None:
            what = _UNSUPPORTED.get(kind, kind)
            return self.error(node, "cel-unsupported", f"{what} is not supported in ttlpolicy conditions")
        return method(node, children, scope)

    def v_expr(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        cond, then, other = (self.visit(c, scope) for c in ch)
        if cond.kind not in ("bool", "dyn"):
            self.error(ch[0], "cel-type-mismatch", f"the condition of ?: must be bool, not {cond}")
        return then if _same(then, other) else DYN

    def v_conditionalor(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        return self._logic(ch, scope, "||")

    def v_conditionaland(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        return self._logic(ch, scope, "&&")

    def _logic(self, ch: list, scope: dict[str, T], op: str) -> T:
        for child in ch:
            t = self.visit(child, scope)
            if t.kind not in ("bool", "dyn"):
                self.error(child, "cel-type-mismatch", f"operands of {op} must be bool, not {t}")
        return BOOL

    def v_relation(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        op_node, right_node = ch
        op = op_node.data.removeprefix("relation_")
        left = self.visit(op_node.children[0], scope)
        right = self.visit(right_node, scope)
        if op == "in":
            return self._in(op_node.children[0], left, right_node, right)
        if op in ("eq", "ne"):
            if not _comparable(left, right):
                self.error(op_node, "cel-type-mismatch",
                           f"cannot compare {_describe(left)} with {_describe(right)}{_mixed_hint(left, right)}"
                           f"{_duration_hint(left, right, op_node.children[0], right_node)}")
            self._enum_literal(left, right_node)
            self._enum_literal(right, op_node.children[0])
            self._range(op_node, op, left, right_node, right)
            self._range(op_node, op, right, op_node.children[0], left)
            return BOOL
        ordered = left.kind == right.kind and left.kind in NUMERIC | {"string", "timestamp", "duration", "bytes",
                                                                        "bool"}
        if not ordered and "dyn" not in (left.kind, right.kind):
            symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
            self.error(op_node, "cel-type-mismatch",
                       f"cannot order {_describe(left)} {symbol} {_describe(right)}{_mixed_hint(left, right)}"
                       f"{_duration_hint(left, right, op_node.children[0], right_node)}")
        self._range(op_node, op, left, right_node, right)
        self._range(op_node, _FLIPPED[op], right, op_node.children[0], left)
        return BOOL

    def _range(self, op_node: lark.Tree, op: str, left: T, right_node: lark.Tree, right: T) -> None:
        """``time.hour >= 24``, ``user.risk > 1.0``: a comparison the declared range never satisfies."""
        attribute = self.attributes.get(left.attr) if left.attr else None
        literal = _number_literal(right_node)
        if (attribute is None or literal is None or left.kind not in NUMERIC or right.kind != left.kind
                or abs(literal) > 2**63):  # an out-of-range literal has its own error
            return
        lo, hi = attribute.min, attribute.max
        if lo is None and hi is None:
            return
        if _never(op, literal, lo, hi, attribute.type == "int"):
            symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            bounds = f"{_num(lo) if lo is not None else '…'} … {_num(hi) if hi is not None else '…'}"
            self.error(right_node, "cel-impossible-comparison",
                       f"{left.attr} {symbol} {_number_text(right_node)} is never true: {left.attr} is declared in {bounds}; "
                       "compare with a value inside that range")

    def _in(self, left_node: lark.Tree, left: T, right_node: lark.Tree, right: T) -> T:
        if right.kind == "list":
            if right.elem and not _comparable(left, right.elem):
                self.error(left_node, "cel-type-mismatch", f"{_describe(left)} can never be in {right}")
            for item in _list_items(right_node):
                self._enum_literal(left, item)
                if right.elem is not None:
                    self._range(item, "eq", left, item, right.elem)  # time.hour in [22, 24]
            if left.kind == "string" and right.elem and right.elem.values:
                self._enum_literal(right.elem, left_node)
        elif right.kind == "map":
            pass
        elif right.kind != "dyn":
            self.error(right_node, "cel-type-mismatch", f"the right side of 'in' must be a list or map, not {right}")
        return BOOL

    def _enum_literal(self, attribute: T, literal_node: lark.Tree | lark.Token) -> None:
        """``device.trust == "manged"``: a string literal that is not an allowed value. The
        literal may be one arm of a ternary (``x == (c ? "a" : "b")``) or in parentheses."""
        if not attribute.values:
            return
        for node, literal in _string_literals(literal_node):
            self._enum_value(attribute, node, literal)

    def _enum_value(self, attribute: T, literal_node: lark.Tree | lark.Token, literal: str) -> None:
        assert attribute.values is not None
        if literal not in attribute.values:
            close = ([v for v in attribute.values if v.lower() == literal.lower()]
                     or difflib.get_close_matches(literal, attribute.values, n=1))
            hint = f"; did you mean {close[0]!r}?" if close else ""
            name = attribute.attr or "the attribute"
            code = {"tier": "unknown-tier", "location.zone": "unknown-zone"}.get(name, "cel-enum-value")
            self.error(literal_node, code,
                       f'"{literal}" is not a value of {name} (allowed: {", ".join(attribute.values)}){hint}')

    def v_addition(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        op_node, right_node = ch
        left, right = self.visit(op_node.children[0], scope), self.visit(right_node, scope)
        op = "+" if op_node.data == "addition_add" else "-"
        if "dyn" in (left.kind, right.kind):
            return DYN
        if left.kind == right.kind and left.kind in NUMERIC | {"duration"}:
            return left
        if op == "+" and left.kind == right.kind and left.kind in ("string", "bytes", "list"):
            return left
        pairs = {("timestamp", "duration", "+"): TIMESTAMP, ("duration", "timestamp", "+"): TIMESTAMP,
                 ("timestamp", "duration", "-"): TIMESTAMP, ("timestamp", "timestamp", "-"): DURATION}
        if (left.kind, right.kind, op) in pairs:
            if (left.kind, right.kind) == ("timestamp", "timestamp") and _reads_a_name(node):
                self._difference_of_instants(op_node, op_node.children[0], right_node)
            return pairs[(left.kind, right.kind, op)]
        hint = "".join(_duration_hint(left, right, op_node.children[0], right_node, "to add or subtract a duration",
                                      other) for other in ("timestamp", "duration"))
        return self.error(op_node, "cel-type-mismatch", f"no operator {left} {op} {right}{_mixed_hint(left, right)}{hint}")

    def _difference_of_instants(self, op_node: lark.Tree, left: lark.Tree, right: lark.Tree) -> None:
        """``time.now - user.auth_time``: two instants the context accepts (1970 to 9000) can lie
        further apart than a duration reaches (about 292 years); the rule then fails with an error."""
        a, b = _dotted_name(left) or "a", _dotted_name(right) or "b"
        line, column = position(op_node)
        example = 'duration("72h")'
        self.warnings.append(CelIssue(
            "cel-duration-overflow",
            f"the difference of two instants leaves CEL's duration range (about 292 years) for instants the "
            f"context accepts, and the rule then fails with an error: compare the instants instead, e.g. "
            f"{b} < {a} - {example} rather than {a} - {b} > {example}", line, column))

    def v_multiplication(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        op_node, right_node = ch
        left, right = self.visit(op_node.children[0], scope), self.visit(right_node, scope)
        op = {"multiplication_mul": "*", "multiplication_div": "/", "multiplication_mod": "%"}[op_node.data]
        if "dyn" in (left.kind, right.kind):
            return DYN
        if left.kind == right.kind and left.kind in NUMERIC and not (op == "%" and left.kind == "double"):
            return left
        return self._arith_error(op_node, left, op, right)

    def _arith_error(self, node: lark.Tree, left: T, op: str, right: T) -> T:
        return self.error(node, "cel-type-mismatch", f"no operator {left} {op} {right}{_mixed_hint(left, right)}")

    def v_unary(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        op_node, operand_node = ch
        inner = _unwrap(operand_node)
        if op_node.data == "unary_neg" and isinstance(inner, lark.Tree) and inner.data == "literal":
            self.negated.add(id(inner.children[0]))
        operand = self.visit(operand_node, scope)
        if op_node.data == "unary_not":
            if operand.kind not in ("bool", "dyn"):
                self.error(operand_node, "cel-type-mismatch", f"operand of ! must be bool, not {operand}")
            return BOOL
        if operand.kind not in ("int", "double", "duration", "dyn"):
            self.error(operand_node, "cel-type-mismatch", f"cannot negate {operand}")
        return operand

    def v_member_dot(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        target_node, name = ch
        target = self.visit(target_node, scope)
        if target.kind == "namespace":
            return self.attribute(node, f"{target.attr}.{name.value}")
        if target.kind in ("map", "dyn"):
            return DYN
        return self.error(name, "cel-type-mismatch", f"{target} has no field {name.value!r}")

    def v_ident(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        name = ch[0].value
        if name in scope:
            return scope[name]
        if name in self.namespaces and name not in self.attributes:
            return T("namespace", attr=name)
        if name in TYPE_NAMES and name not in self.attributes:
            return self.error(node, "cel-unsupported", TYPE_NAMES[name])
        return self.attribute(node, name)

    def v_literal(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        kind = ch[0].type
        if kind in ("INT_LIT", "UINT_LIT"):
            self._integer_range(ch[0], negated=id(ch[0]) in self.negated)
        return {"INT_LIT": INT, "UINT_LIT": UINT, "FLOAT_LIT": DOUBLE, "STRING_LIT": STRING,
                "MLSTRING_LIT": STRING, "BYTES_LIT": BYTES, "BOOL_LIT": BOOL, "NULL_LIT": NULL}.get(kind, DYN)

    def _integer_range(self, token: lark.Token, negated: bool) -> None:
        """``99999999999999999999``: CEL integers are 64 bits; such a literal errors at every run."""
        text = token.value.rstrip("uU")
        try:
            value = int(text, 16) if text.lower().startswith(("0x", "-0x")) else int(text)
        except ValueError:  # pragma: no cover - the grammar only lets digits through
            return
        unsigned = token.type == "UINT_LIT"
        # The minus of a negative literal is a separate unary node: -9223372036854775808 is an int.
        top = 2**64 - 1 if unsigned else 2**63 - 1 + negated
        if value > top:
            kind = "uint (0 … 2^64-1)" if unsigned else "int (-2^63 … 2^63-1)"
            self.error(token, "cel-literal-range", f"{token.value} does not fit a 64-bit {kind}; every evaluation "
                       "of it would fail: use a smaller number (or a double, e.g. 1e20)")

    def v_paren_expr(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        return self.visit(ch[0], scope)

    def v_list_lit(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        items = [self.visit(c, scope) for c in (ch[0].children if ch else [])]
        elem = items[0] if items and all(_same(items[0], t) for t in items) else DYN
        return T("list", T(elem.kind, elem.elem))

    def v_map_lit(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        for child in ch[0].children if ch else []:
            self.visit(child, scope)
        return T("map")

    def v_member_index(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        target, index = self.visit(ch[0], scope), self.visit(ch[1], scope)
        if target.kind == "list":
            if index.kind not in ("int", "uint", "dyn"):
                self.error(ch[1], "cel-type-mismatch", f"a list index must be int, not {index}")
            return target.elem or DYN
        if target.kind in ("map", "dyn"):
            return DYN
        return self.error(ch[1], "cel-type-mismatch", f"cannot index {target}")

    def v_ident_arg(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        name = ch[0].value
        args = ch[1].children if len(ch) > 1 else []
        if name == "has":
            if len(args) != 1 or _unwrap(args[0]).data != "member_dot":
                return self.error(node, "cel-type-mismatch", "has() takes one field selection, e.g. has(user.auth_time)")
            self.visit(args[0], scope)
            return BOOL
        types = [self.visit(a, scope) for a in args]
        if name == "size" and len(types) == 1:
            return self._size(node, types[0])
        if name in _CONVERSIONS and len(types) == 1:
            return _CONVERSIONS[name]
        if name == "matches" and len(types) == 2:
            return BOOL
        if name in LEFT_OUT_FUNCTIONS:
            return self.error(ch[0], "cel-unsupported", LEFT_OUT_FUNCTIONS[name])
        known = sorted({*_CONVERSIONS, "size", "has", "matches"})
        close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}()?" if close else ""
        return self.error(ch[0], "cel-unknown-function",
                          f"unknown function {name}() with {len(types)} argument(s){hint}")

    def _size(self, node: lark.Tree, t: T) -> T:
        if t.kind not in ("string", "bytes", "list", "map", "dyn"):
            self.error(node, "cel-type-mismatch", f"size() of {t}")
        return INT

    def v_member_dot_arg(self, node: lark.Tree, ch: list, scope: dict[str, T]) -> T:
        target_node, name_token = ch[0], ch[1]
        args = ch[2].children if len(ch) > 2 else []
        name = name_token.value
        target = self.visit(target_node, scope)
        if name in _MACROS:
            result = self._macro(node, name, target, args, scope)
            self._macro_literals(target_node, args)
            return result
        if name not in _STRING_METHODS | _TIMESTAMP_GETTERS | {"size"}:
            return self.error(name_token, "cel-unknown-function", f"unknown method {name}(){_suggest_method(name)}")
        types = [self.visit(a, scope) for a in args]
        if name in _STRING_METHODS:
            if target.kind not in ("string", "dyn"):
                return self.error(name_token, "cel-type-mismatch", f"{name}() is a string method, not one of {target}")
            if len(types) != 1 or types[0].kind not in ("string", "dyn"):
                return self.error(name_token, "cel-type-mismatch", f"{name}() takes one string argument")
            return BOOL
        if name == "size" and not types:
            return self._size(node, target)
        if name in _TIMESTAMP_GETTERS:
            if target.kind not in ("timestamp", "duration", "dyn"):
                return self.error(name_token, "cel-type-mismatch", f"{name}() needs a timestamp, not {target}")
            return INT
        raise AssertionError(name)  # pragma: no cover - every known method is handled above

    def _macro(self, node: lark.Tree, name: str, target: T, args: list, scope: dict[str, T]) -> T:
        if len(args) != 2 or _unwrap(args[0]).data != "ident":
            return self.error(node, "cel-type-mismatch", f"{name}() takes a variable name and an expression")
        var_token = _unwrap(args[0]).children[0]
        assert isinstance(var_token, lark.Token)  # cel.lark: ident : IDENT
        var = var_token.value
        if target.kind == "list":
            elem = target.elem or DYN
        elif target.kind in ("map", "dyn"):
            elem = DYN
        else:
            return self.error(node, "cel-type-mismatch", f"{name}() needs a list or map, not {target}")
        body = self.visit(args[1], {**scope, var: elem})
        if name in ("all", "exists", "exists_one", "filter") and body.kind not in ("bool", "dyn"):
            self.error(args[1], "cel-type-mismatch", f"the predicate of {name}() must be bool, not {body}")
        if name == "map":
            return T("list", T(body.kind, body.elem))
        if name == "filter":
            return T("list", elem)
        return BOOL


    def _macro_literals(self, target_node: lark.Tree, args: list) -> None:
        """``["managed", "complaint"].exists(t, device.trust == t)``: the list's string literals
        are compared with an enum attribute through the variable, so each must be a value of it."""
        literals = [found for item in _list_items(target_node) for found in _string_literals(item)]
        if not literals or len(args) != 2 or _unwrap(args[0]).data != "ident":
            return
        var = _unwrap(args[0]).children[0]
        compared: dict[str, None] = {}
        for relation in args[1].iter_subtrees_topdown():
            if relation.data != "relation" or len(relation.children) != 2:
                continue
            op_node, right = relation.children
            if not isinstance(op_node, lark.Tree) or op_node.data not in ("relation_eq", "relation_ne"):
                continue
            left = op_node.children[0]
            for a, b in ((left, right), (right, left)):
                if _dotted_name(a) == getattr(var, "value", None) and _dotted_name(b):
                    compared[str(_dotted_name(b))] = None
        for name in compared:
            attribute = self.attributes.get(name)
            if attribute is not None and attribute.values and attribute.type == "string":
                enum = T("string", values=attribute.values, attr=name)
                for node, literal in literals:
                    self._enum_value(enum, node, literal)


def _dotted_name(node: lark.Tree | lark.Token) -> str | None:
    """``device.trust`` for that selection, ``t`` for a variable; ``None`` for anything else."""
    node = _unwrap(node)
    parts: list[str] = []
    while isinstance(node, lark.Tree) and node.data == "member_dot":
        parts.insert(0, str(getattr(node.children[1], "value", "")))
        node = _unwrap(node.children[0])
    if isinstance(node, lark.Tree) and node.data == "ident":
        parts.insert(0, str(getattr(node.children[0], "value", "")))
        return ".".join(parts)
    return None


def _reads_a_name(node: lark.Tree) -> bool:
    """Whether ``node`` reads an attribute or a variable (so its value is not known at lint time)."""
    return any(sub.data == "ident" for sub in node.iter_subtrees())


def _suggest_method(name: str) -> str:
    """``startswith`` → ``startsWith``: CEL names are case-sensitive, so try case-insensitively first."""
    known = sorted(_STRING_METHODS | _TIMESTAMP_GETTERS | _MACROS | {"size"})
    exact = [k for k in known if k.lower() == name.lower()]
    close = exact or difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}()?" if close else ""


def _mixed_hint(left: T, right: T) -> str:
    if {left.kind, right.kind} == {"int", "double"}:
        return " (CEL does not mix int and double: write 2.0 instead of 2, or use double())"
    if {left.kind, right.kind} == {"int", "uint"}:
        return " (CEL does not mix int and uint: write 2u, or use int())"
    return ""


def _named(t: T, name: str) -> T:
    return T(t.kind, t.elem, t.values, name)


def _describe(t: T) -> str:
    return f"{t.attr} ({t})" if t.attr else str(t)


def _same(a: T, b: T) -> bool:
    return a.kind == b.kind and (a.kind != "list" or (a.elem is None or b.elem is None or a.elem.kind == b.elem.kind))


def _comparable(a: T, b: T) -> bool:
    if "dyn" in (a.kind, b.kind) or "null" in (a.kind, b.kind):
        return True
    if a.kind == "list" and b.kind == "list":
        return a.elem is None or b.elem is None or _comparable(a.elem, b.elem)
    return a.kind == b.kind


def _unwrap(node: lark.Tree | lark.Token) -> lark.Tree:
    """Skip the single-child chain expr -> ... -> primary down to the interesting node (a list
    literal stays one: its only child is the item list, and a one-item list is still a list)."""
    while (isinstance(node, lark.Tree) and node.data != "list_lit" and len(node.children) == 1
           and isinstance(node.children[0], lark.Tree)):
        node = node.children[0]
    return node  # type: ignore[return-value]


def _string_literal(node: lark.Tree | lark.Token) -> str | None:
    node = _unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "literal":
        token = node.children[0]
        if isinstance(token, lark.Token) and token.type == "STRING_LIT" and token.value[:1] in "\"'":
            body = token.value[1:-1]
            return body if "\\" not in body else None
    return None


def _string_literals(node: lark.Tree | lark.Token) -> Iterable[tuple[lark.Tree, str]]:
    """The string literals an expression can evaluate to, with their nodes: the literal itself,
    or each arm of a ternary, through parentheses."""
    node = _unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "paren_expr" and node.children:
        yield from _string_literals(node.children[0])
    elif isinstance(node, lark.Tree) and node.data == "expr" and len(node.children) == 3:
        yield from _string_literals(node.children[1])
        yield from _string_literals(node.children[2])
    else:
        literal = _string_literal(node)
        if literal is not None:
            yield node, literal


def _list_items(node: lark.Tree) -> list[lark.Tree]:
    """The items of a list literal (``[]`` for anything else), through parentheses."""
    node = _unwrap(node)
    if isinstance(node, lark.Tree) and node.data == "paren_expr" and node.children:
        return _list_items(node.children[0])
    if isinstance(node, lark.Tree) and node.data == "list_lit" and node.children:
        return [c for c in node.children[0].children if isinstance(c, lark.Tree)]
    return []


def _number_literal(node: lark.Tree | lark.Token) -> float | None:
    """The value of a numeric literal (``-1``, ``0.5``, ``24``), else ``None``."""
    found = _number_token(node)
    return found[0] if found else None


def _number_text(node: lark.Tree | lark.Token) -> str:
    """A numeric literal as written (``-1.0``), for messages."""
    found = _number_token(node)
    return found[1] if found else "?"


def _number_token(node: lark.Tree | lark.Token) -> tuple[float, str] | None:
    node = _unwrap(node)
    sign = 1.0
    while isinstance(node, lark.Tree) and node.data == "unary" and len(node.children) == 2:
        op = node.children[0]
        if not (isinstance(op, lark.Tree) and op.data == "unary_neg"):
            return None
        sign, node = -sign, _unwrap(node.children[1])
    if isinstance(node, lark.Tree) and node.data == "literal":
        token = node.children[0]
        if isinstance(token, lark.Token) and token.type in ("INT_LIT", "UINT_LIT", "FLOAT_LIT"):
            text = token.value.rstrip("uU")
            try:
                value = sign * (float(int(text, 16)) if text.lower().startswith("0x") else float(text))
            except ValueError:  # pragma: no cover - the grammar only lets numbers through
                return None
            return value, ("-" if sign < 0 else "") + token.value
    return None


_FLIPPED = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}


def _never(op: str, literal: float, lo: float | None, hi: float | None, integer: bool) -> bool:
    """Whether ``x <op> literal`` is false for every ``x`` in ``[lo, hi]`` (whole numbers if ``integer``)."""
    lo_ = -math.inf if lo is None else (math.ceil(lo) if integer else lo)
    hi_ = math.inf if hi is None else (math.floor(hi) if integer else hi)
    if op == "lt":
        return lo_ >= literal
    if op == "le":
        return lo_ > literal
    if op == "gt":
        return hi_ <= literal
    if op == "ge":
        return hi_ < literal
    if op == "eq":
        return literal < lo_ or literal > hi_ or (integer and literal != int(literal))
    return lo_ == hi_ == literal  # ne


def _num(value: float) -> str:
    return f"{value:g}"


def _duration_hint(left: T, right: T, left_node: lark.Tree, right_node: lark.Tree,
                   purpose: str = "to compare with a duration", other: str = "duration") -> str:
    """``time.now - user.auth_time > "72h"`` or ``time.now - "72h"``: a string literal where a
    duration was meant, next to a value of kind ``other``."""
    if {left.kind, right.kind} != {other, "string"}:
        return ""
    literal_node = right_node if right.kind == "string" else left_node
    literal = next((text for _, text in _string_literals(literal_node)), None)
    example = literal if literal else "72h"
    return f' (write duration("{example}") {purpose})'
