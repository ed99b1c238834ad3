"""Native CEL backend: compile a cel-python parse tree into Python closures once.

cel-python (``celpy``) parses; this module walks the lark tree a single time, collapses the
grammar's long single-child chains, folds constants, specialises common shapes
(``attr == "lit"``, ``attr in ["a", "b"]``, ``attr > 0.5``) and returns a closure over the
activation. Semantics follow cel-python's interpreter (the reference, see
:mod:`ttlpolicy.cel.reference`) except where cel-python is clearly wrong; those cases are
listed in ``tests/test_cel_native.py`` (``KNOWN_DIFFERENCES``).

Example::

    >>> from celpy.celparser import CELParser
    >>> fn = compile_expression(CELParser().parse('user.risk > 0.5 && "admin" in user.roles'))
    >>> fn({"user": {"risk": 0.7, "roles": ["admin"]}})
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import lark
from ttlpolicy.cel import codegen
from ttlpolicy.cel.literals import LiteralError, decode_bytes, decode_string
from ttlpolicy.cel.subset import LEFT_OUT_FUNCTIONS, TYPE_NAMES
from ttlpolicy.cel import native_functions as nf
from ttlpolicy.cel.native_functions import CELEvalError, Uint

__all__ = ["CELEvalError", "UnsupportedExpression", "compile_expression"]

Activation = Mapping[str, Any]
Fn = Callable[[Activation], Any]


class UnsupportedExpression(Exception):
    """Raised at compile time for a construct the native backend does not support.

    Attributes: ``message`` (str), ``line`` and ``column`` (1-based, within the expression text).
    """

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.line = line
        self.column = column


class _Node(NamedTuple):
    fn: Fn
    const: bool = False  # fn ignores the activation and never raises -> value is valid
    value: Any = None
    path: tuple[str, ...] | None = None  # set for ident / ident.f.g chains
    boolean: bool = False  # statically known to produce bool (or raise)


# A set, not a tuple: ``Tree.data`` is a lark Token with a Python-level ``__eq__``.
_LINKS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                    "unary", "member", "primary", "paren_expr"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_SIMPLE_TYPES = (str, int, float, bool)
_MAP_KEY_KINDS = ("string", "int", "uint", "bool")


def compile_expression(tree: lark.Tree, generate: bool = True) -> Callable[[Mapping[str, Any]], Any]:
    """Compile a celpy parse tree into a function of the activation.

    The activation maps top-level identifiers to plain Python values (dict, list, str, bool,
    int, float, None, tz-aware datetime, timedelta); results are plain Python values.
    Runtime errors raise :class:`CELEvalError`; unsupported constructs raise
    :class:`UnsupportedExpression` here, at compile time.

    Example::

        >>> from celpy.celparser import CELParser
        >>> compile_expression(CELParser().parse("size(a) + 1"))({"a": [1, 2]})
        3
    """
    node = _Compiler().compile(tree)
    fn = node.fn
    if node.boolean:
        # bool results need no conversion: no wrapper. Conditions made of simple tests run as
        # one generated function that falls back to this closure for anything unusual, unless
        # the caller has them in generated code of its own (``generate=False``: a policy's rules).
        return (codegen.generate(tree, fn, leaf_parts) if generate else None) or fn
    if node.const:
        value = node.value
        return lambda act: nf.to_plain(value)
    to_plain = nf.to_plain

    def run(act: Mapping[str, Any]) -> Any:
        r = fn(act)
        t = type(r)
        if t is str or t is bool or t is int or t is float:
            return r
        return to_plain(r)

    return run


def leaf_parts(tree: lark.Tree) -> tuple[Fn, bool, Any, tuple[str, ...] | None]:
    """``(closure, is constant, constant value, attribute path)`` of a sub-expression, for codegen."""
    node = _Compiler().compile(tree)
    return node.fn, node.const, node.value, node.path


# ------------------------------------------------------------------------------------ helpers


def _int_literal(text: str) -> int:
    """An INT_LIT's value as cel-python's ``IntType(text)`` gives it: decimal literals in range
    directly (importing cel-python only for this cost ~5 MiB of memory and 30 ms per process),
    hex and out-of-range ones through ``IntType`` itself (its errors included)."""
    if text.lstrip("-").isdigit():
        value = int(text)
        if -(2**63) <= value < 2**63:
            return value
    from celpy.celtypes import IntType
    return int(IntType(text))


def _pos(item: lark.Tree | lark.Token) -> tuple[int, int]:
    if isinstance(item, lark.Token):
        return item.line or 1, item.column or 1
    meta = item.meta
    return getattr(meta, "line", 1), getattr(meta, "column", 1)


def _unsupported(item: lark.Tree | lark.Token, message: str) -> UnsupportedExpression:
    line, column = _pos(item)
    return UnsupportedExpression(message, line, column)


def _const(value: Any) -> _Node:
    return _Node(lambda act: value, True, value)


def _raiser(message: str) -> Fn:
    def fail(act: Activation) -> Any:
        raise CELEvalError(message)  # a fresh exception per call: safe across threads

    return fail


def _fold(node: _Node, *children: _Node) -> _Node:
    """Evaluate a node whose operands are all constants once, at compile time."""
    if not all(c.const for c in children):
        return node
    try:
        value = node.fn({})
    except CELEvalError as e:
        return _Node(_raiser(str(e)), boolean=node.boolean)
    return _Node(lambda act: value, True, value, boolean=node.boolean)


def _select_slow(v: Any, field: str, label: str) -> Any:
    if isinstance(v, Mapping):
        try:
            return v[field]
        except KeyError:
            raise CELEvalError(f"no such attribute '{label}'") from None
    raise CELEvalError(f"type '{nf.kind(v)}' does not support field selection ('{label}')")


def _path_getter(path: tuple[str, ...]) -> Fn:
    name = path[0]
    missing = f"no such attribute '{name}'"
    if len(path) == 1:
        def get_ident(act: Activation) -> Any:
            try:
                return act[name]
            except KeyError:
                raise CELEvalError(missing) from None

        return get_ident
    if len(path) == 2:
        field = path[1]
        label = f"{name}.{field}"
        missing2 = f"no such attribute '{label}'"

        def get2(act: Activation) -> Any:
            try:
                v = act[name]
            except KeyError:
                raise CELEvalError(missing) from None
            if type(v) is dict:
                try:
                    return v[field]
                except KeyError:
                    raise CELEvalError(missing2) from None
            return _select_slow(v, field, label)

        return get2
    labels = tuple(".".join(path[: i + 1]) for i in range(len(path)))
    steps = tuple(zip(path[1:], labels[1:]))

    def get_n(act: Activation) -> Any:
        try:
            v = act[name]
        except KeyError:
            raise CELEvalError(missing) from None
        for field, label in steps:
            if type(v) is dict and field in v:
                v = v[field]
            else:
                v = _select_slow(v, field, label)
        return v

    return get_n


def _iter_range(v: Any, macro: str) -> Any:
    """What a macro ranges over: a list's items, a map's keys (iterating a Mapping gives them)."""
    k = nf.kind(v)
    if k == "list" or k == "map":
        return v
    raise nf.no_overload(macro, v)  # cel-python iterates strings char by char (documented)


# ------------------------------------------------------------------------------------ compiler


class _Compiler:
    """One-shot tree walker; holds no state between compile() calls' results."""

    def compile(self, tree: lark.Tree) -> _Node:
        return self.expr(tree)

    # -- unwrapping -----------------------------------------------------------------------

    def expr(self, t: lark.Tree) -> _Node:
        # Dispatch on rule name; single-child wrappers are skipped without building closures.
        while True:
            data = t.data
            ch = t.children
            if len(ch) == 1 and data in _LINKS:
                t = ch[0]
                continue
            break
        method = getattr(self, "n_" + str(data), None)
        if method is None:
            raise _unsupported(t, f"unsupported construct '{data}'")
        return method(t)

    # -- logic ----------------------------------------------------------------------------

    def n_expr(self, t: lark.Tree) -> _Node:
        cond, yes, no = (self.expr(c) for c in t.children)
        c, a, b = cond.fn, yes.fn, no.fn

        def ternary(act: Activation) -> Any:
            v = c(act)
            if v is True:
                return a(act)
            if v is False:
                return b(act)
            raise nf.no_overload("_?_:_", v)

        if cond.const and cond.value is True:
            return yes
        if cond.const and cond.value is False:
            return no
        return _Node(ternary, boolean=yes.boolean and no.boolean)

    def _flatten(self, t: lark.Tree, rule: str) -> list[_Node]:
        out: list[_Node] = []
        while t.data == rule and len(t.children) == 2:
            out.append(self.expr(t.children[1]))
            t = t.children[0]
        out.append(self.expr(t))
        out.reverse()
        return out

    def n_conditionaland(self, t: lark.Tree) -> _Node:
        return self._logic(self._flatten(t, "conditionaland"), absorbing=False)

    def n_conditionalor(self, t: lark.Tree) -> _Node:
        return self._logic(self._flatten(t, "conditionalor"), absorbing=True)

    def _logic(self, nodes: list[_Node], absorbing: bool) -> _Node:
        # CEL && / || are commutative over errors: a deciding operand (false for &&, true
        # for ||) wins wherever it is; otherwise the first error is raised. Operands are
        # evaluated left to right and evaluation stops at the first deciding value.
        fns = tuple(n.fn for n in nodes)
        op = "_||_" if absorbing else "_&&_"

        def logic(act: Activation) -> bool:
            err: CELEvalError | None = None
            for f in fns:
                try:
                    v = f(act)
                except CELEvalError as e:
                    if err is None:
                        err = e
                    continue
                if v is absorbing:
                    return absorbing
                if v is not (not absorbing) and err is None:
                    err = nf.no_overload(op, v)  # cel-python returns the non-bool (documented)
            if err is not None:
                raise err
            return not absorbing

        if len(fns) == 2:
            f0, f1 = fns

            def logic2(act: Activation) -> bool:
                try:
                    v = f0(act)
                except CELEvalError:
                    v = None
                if v is absorbing:
                    return absorbing
                if v is not (not absorbing):
                    return logic(act)  # rare path: re-run generically for exact error choice
                w = f1(act)
                if w is True or w is False:
                    return w
                raise nf.no_overload(op, w)

            return _fold(_Node(logic2, boolean=True), *nodes)
        return _fold(_Node(logic, boolean=True), *nodes)

    # -- relations / arithmetic -----------------------------------------------------------

    def _binary(self, t: lark.Tree) -> tuple[str, _Node, _Node]:
        op_tree, right = t.children
        left = self.expr(op_tree.children[0])
        return op_tree.data, left, self.expr(right)

    def n_relation(self, t: lark.Tree) -> _Node:
        op, left, right = self._binary(t)
        lf, rf = left.fn, right.fn
        if op == "relation_in":
            return _fold(self._in(left, right), left, right)
        impl = {"relation_eq": nf.eq, "relation_ne": nf.ne, "relation_lt": nf.lt,
                "relation_le": nf.le, "relation_gt": nf.gt, "relation_ge": nf.ge}[op]
        import operator

        pyop = {"relation_eq": operator.eq, "relation_ne": operator.ne,
                "relation_lt": operator.lt, "relation_le": operator.le,
                "relation_gt": operator.gt, "relation_ge": operator.ge}[op]
        if right.const and type(right.value) in _SIMPLE_TYPES:
            k = right.value
            kt = type(k)
            node = _Node(self._rel_const(lf, k, kt, pyop, impl), boolean=True)
        else:
            def rel(act: Activation) -> bool:
                a = lf(act)
                b = rf(act)
                ta = type(a)
                if ta is type(b) and (ta is str or ta is int or ta is float):
                    return pyop(a, b)
                return impl(a, b)

            node = _Node(rel, boolean=True)
        return _fold(node, left, right)

    @staticmethod
    def _rel_const(lf: Fn, k: Any, kt: type, pyop: Any, impl: Any) -> Fn:
        # Specialised `attr OP literal`: a type identity check replaces the generic dispatch.
        import operator

        if pyop is operator.eq:
            def rel_eq(act: Activation) -> bool:
                v = lf(act)
                if type(v) is kt:
                    return v == k
                return impl(v, k)

            return rel_eq
        if pyop is operator.ne:
            def rel_ne(act: Activation) -> bool:
                v = lf(act)
                if type(v) is kt:
                    return v != k
                return impl(v, k)

            return rel_ne

        def rel_k(act: Activation) -> bool:
            v = lf(act)
            if type(v) is kt:
                return pyop(v, k)
            return impl(v, k)

        return rel_k

    def _in(self, left: _Node, right: _Node) -> _Node:
        lf, rf = left.fn, right.fn
        in_ = nf.in_
        if right.const and type(right.value) is list and right.value:
            items = right.value
            for kt in (str, int):
                if all(type(x) is kt for x in items):
                    members = frozenset(items)

                    def in_set(act: Activation, kt: type = kt) -> bool:
                        v = lf(act)
                        if type(v) is kt:
                            return v in members
                        return in_(v, items)

                    return _Node(in_set, boolean=True)

        def in_any(act: Activation) -> bool:
            return in_(lf(act), rf(act))

        return _Node(in_any, boolean=True)

    def n_addition(self, t: lark.Tree) -> _Node:
        op, left, right = self._binary(t)
        lf, rf = left.fn, right.fn
        if op == "addition_add":
            add = nf.add

            def plus(act: Activation) -> Any:
                a = lf(act)
                b = rf(act)
                if type(a) is int and type(b) is int:
                    r = a + b
                    if -9223372036854775808 <= r <= 9223372036854775807:
                        return r
                return add(a, b)

            return _fold(_Node(plus), left, right)
        sub = nf.sub

        def minus(act: Activation) -> Any:
            return sub(lf(act), rf(act))

        return _fold(_Node(minus), left, right)

    def n_multiplication(self, t: lark.Tree) -> _Node:
        op, left, right = self._binary(t)
        lf, rf = left.fn, right.fn
        impl = {"multiplication_mul": nf.mul, "multiplication_div": nf.div,
                "multiplication_mod": nf.mod}[op]

        def arith(act: Activation) -> Any:
            return impl(lf(act), rf(act))

        return _fold(_Node(arith), left, right)

    def n_unary(self, t: lark.Tree) -> _Node:
        op_tree, operand_tree = t.children
        operand = self.expr(operand_tree)
        f = operand.fn
        if op_tree.data == "unary_not":
            not_ = nf.not_

            def negate(act: Activation) -> bool:
                return not_(f(act))

            return _fold(_Node(negate, boolean=True), operand)
        neg = nf.neg

        def minus(act: Activation) -> Any:
            return neg(f(act))

        return _fold(_Node(minus), operand)

    # -- members --------------------------------------------------------------------------

    def n_ident(self, t: lark.Tree) -> _Node:
        name = str(t.children[0])
        if name in TYPE_NAMES:
            raise _unsupported(t, TYPE_NAMES[name])
        return _Node(_path_getter((name,)), path=(name,))

    def n_member_dot(self, t: lark.Tree) -> _Node:
        base_tree, field_tok = t.children
        base = self.expr(base_tree)
        field = str(field_tok)
        if base.path is not None:
            path = base.path + (field,)
            return _Node(_path_getter(path), path=path)
        bf = base.fn
        label = field

        def select(act: Activation) -> Any:
            v = bf(act)
            if type(v) is dict and field in v:
                return v[field]
            return _select_slow(v, field, label)

        return _fold(_Node(select), base)

    def n_member_index(self, t: lark.Tree) -> _Node:
        base, index = (self.expr(c) for c in t.children)
        bf, xf = base.fn, index.fn

        def index_fn(act: Activation) -> Any:
            return _index(bf(act), xf(act))

        return _fold(_Node(index_fn), base, index)

    def n_member_object(self, t: lark.Tree) -> _Node:
        raise _unsupported(t, "message construction is not supported")

    def n_dot_ident(self, t: lark.Tree) -> _Node:
        raise _unsupported(t, "leading-dot (root scope) identifiers are not supported")

    def n_dot_ident_arg(self, t: lark.Tree) -> _Node:
        raise _unsupported(t, "leading-dot (root scope) function calls are not supported")

    # -- literals -------------------------------------------------------------------------

    def n_literal(self, t: lark.Tree) -> _Node:
        tok = t.children[0]
        assert isinstance(tok, lark.Token)  # cel.lark: literal is a single *_LIT token
        kind = tok.type
        try:
            if kind == "INT_LIT":
                return _const(_int_literal(tok.value))
            if kind == "UINT_LIT":
                from celpy.celtypes import UintType  # rare: cel-python's range checks, imported when needed
                return _const(Uint(int(UintType(tok.value[:-1]))))
            if kind == "FLOAT_LIT":
                return _const(float(tok.value))  # what celpy's DoubleType(text) is
            if kind in ("STRING_LIT", "MLSTRING_LIT"):
                return _const(decode_string(tok.value))
            if kind == "BYTES_LIT":
                return _const(decode_bytes(tok.value))
        except LiteralError as e:
            before = tok.value[:e.offset]
            line = (tok.line or 1) + before.count("\n")
            column = e.offset - before.rfind("\n") if "\n" in before else (tok.column or 1) + e.offset
            raise UnsupportedExpression(e.message, line, column) from None
        except ValueError:
            # e.g. 9223372036854775808 or -1u: cel-python reports these when evaluated.
            return _Node(_raiser(f"invalid literal {tok.value}"))
        if kind == "BOOL_LIT":
            return _const(tok.value == "true")
        if kind == "NULL_LIT":
            return _const(None)
        raise _unsupported(tok, f"unsupported literal {tok.value!r}")

    def n_list_lit(self, t: lark.Tree) -> _Node:
        if not t.children:
            return _Node(lambda act: [])
        items = [self.expr(c) for c in t.children[0].children]
        fns = tuple(i.fn for i in items)
        if all(i.const for i in items):
            value = [i.value for i in items]
            return _Node(lambda act: value, True, value)

        def make_list(act: Activation) -> list[Any]:
            return [f(act) for f in fns]

        return _Node(make_list)

    def n_map_lit(self, t: lark.Tree) -> _Node:
        if not t.children:
            return _Node(lambda act: {})
        parts = [self.expr(c) for c in t.children[0].children]
        pairs = tuple(zip((p.fn for p in parts[0::2]), (p.fn for p in parts[1::2])))

        def make_map(act: Activation) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for kf, vf in pairs:
                k = kf(act)
                if nf.kind(k) not in _MAP_KEY_KINDS:
                    raise CELEvalError(f"unsupported map key type '{nf.kind(k)}'")
                if k in out:
                    raise CELEvalError("duplicate map key")
                out[k] = vf(act)
            return out

        node = _fold(_Node(make_map), *parts)
        if node.const:  # a fresh dict per call is not needed: results are copied on return
            return node
        return node

    # -- calls ----------------------------------------------------------------------------

    def n_ident_arg(self, t: lark.Tree) -> _Node:
        name_tok = t.children[0]
        assert isinstance(name_tok, lark.Token)  # cel.lark: ident_arg : IDENT "(" [exprlist] ")"
        name = str(name_tok)
        arg_trees = list(t.children[1].children) if len(t.children) > 1 else []
        if name == "has":
            return self._has(t, arg_trees)
        if name in nf.CONVERSIONS:
            if len(arg_trees) != 1:
                raise _unsupported(name_tok, f"{name}() takes exactly one argument")
            arg = self.expr(arg_trees[0])
            conv = nf.CONVERSIONS[name]
            af = arg.fn

            def convert(act: Activation) -> Any:
                return conv(af(act))

            return _fold(_Node(convert, boolean=name == "bool"), arg)
        if name in nf.FUNCTIONS:
            return self._call(name_tok, name, [self.expr(a) for a in arg_trees], arg_trees)
        if name in LEFT_OUT_FUNCTIONS:
            raise _unsupported(name_tok, LEFT_OUT_FUNCTIONS[name])
        raise _unsupported(name_tok, f"unsupported function '{name}'")

    def n_member_dot_arg(self, t: lark.Tree) -> _Node:
        target_tree, name_tok = t.children[0], t.children[1]
        assert isinstance(name_tok, lark.Token)  # cel.lark: member_dot_arg : member "." IDENT "(" ...
        name = str(name_tok)
        arg_trees = list(t.children[2].children) if len(t.children) > 2 else []
        if name in _MACROS:
            return self._macro(t, name_tok, name, target_tree, arg_trees)
        if name in nf.FUNCTIONS:
            args = [self.expr(target_tree)] + [self.expr(a) for a in arg_trees]
            return self._call(name_tok, name, args, [target_tree] + arg_trees)
        raise _unsupported(name_tok, f"unsupported method '{name}'")

    def _call(self, name_tok: lark.Token, name: str, args: list[_Node],
              arg_trees: list[lark.Tree]) -> _Node:
        impl, arities = nf.FUNCTIONS[name]
        if len(args) not in arities:
            raise _unsupported(name_tok, f"wrong number of arguments for '{name}'")
        boolean = name in ("startsWith", "endsWith", "contains", "matches")
        if name == "matches" and args[1].const:
            pattern = args[1].value
            if type(pattern) is str:
                problem = nf.regex_problem(pattern)
                if problem is not None:
                    raise _unsupported(arg_trees[1], problem)
                rx = nf.compile_regex(pattern)
                sf = args[0].fn

                def match_literal(act: Activation) -> bool:
                    s = sf(act)
                    if type(s) is str:
                        return rx.search(s) is not None
                    return nf.matches(s, pattern)

                return _fold(_Node(match_literal, boolean=True), args[0])
        if len(args) == 1:
            f0 = args[0].fn

            def call1(act: Activation) -> Any:
                return impl(f0(act))

            return _fold(_Node(call1, boolean=boolean), *args)
        f0, f1 = args[0].fn, args[1].fn

        def call2(act: Activation) -> Any:
            return impl(f0(act), f1(act))

        return _fold(_Node(call2, boolean=boolean), *args)

    def _has(self, t: lark.Tree, arg_trees: list[lark.Tree]) -> _Node:
        # The argument must be a field selection, written as such (parentheses allowed, as in
        # cel-go): not an expression that merely contains one, like has([a.b]).
        inner = codegen.unwrap(arg_trees[0]) if len(arg_trees) == 1 else t
        if inner.data != "member_dot":
            raise _unsupported(t, "has() requires a field selection argument, e.g. has(a.b)")
        base = self.expr(inner.children[0])
        field = str(inner.children[1])
        bf = base.fn

        def has(act: Activation) -> bool:
            # Presence test: the operand itself must evaluate; only the last field may be absent.
            v = bf(act)
            if nf.kind(v) == "map":
                return field in v
            raise nf.no_overload("has", v)  # cel-python: false for any error (documented)

        return _Node(has, boolean=True)

    def _macro(self, t: lark.Tree, name_tok: lark.Token, name: str, target_tree: lark.Tree,
               arg_trees: list[lark.Tree]) -> _Node:
        if len(arg_trees) != 2:
            raise _unsupported(name_tok, f"{name}() macro takes exactly 2 arguments here")
        var_node = self.expr(arg_trees[0])
        if var_node.path is None or len(var_node.path) != 1:
            raise _unsupported(arg_trees[0], f"{name}() macro variable must be an identifier")
        var = var_node.path[0]
        target = self.expr(target_tree).fn
        body = self.expr(arg_trees[1]).fn

        def frames(act: Activation) -> tuple[Any, dict[str, Any]]:
            # A private copy of the activation holds the loop variable: no shared mutation.
            return _iter_range(target(act), name), dict(act)

        if name in ("all", "exists"):
            decisive = name == "exists"  # exists: true decides; all: false decides

            def quantifier(act: Activation) -> bool:
                items, scope = frames(act)
                err: CELEvalError | None = None
                for item in items:
                    scope[var] = item
                    try:
                        v = body(scope)
                    except CELEvalError as e:
                        err = err or e
                        continue
                    if v is decisive:
                        return decisive
                    if v is not (not decisive):
                        err = err or nf.no_overload(name, v)
                if err is not None:
                    raise err
                return not decisive

            return _Node(quantifier, boolean=True)
        if name == "exists_one":
            def exists_one(act: Activation) -> bool:
                items, scope = frames(act)
                count = 0
                for item in items:
                    scope[var] = item
                    v = body(scope)
                    if v is True:
                        count += 1
                    elif v is not False:
                        raise nf.no_overload(name, v)
                return count == 1

            return _Node(exists_one, boolean=True)
        if name == "map":
            def map_(act: Activation) -> list[Any]:
                items, scope = frames(act)
                out = []
                for item in items:
                    scope[var] = item
                    out.append(body(scope))
                return out

            return _Node(map_)

        def filter_(act: Activation) -> list[Any]:
            items, scope = frames(act)
            out = []
            for item in items:
                scope[var] = item
                v = body(scope)
                if v is True:
                    out.append(item)
                elif v is not False:
                    raise nf.no_overload(name, v)
            return out

        return _Node(filter_)


def _index(b: Any, i: Any) -> Any:
    """``b[i]``: a list's item by an int or uint position, a map's value by a key."""
    kb, ki = nf.kind(b), nf.kind(i)
    if kb == "list" and ki == "double":  # a whole number stands for its position (langdef: [7, 8][dyn(0.0)])
        if not i.is_integer():
            raise CELEvalError(f"invalid list index: {i!r} is not a whole number")
        i, ki = int(i), "int"
    if kb == "list" and (ki == "int" or ki == "uint"):
        if 0 <= i < len(b):
            return b[i]
        raise CELEvalError(f"index out of range: {int(i)}")  # no Python negative indexing
    if kb == "map" and (ki in _MAP_KEY_KINDS or ki == "double"):
        # CEL's key equality (1 == 1u == 1.0, but true != 1), not Python's dict lookup, which
        # finds the value of a key `true` for the index 1. A double is never a key, but it finds
        # the number it equals (as `in` does): {3u: "x"}[3.0] is "x", [3.5] no such key.
        key = nf._matching_key(b, i)
        if key is nf._MISSING:
            raise CELEvalError(f"no such key: {i!r}")
        return b[key]
    raise nf.no_overload("_[_]", b, i)
