"""Generated conditions (ttlpolicy.cel.codegen) against the closures they stand in for.

The generated function must give the same bool or raise the same error (type and message) as
the native closure of the whole condition, on every activation: present or missing attributes,
values of the declared type, of another numeric kind (int vs double), of another type, parents
that are not maps. The closures themselves are checked against cel-python elsewhere
(test_cel_native.py, test_cel_differential.py, which also run through the generated code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy.cel import codegen
from ttlpolicy.cel.native import _Compiler, leaf_parts, compile_expression
from ttlpolicy.cel.parse import parse

Draw = Callable[[st.SearchStrategy[Any]], Any]

# Few distinct values, most of them equal to a literal below, so that comparisons often meet
# their boundary (1 < 1, 1 <= 1) and every type mismatch (1 vs 1.0, "1" vs 1) occurs.
VALUES = st.sampled_from([None, True, False, 0, 1, 2, 0.5, 1.0, 3.0, "a", "corp", "", ["a"], ["b", "a"], ["b"], [],
                          ["b", 1], [1, "a"], {"x": 1}, {"a": 2}])
LITERALS = st.sampled_from(['"a"', '"corp"', "1", "0", "2", "0.5", "1.0", "true", "false", "null",
                            '["a", "corp"]', "[1, 2]", '["a", 1]', "[]", "1u"])
FIELDS = st.sampled_from(["x", "y"])


@st.composite
def paths(draw: Draw) -> str:
    top = draw(st.sampled_from(["a", "b", "t"]))
    return top if top == "t" else f"{top}.{draw(FIELDS)}"


@st.composite
def leaf_tests(draw: Draw) -> str:
    kind = draw(st.integers(-4, 4))
    if kind == -4:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"size({draw(paths())}) {op} {draw(st.sampled_from(['0', '1', '2', '1.0', '-1']))}"
    if kind <= 0:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"]))
        return f"{draw(paths())} {op} {draw(LITERALS)}"
    if kind == 1:
        return f"has({draw(st.sampled_from(['a', 'b', 'a.x']))}.{draw(FIELDS)})"
    if kind == 2:
        return draw(paths())
    if kind == 3:
        left = draw(st.sampled_from(['"a"', "1", "a.x", "t"]))
        return f"{left} in {draw(paths())}"
    return draw(st.sampled_from(["true", "false"]))


@st.composite
def conditions(draw: Draw, depth: int = 3) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf_tests())
    shape = draw(st.integers(0, 2))
    if shape == 0:
        return f"!({draw(conditions(depth - 1))})"
    op = "&&" if shape == 1 else "||"
    return f"({draw(conditions(depth - 1))}) {op} {draw(conditions(depth - 1))}"


@st.composite
def activations(draw: Draw) -> dict[str, Any]:
    act: dict[str, Any] = {}
    for top in ("a", "b"):
        roll = draw(st.integers(0, 9))
        if roll == 0:
            continue  # missing namespace
        if roll == 1:
            act[top] = draw(VALUES)  # not a map
            continue
        act[top] = {f: draw(VALUES) for f in ("x", "y") if draw(st.integers(0, 4))}
    if draw(st.booleans()):
        act["t"] = draw(VALUES)
    return act


def _outcome(fn: Callable[[Any], Any], act: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", fn(act)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=conditions(), acts=st.lists(activations(), min_size=1, max_size=8))
def test_generated_condition_equals_its_closure(text: str, acts: list[dict[str, Any]]) -> None:
    tree = parse(text)
    try:
        closure = _Compiler().compile(tree).fn
    except Exception:  # noqa: BLE001 - refused at lint time (e.g. has(a)): nothing to compare
        return
    fast = compile_expression(tree)
    for act in acts:
        expected, got = _outcome(closure, act), _outcome(fast, act)
        assert got == expected and type(got[1]) is type(expected[1]), (text, act, expected, got)


def test_common_shapes_are_generated() -> None:
    for text in ['device.trust == "unmanaged"', 'tier in ["finance", "government"]', "user.risk >= 0.9",
                 'has(client.type) && client.type == "public"', '!(location.zone in ["corporate", "vpn"])',
                 'resource.sensitivity == "restricted" && !user.mfa', '"admins" in user.groups',
                 "size(location.expected_countries) > 0", "location.country in location.expected_countries"]:
        assert compile_expression(parse(text)).__name__ == "condition", text


def test_well_typed_contexts_never_reach_the_closure() -> None:
    def closure(act: Any) -> Any:
        raise AssertionError("the generated code fell back to the closure")

    act = {"device": {"trust": "managed"}, "tier": "finance", "user": {"risk": 0.95, "mfa": False,
           "groups": ["staff", "admins"]}, "client": {"type": "public"}, "location": {"zone": "vpn",
           "country": "DE", "expected": ["FR", "DE"]}, "resource": {"sensitivity": "restricted"}}
    cases = {'device.trust == "unmanaged"': False, 'tier in ["finance", "government"]': True,
             "user.risk >= 0.9": True, 'has(client.type) && client.type == "public"': True,
             '!(location.zone in ["corporate", "vpn"])': False, '"admins" in user.groups': True,
             '"oncall" in user.groups || has(user.department)': False,
             'resource.sensitivity == "restricted" && !user.mfa': True,
             "has((client.type)) && has(client.name)": False, "location.country in location.expected": True,
             'location.zone in location.expected || "DE" in user.groups': False,
             "size(user.groups) > 1": True, "size(user.groups) == 3": False, "size(location.country) <= 2": True}
    for text, expected in cases.items():
        fn = codegen.generate(parse(text), closure, leaf_parts)
        assert fn is not None and fn(act) is expected, text


def test_missing_attribute_error_is_unchanged() -> None:
    fn = compile_expression(parse('has(user.department) && user.department == "contractor"'))
    assert fn({"user": {"department": "contractor"}}) is True
    assert fn({"user": {}}) is False
    assert fn({"user": {"department": 3}}) is False  # CEL equality across kinds is false, not an error
    ordered = compile_expression(parse('has(user.department) && user.department > "m"'))
    for fn, act, message in ((fn, {}, "no such attribute 'user'"),
                             (ordered, {"user": {"department": 3}}, "no such overload")):
        try:
            fn(act)
        except Exception as exc:  # noqa: BLE001
            assert str(exc).startswith(message), str(exc)
        else:  # pragma: no cover
            raise AssertionError(act)


def test_no_user_text_in_generated_source() -> None:
    # A string literal that looks like code stays data (it is passed through the constants table).
    fn = compile_expression(parse('a.x == "__import__(\'os\').system(\'false\')" || a.y == "\\" or True or \\""'))
    assert fn({"a": {"x": "no", "y": "no"}}) is False


def test_parser_cache_is_used_only_when_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache file is unpickled, so a directory or file others can write is never used."""
    import os

    from ttlpolicy.cel import parse as cel_parse

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TTLPOLICY_NO_PARSER_CACHE", raising=False)
    path = cel_parse._cache_file()
    assert isinstance(path, str) and path.startswith(str(tmp_path / "ttlpolicy"))
    assert oct(os.stat(tmp_path / "ttlpolicy").st_mode & 0o777) == "0o700"
    os.chmod(tmp_path / "ttlpolicy", 0o777)
    assert cel_parse._cache_file() is False
    os.chmod(tmp_path / "ttlpolicy", 0o700)
    Path(path).write_bytes(b"planted")
    os.chmod(path, 0o666)
    assert cel_parse._cache_file() is False
    monkeypatch.setenv("TTLPOLICY_NO_PARSER_CACHE", "1")
    assert cel_parse._cache_file() is False
