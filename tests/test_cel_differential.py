"""Differential test: random well-formed CEL expressions, native backend vs cel-python.

Run: PYTHONPATH=src python -m pytest tests/test_cel_differential.py -q

Generated expressions are typed (int / double / string / bool / list / map) over a fixed
activation schema; activations randomly drop keys and put values of the wrong type in
slots. Constructs where cel-python has known bugs are NOT generated (each such exclusion
is marked "EXCLUDED:" below and listed in KNOWN_DIFFERENCES in test_cel_native.py):
  - mixing numeric kinds (double/uint left operand with int, bool as a number): celpy
    answers for some operand orders and errors for others -> wrong-type values never are
    another numeric kind or bool;
  - non-bool operands of && / || / macro predicates (celpy leaks them) -> bool attributes
    are only used as `a.f == true` or `!a.f`;
  - has() on a missing / non-map parent (celpy: false) -> only has(a.x) / has(b.x), and
    the top-level `a` and `b` are always maps;
  - size(null) (celpy: 0), `in` / macros over strings (celpy iterates characters) ->
    string and list slots never hold null; list slots never hold strings;
  - list/map != null (celpy: error, but == null is false);
  - x / 0.0 (celpy: +inf whatever the sign) -> double division only by non-zero literals;
  - string methods on the result of `+` (celpy: no such overload), and a list concatenation
    compared with a string (celpy: false where a plain list errs) -> plain operands.
One difference is not avoided but bridged: CEL's run-time equality is heterogeneous (values of
different kinds are unequal, numbers compare by value), while celpy errs when the kinds differ.
Slots deliberately hold wrong-kind values, so the native closures run with celpy's equality
matrix swapped in (:func:`_celpy_eq`); everything else is compared as is. The generated code of
a condition answers some tests without that function (a string in a list of strings and numbers
is simply not there, as CEL says), so it is held to the closures with CEL's own equality. The
spec's own answers are tested in test_cel_conformance.py.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

from celpy.celparser import CELParser
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from unittest import mock

from ttlpolicy.cel import native_functions as nf
from ttlpolicy.cel.native import CELEvalError, compile_expression
from ttlpolicy.cel.reference import compile_reference

Draw = Callable[[st.SearchStrategy[Any]], Any]
MISSING = object()

# slot name -> (CEL type, strategy for a correctly-typed value, strategy for a wrong value)
_INTS = st.integers(-6, 12) | st.sampled_from([2**62, -(2**62), 2**63 - 1])
_STRS = st.text(alphabet="ab@.", max_size=4)
_INT_LISTS = st.lists(st.integers(-3, 5), max_size=4)
SCHEMA: dict[str, tuple[str, st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "i": ("int", _INTS, st.none() | _STRS),
    "j": ("int", _INTS, st.none() | _STRS),
    "d": ("double", st.sampled_from([0.0, 0.5, -1.5, 2.25, 1e10, -0.0]), st.none() | _STRS),
    "s": ("string", _STRS, _INTS),
    "t": ("string", _STRS, _INTS),
    "f": ("bool", st.booleans(), st.none() | _STRS),
    "l": ("list", _INT_LISTS | st.just([1, "a", 3]), _INTS),
    "ls": ("list_str", st.lists(_STRS, max_size=3), _INTS),
    "m": ("map", st.dictionaries(_STRS, st.integers(0, 3), max_size=3), _INTS),
}


@st.composite
def activations(draw: Draw) -> dict[str, Any]:
    act: dict[str, Any] = {}
    for top in ("a", "b"):
        obj: dict[str, Any] = {}
        for name, (_, good, bad) in SCHEMA.items():
            choice = draw(st.sampled_from(["good", "good", "good", "missing", "bad"]))
            if choice == "good":
                obj[name] = draw(good)
            elif choice == "bad":
                obj[name] = draw(bad)
        act[top] = obj
    return act


def _attr(draw: Draw, cel_type: str) -> str:
    names = [n for n, (t, _, _) in SCHEMA.items() if t == cel_type]
    return f"{draw(st.sampled_from(['a', 'b']))}.{draw(st.sampled_from(names))}"


def _bin(left: str, op: str, right: str) -> str:
    return f"({left}) {op} ({right})"


@st.composite
def int_expr(draw: Draw, depth: int = 2) -> str:
    leaf = st.one_of(st.integers(-5, 9).map(str), st.just("9223372036854775807"))
    if depth <= 0:
        return draw(leaf) if draw(st.booleans()) else _attr(draw, "int")
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(leaf)
    if kind == 1:
        return _attr(draw, "int")
    if kind == 2:
        op = draw(st.sampled_from(["+", "-", "*", "/", "%"]))
        return _bin(draw(int_expr(depth - 1)), op, draw(int_expr(depth - 1)))
    if kind == 3:
        return f"-({draw(int_expr(depth - 1))})"
    if kind == 4:
        return f"size({draw(st.one_of(string_expr(depth - 1), list_expr(depth - 1)))})"
    if kind == 5:
        return (f"({draw(bool_expr(depth - 1))}) ? ({draw(int_expr(depth - 1))}) "
                f": ({draw(int_expr(depth - 1))})")
    return f"{draw(list_expr(depth - 1))}[{draw(st.integers(0, 3))}]"


@st.composite
def double_expr(draw: Draw, depth: int = 2) -> str:
    kind = draw(st.integers(0, 3)) if depth > 0 else draw(st.integers(0, 1))
    if kind == 0:
        return draw(st.sampled_from(["0.5", "1.5", "2.0", "1e3", "0.0"]))
    if kind == 1:
        return _attr(draw, "double")
    if kind == 2:
        op = draw(st.sampled_from(["+", "-", "*"]))
        return _bin(draw(double_expr(depth - 1)), op, draw(double_expr(depth - 1)))
    # EXCLUDED: division by zero (cel-python's x/0.0 is +inf regardless of sign).
    return _bin(draw(double_expr(depth - 1)), "/", draw(st.sampled_from(["2.0", "-0.5"])))


@st.composite
def string_expr(draw: Draw, depth: int = 2) -> str:
    kind = draw(st.integers(0, 3)) if depth > 0 else draw(st.integers(0, 1))
    if kind == 0:
        return json.dumps(draw(_STRS))
    if kind == 1:
        return _attr(draw, "string")
    if kind == 2:
        return _bin(draw(string_expr(depth - 1)), "+", draw(string_expr(depth - 1)))
    return (f"({draw(bool_expr(depth - 1))}) ? ({draw(string_expr(depth - 1))}) "
            f": ({draw(string_expr(depth - 1))})")


@st.composite
def list_expr(draw: Draw, depth: int = 2) -> str:
    kind = draw(st.integers(0, 4)) if depth > 0 else draw(st.integers(0, 1))
    if kind == 0:
        return json.dumps(draw(_INT_LISTS))
    if kind == 1:
        return _attr(draw, "list")
    if kind == 2:
        return _bin(draw(list_expr(depth - 1)), "+", draw(list_expr(depth - 1)))
    if kind == 3:
        return f"({draw(list_expr(depth - 1))}).map(x, x * {draw(st.integers(-2, 3))})"
    return f"({draw(list_expr(depth - 1))}).filter(x, {draw(int_predicate(depth - 1))})"


@st.composite
def int_predicate(draw: Draw, depth: int = 1) -> str:
    """A bool expression over the macro variable x (an int, or a string in mixed lists)."""
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    other = draw(st.one_of(st.integers(-2, 4).map(str), int_expr(max(depth - 1, 0))))
    pred = f"x {op} ({other})"
    if draw(st.booleans()):
        pred = f"({pred}) {draw(st.sampled_from(['&&', '||']))} ({draw(bool_expr(0))})"
    return pred


@st.composite
def bool_expr(draw: Draw, depth: int = 2) -> str:
    if depth <= 0:
        kind = draw(st.integers(0, 3))
    else:
        kind = draw(st.integers(0, 14))
    rel = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    if kind == 0:
        return draw(st.sampled_from(["true", "false"]))
    if kind == 1:
        # EXCLUDED: bare bool attributes in && / || (celpy leaks non-bool operands).
        attr = _attr(draw, "bool")
        return draw(st.sampled_from([f"{attr} == true", f"!{attr}", f"{attr} != false"]))
    if kind == 2:
        # EXCLUDED: has() with a possibly-missing or non-map parent.
        return f"has({draw(st.sampled_from(['a', 'b']))}.{draw(st.sampled_from(list(SCHEMA) + ['zz']))})"
    if kind == 3:
        return _bin(_attr(draw, "int"), draw(rel), str(draw(st.integers(-3, 9))))
    sub = depth - 1
    if kind == 4:
        return _bin(draw(int_expr(sub)), draw(rel), draw(int_expr(sub)))
    if kind == 5:
        return _bin(draw(double_expr(sub)), draw(rel), draw(double_expr(sub)))
    if kind == 6:
        return _bin(draw(string_expr(sub)), draw(rel), draw(string_expr(sub)))
    if kind == 7:
        op = draw(st.sampled_from(["&&", "||"]))
        return _bin(draw(bool_expr(sub)), op, draw(bool_expr(sub)))
    if kind == 8:
        return f"!({draw(bool_expr(sub))})"
    if kind == 9:
        container = draw(st.sampled_from([
            f"({draw(list_expr(sub))})", _attr(draw, "list_str"), _attr(draw, "map"),
            json.dumps(draw(st.lists(_STRS, min_size=1, max_size=3))),
        ]))
        item = draw(st.one_of(int_expr(sub), string_expr(sub)))
        return f"({item}) in {container}"
    if kind == 10:
        fn = draw(st.sampled_from(["startsWith", "endsWith", "contains"]))
        # EXCLUDED: a method on the result of `+` (celpy: no such overload) -> a plain receiver
        return f"({draw(string_expr(0))}).{fn}({draw(string_expr(sub))})"
    if kind == 11:
        pattern = draw(st.sampled_from(["^a", "b$", "a.b", "[ab]+@", "^$", "a|b"]))
        return f"({draw(string_expr(sub))}).matches({json.dumps(pattern)})"
    if kind == 12:
        macro = draw(st.sampled_from(["all", "exists", "exists_one"]))
        return f"({draw(list_expr(sub))}).{macro}(x, {draw(int_predicate(sub))})"
    if kind == 13:
        macro = draw(st.sampled_from(["all", "exists"]))
        return f"{_attr(draw, 'map')}.{macro}(x, x {draw(rel)} {json.dumps(draw(_STRS))})"
    # equality against null and across types (errors or false, both engines alike)
    # EXCLUDED: a list concatenation compared with a string: celpy says false (as CEL does), but
    # errs for a plain list, whose error the bridged equality (_celpy_eq) copies -> plain lists
    left = draw(st.one_of(int_expr(sub), string_expr(sub), list_expr(0)))
    right = draw(st.sampled_from(["null", '"a"', "1", "[1]"]))
    # EXCLUDED: list/map != null (celpy errors although == null is false).
    op = "==" if right == "null" else draw(st.sampled_from(["==", "!="]))
    return _bin(left, op, right)


def _outcome(fn: Callable[[Any], Any], act: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", fn(act)
    except CELEvalError as e:
        if str(e).startswith("reference interpreter failed"):
            return "crash", None
        return "error", None


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _celpy_eq(a: Any, b: Any) -> bool:
    """cel-python's ``==`` matrix: an error across numeric kinds and between a list or map and a
    non-null value, false for other distinct scalar kinds."""
    ka, kb = nf.kind(a), nf.kind(b)
    if ka == kb:
        if ka == "list":
            return len(a) == len(b) and _celpy_all(zip(a, b))
        if ka == "map":
            if a.keys() != b.keys():
                return False
            return _celpy_all((a[k], b[k]) for k in a)
        return bool(a == b)
    if ka in ("int", "uint", "double") or kb in ("int", "uint", "double"):
        raise nf.no_overload("_==_", a, b)
    if ka in ("list", "map") or kb in ("list", "map"):
        if a is None or b is None:
            return False
        raise nf.no_overload("_==_", a, b)
    return False


def _celpy_all(pairs: Iterable[tuple[Any, Any]]) -> bool:
    """CEL's ``&&`` over element comparisons that may fail: a false wins, then an error."""
    error: CELEvalError | None = None
    for x, y in pairs:
        try:
            if not _celpy_eq(x, y):
                return False
        except CELEvalError as e:
            error = error or e
    if error is not None:
        raise error
    return True


def _celpy_in(item: Any, container: Any) -> bool:
    """``in`` with celpy's equality: a match wins, then an error, then false."""
    if nf.kind(container) not in ("list", "map"):
        raise nf.no_overload("@in", item, container)
    error: CELEvalError | None = None
    for element in container:
        try:
            if _celpy_eq(element, item):
                return True
        except CELEvalError as e:
            error = error or e
    if error is not None:
        raise error
    return False


def _check(text: str, act: dict[str, Any]) -> None:
    tree = CELParser().parse(text)
    # celpy's equality and membership, looked up at compile time (and by ne)
    with mock.patch.object(nf, "eq", _celpy_eq), mock.patch.object(nf, "in_", _celpy_in):
        native = _outcome(compile_expression(tree, generate=False), act)
    closures = _outcome(compile_expression(tree, generate=False), act)
    generated = _outcome(compile_expression(tree), act)  # generated code, where a condition has some
    assert generated[0] == closures[0] and _same(generated[1], closures[1]), (text, act, generated, closures)
    reference = _outcome(compile_reference(tree), act)
    # cel-python itself crashed (a Python exception inside its interpreter, e.g. a macro over an
    # int even where `false &&` should absorb it): it gives no answer to compare against.
    # Which examples Hypothesis draws depends on the constants in the modules imported, so such
    # cases appear in some runs and not others; the test must not depend on their absence.
    assume(reference[0] != "crash")
    assert native[0] == reference[0], (text, act, native, reference)
    assert _same(native[1], reference[1]), (text, act, native, reference)


# derandomize=True: the same examples on every run, so CI is deterministic.
_SETTINGS = settings(max_examples=600, derandomize=True, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@_SETTINGS
@given(text=bool_expr(3), act=activations())
def test_bool_expressions_agree(text: str, act: dict[str, Any]) -> None:
    _check(text, act)


@_SETTINGS
@given(text=st.one_of(int_expr(3), double_expr(3), string_expr(3), list_expr(3)), act=activations())
def test_value_expressions_agree(text: str, act: dict[str, Any]) -> None:
    _check(text, act)


def test_generator_produces_both_values_and_errors() -> None:
    # Guards against a generator that only ever produces errors (which would agree trivially).
    outcomes: set[str] = set()

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(text=bool_expr(2), act=activations())
    def probe(text: str, act: dict[str, Any]) -> None:
        outcomes.add(_outcome(compile_expression(CELParser().parse(text)), act)[0])

    probe()
    assert outcomes == {"value", "error"}
