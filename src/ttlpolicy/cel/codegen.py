"""Boolean conditions as one generated Python function: the fast path of the native backend.

Most policy conditions are ``&&`` / ``||`` / ``!`` over simple tests of attributes
(``device.trust == "managed"``, ``tier in ["finance", "government"]``, ``user.risk > 0.5``,
``has(client.type)``, ``user.mfa``). A closure per node (:mod:`ttlpolicy.cel.native`) costs a
Python call per node; here the whole condition becomes one expression in one function::

    def condition(act):
        try:
            return ((v0 == _k0 if type(v0 := act['device']['trust']) is str else _slow_()) and ...)
        except Exception:
            return slow(act)

**Semantics are the closure's, by construction.** Every test is guarded by the exact type for
which the closure's own fast branch is plain Python (``str == str``, ``float > float``,
``str in frozenset``). When all the tests it reaches are well-typed and present, CEL's ``&&`` /
``||`` / ``!`` over bools are Python's ``and`` / ``or`` / ``not`` (CEL's error absorption only
matters when an operand errs, and short-circuiting skips exactly the operands CEL would let a
deciding value absorb). Anything else (a missing attribute, another type, a sub-expression that
raises or is not a bool) abandons the attempt and calls the closure compiled for the whole
condition, which then produces the result or the error (and its message) exactly as before.

**No user text is executed.** The generated source holds only Python keywords, generated names,
attribute names checked to be identifiers (and still written with ``repr``), and names of a
constants table through which every literal value and every fallback closure is passed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any

import lark

Fn = Callable[[Mapping[str, Any]], Any]
# Grammar links with one child that only wrap their child (paren_expr included: grouping is
# already expressed by the parentheses the generator writes around every sub-expression).
_LINKS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                    "unary", "member", "primary", "paren_expr"})
_COMPARE = {"relation_eq": "==", "relation_ne": "!=", "relation_lt": "<", "relation_le": "<=",
            "relation_gt": ">", "relation_ge": ">="}
_SIMPLE = {str: "str", int: "int", float: "float", bool: "bool"}


class _Slow(Exception):
    """A test met a value it does not handle: the whole condition goes to the closure."""


def _slow_() -> Any:
    raise _Slow


def unwrap(t: lark.Tree) -> lark.Tree:
    """``t`` without the grammar's one-child links around it (``expr`` → ``conditionalor`` → …)."""
    while t.data in _LINKS and len(t.children) == 1:
        t = t.children[0]
    return t


class _Generator:
    def __init__(self, leaf: Callable[[lark.Tree], Any], prefix: str = "_k"):
        self.leaf = leaf  # compiles a sub-tree with the native compiler: (fn, const, value, path)
        self.prefix = prefix  # of the constants' names, distinct per condition in a whole-policy function
        self.names: dict[str, Any] = {}
        self.variables = 0
        self.fast_tests = 0

    def constant(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.names)}"
        self.names[name] = value
        return name

    def variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"

    def boolean(self, t: lark.Tree) -> str:
        """Python source for ``t``, which yields a bool or raises (any exception means: use the closure)."""
        t = unwrap(t)
        if t.data in ("conditionaland", "conditionalor") and len(t.children) == 2:
            kind = t.data  # a chain a && b && c is left-nested: flatten it as the closure does
            operands: list[str] = []
            while t.data == kind and len(t.children) == 2:
                operands.append(self.boolean(t.children[1]))
                t = t.children[0]
            operands.append(self.boolean(t))
            joiner = " and " if kind == "conditionaland" else " or "
            return "(" + joiner.join(reversed(operands)) + ")"
        if t.data == "unary" and len(t.children) == 2 and t.children[0].data == "unary_not":
            return f"(not {self.boolean(t.children[1])})"
        if t.data == "relation" and len(t.children) == 2:
            source = self.relation(t)
            if source is not None:
                self.fast_tests += 1
                return source
        if t.data == "ident_arg" and str(t.children[0]) == "has":
            source = self.has(t)
            if source is not None:
                self.fast_tests += 1
                return source
        path = self.path(t)
        if path is not None:  # a bool attribute used as a test: `user.mfa`
            self.fast_tests += 1
            v = self.variable()
            return f"({v} if type({v} := {path}) is bool else _slow_())"
        # Any other construct: its own closure, accepted only when it gives a bool.
        fn = self.constant(self.leaf(t)[0])
        v = self.variable()
        return f"({v} if ({v} := {fn}(act)) is True or {v} is False else _slow_())"

    def path(self, t: lark.Tree) -> str | None:
        """``act['a']['b']`` for an attribute chain ``a.b``, else ``None``."""
        t = unwrap(t)
        fields: list[str] = []
        while t.data == "member_dot":
            fields.append(str(t.children[1]))
            t = unwrap(t.children[0])
        if t.data != "ident":
            return None
        fields.append(str(t.children[0]))
        if not all(f.isidentifier() for f in fields):  # pragma: no cover - the lexer only makes identifiers
            return None
        return "act" + "".join(f"[{f!r}]" for f in reversed(fields))

    def relation(self, t: lark.Tree) -> str | None:
        op_tree, right_tree = t.children
        op = op_tree.data
        path = self.path(op_tree.children[0])
        if path is None:
            sized = self.size_of(op_tree.children[0])
            if sized is not None:
                return self.size_relation(op, sized, right_tree)
            return self.literal_in(op, op_tree.children[0], right_tree)
        _, const, value, _ = self.leaf(right_tree)
        if not const:
            container = self.path(right_tree)
            if op == "relation_in" and container is not None:  # `location.country in location.expected`
                v, w = self.variable(), self.variable()
                # As the closure's `in_`: a string equals only an equal string (CEL's equality is
                # heterogeneous: "1" == 1 is false, not an error), so Python's `in` is the answer.
                return f"({v} in {w} if type({v} := {path}) is str and type({w} := {container}) is list else _slow_())"
            return None
        v = self.variable()
        if op == "relation_in":
            # As the closure's `in_set`: a non-empty list literal of only strings or only ints.
            if type(value) is not list or not value:
                return None
            for kind in (str, int):
                if all(type(x) is kind for x in value):
                    members = self.constant(frozenset(value))
                    return f"({v} in {members} if type({v} := {path}) is {_SIMPLE[kind]} else _slow_())"
            return None
        if op not in _COMPARE or type(value) not in _SIMPLE:
            return None
        # As the closure's `_rel_const`: plain Python only when the value has the literal's type.
        k = self.constant(value)
        return f"({v} {_COMPARE[op]} {k} if type({v} := {path}) is {_SIMPLE[type(value)]} else _slow_())"

    def size_of(self, t: lark.Tree) -> str | None:
        """The attribute path ``p`` of ``size(p)``, else ``None``."""
        t = unwrap(t)
        if t.data != "ident_arg" or str(t.children[0]) != "size" or len(t.children) != 2:
            return None
        args = t.children[1].children
        return self.path(args[0]) if len(args) == 1 else None

    def size_relation(self, op: str, path: str, right_tree: lark.Tree) -> str | None:
        """``size(user.groups) > 0``: the length of a list or string compared with an int literal
        (as the closure: ``size`` gives an int, and int against int is plain Python)."""
        _, const, value, _ = self.leaf(right_tree)
        if not const or type(value) is not int or op not in _COMPARE:
            return None
        v = self.variable()
        k = self.constant(value)
        return f"(len({v}) {_COMPARE[op]} {k} if type({v} := {path}) is list or type({v}) is str else _slow_())"

    def literal_in(self, op: str, left_tree: lark.Tree, right_tree: lark.Tree) -> str | None:
        """``"admins" in user.groups``: a string literal in a list attribute."""
        path = self.path(right_tree)
        if op != "relation_in" or path is None:
            return None
        _, const, value, _ = self.leaf(left_tree)
        if not const or type(value) is not str:
            return None
        v = self.variable()
        k = self.constant(value)
        return f"({k} in {v} if type({v} := {path}) is list else _slow_())"  # as above

    def has(self, t: lark.Tree) -> str | None:
        """``has(a.b)``: the native compiler has already checked its argument (one field
        selection, in parentheses or not) and refused anything else."""
        inner = unwrap(t.children[1].children[0])
        base = self.path(inner.children[0])
        field = str(inner.children[1])
        if base is None:
            return None
        v = self.variable()
        # As the closure: the operand must evaluate; a plain dict answers by membership.
        return f"({self.constant(field)} in {v} if type({v} := {base}) is dict else _slow_())"


@functools.lru_cache(maxsize=2048)
def _code(source: str) -> CodeType:
    """Compiled once per distinct source: the source holds only the shape of a condition and
    attribute names (values live in the namespace), so large policies repeat the same few
    sources, and ``compile()`` costs ~0.3 ms, a fifth of loading a 1,000-rule policy."""
    return compile(source, "<ttlpolicy condition>", "exec")


# What a condition's source may name besides its constants and ``act`` (the activation).
HELPERS: dict[str, Any] = {"_slow_": _slow_}
BUILTINS: dict[str, Any] = {"type": type, "str": str, "int": int, "float": float, "bool": bool, "dict": dict,
                            "list": list, "len": len, "Exception": Exception}


def condition_source(tree: lark.Tree, leaf: Callable[[lark.Tree], Any], prefix: str = "_k"
                     ) -> tuple[str, dict[str, Any], int]:
    """``(expression source, its constants, number of fast tests)`` for a condition: the source
    yields the condition's bool or raises (then the closure decides). Raises for a shape the
    generator does not know. :mod:`ttlpolicy.generate` inlines it into the whole-policy function."""
    generator = _Generator(leaf, prefix)
    body = generator.boolean(tree)
    return body, generator.names, generator.fast_tests


def generate(tree: lark.Tree, slow: Fn, leaf: Callable[[lark.Tree], Any]) -> Fn | None:
    """One function equal to ``slow`` (the condition's closure) but faster, or ``None`` when
    the condition has no test the generator makes faster (then the closure is as good)."""
    try:
        body, names, fast_tests = condition_source(tree, leaf)
    except Exception:  # noqa: BLE001 - a shape the generator does not know: keep the closure
        return None
    if fast_tests == 0:
        return None
    source = ("def condition(act):\n"
              "    try:\n"
              f"        return {body}\n"
              "    except Exception:\n"  # _Slow, a missing key, another type: the closure decides
              "        return slow(act)\n")
    # BUILTINS itself, not a copy per condition (a copy was ~1 KiB per rule): nothing writes to it.
    namespace: dict[str, Any] = {"__builtins__": BUILTINS, **HELPERS, "slow": slow, **names}
    exec(_code(source), namespace)  # noqa: S102 - see module docstring
    condition: Fn = namespace["condition"]
    return condition
