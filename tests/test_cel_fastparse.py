"""The hand-written CEL parser (ttlpolicy/cel/fastparse.py) gives lark's tree exactly, or nothing.

Differential: for every text the fast parser accepts, lark must parse it too, into a tree with
the same node names, children, token types and values, and positions (every ``meta`` field
the compiler, the analysis or cel-python could read). Texts come from a grammar of CEL (deep,
mostly valid, with odd spacing, newlines and comments) and from a soup of tokens that includes
everything the fast parser leaves to lark (escapes, exponents, reserved words, raw strings...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import lark
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy import load_policies, load_sources
from ttlpolicy.cel import parse as parse_module
from ttlpolicy.cel.fastparse import parse_common
from ttlpolicy.cel.parse import CelSyntaxError, _lark, parse

ROOT = Path(__file__).parent.parent
_META = ("empty", "line", "column", "start_pos", "end_line", "end_column", "end_pos")
_TOKEN = ("type", "value", "start_pos", "line", "column", "end_line", "end_column", "end_pos")


def assert_same_tree(fast: Any, slow: Any, path: str = "") -> None:
    if isinstance(slow, lark.Token) or isinstance(fast, lark.Token):
        assert isinstance(fast, lark.Token) and isinstance(slow, lark.Token), path
        for name in _TOKEN:
            assert getattr(fast, name) == getattr(slow, name), (path, name)
        return
    assert isinstance(fast, lark.Tree) and isinstance(slow, lark.Tree), path
    assert fast.data == slow.data, path
    for name in _META:
        assert getattr(fast.meta, name, "absent") == getattr(slow.meta, name, "absent"), (path, fast.data, name)
    assert len(fast.children) == len(slow.children), (path, fast.data)
    for i, (a, b) in enumerate(zip(fast.children, slow.children)):
        assert_same_tree(a, b, f"{path}/{fast.data}[{i}]")


def _check(text: str) -> bool:
    fast = parse_common(text)
    if fast is None:
        return False
    assert_same_tree(fast, _lark().parse(text))  # lark must accept what the fast parser accepts
    return True


# -- texts from a grammar -----------------------------------------------------------------------

_SPACE = st.sampled_from(["", " ", "  ", "\n", "\n  ", "\t", " // note\n", "\r\n"])
_NAMES = st.sampled_from(["a", "user", "risk", "_x", "in_x", "index", "trueish", "nullable", "has", "size", "b2"])
_LITERALS = st.sampled_from(['"managed"', "'x'", '""', '"a b // c"', "1", "0", "-1", "42", "1.5", "-0.25",
                             "true", "false", "null", "10.0"])


@st.composite
def _expression(draw: Any, depth: int = 3) -> str:
    sp = draw(_SPACE)
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        leaf = draw(st.sampled_from(["literal", "name", "path", "call"]))
        if leaf == "literal":
            return draw(_LITERALS)
        if leaf == "name":
            return draw(_NAMES)
        if leaf == "path":
            return ".".join(draw(st.lists(_NAMES, min_size=2, max_size=4)))
        return f"{draw(_NAMES)}({sp}{draw(_NAMES)}.{draw(_NAMES)}{sp})"
    sub = _expression(depth - 1)
    shape = draw(st.sampled_from(["binary", "binary", "unary", "paren", "list", "map", "ternary", "method",
                                  "index", "call"]))
    if shape == "binary":
        op = draw(st.sampled_from(["&&", "||", "==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*", "/", "%"]))
        return f"{draw(sub)}{sp}{op}{draw(_SPACE) or ' '}{draw(sub)}"
    if shape == "unary":
        return f"{draw(st.sampled_from(['!', '-', '!!', '- ']))}{draw(sub)}"
    if shape == "paren":
        return f"({sp}{draw(sub)}{sp})"
    if shape == "list":
        return "[" + f",{sp}".join(draw(st.lists(sub, max_size=3))) + "]"
    if shape == "map":
        return "{" + ", ".join(f"{draw(sub)}{sp}:{draw(sub)}" for _ in range(draw(st.integers(0, 2)))) + "}"
    if shape == "ternary":
        return f"{draw(sub)} ?{sp}{draw(sub)} : {draw(sub)}"
    if shape == "method":
        args = ", ".join(draw(st.lists(sub, max_size=2)))
        return f"{draw(sub)}.{draw(_NAMES)}({args})"
    if shape == "index":
        return f"{draw(sub)}[{draw(sub)}]"
    return f"{draw(_NAMES)}({', '.join(draw(st.lists(sub, max_size=3)))})"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expression())
def test_same_tree_as_lark_on_generated_expressions(text: str) -> None:
    _check(text)


# -- token soup, including what the fast parser leaves to lark ----------------------------------

_SOUP = st.sampled_from([
    "a", "b.c", "in", "if", "as", "true", "false", "null", "x1", ".", "(", ")", "[", "]", "{", "}", ",", ":", "?",
    "!", "-", "+", "*", "/", "%", "&&", "||", "==", "!=", "<", "<=", ">", ">=", "=", "&", "|", "1", "-1", "1.",
    ".5", "1e3", "0x1F", "7u", "1.5", '"s"', "'s'", '"a\\"b"', 'r"raw"', 'b"by"', '"""tri"""', "'''t'''",
    "// c", "\n", " ", "@", "\\", "Type{f: 1}", ".name", "f(", "\u00e9", '"\u00e9"'])


@settings(max_examples=400, deadline=None)
@given(st.lists(_SOUP, min_size=1, max_size=12), st.lists(st.sampled_from(["", " ", "\n"]), min_size=12,
                                                           max_size=12))
def test_same_tree_as_lark_or_none_on_token_soup(parts: list[str], gaps: list[str]) -> None:
    _check("".join(p + g for p, g in zip(parts, gaps)))


@pytest.mark.parametrize("text", [
    '-1 - -x.y(1, "a")[0] in [true, null]', "a ? b : c ? d : e", "1.5 + 2 * 3 % 4 / x", "!a && !!b || c",
    'a &&\n  b.c(  ) == {"a": 1, 2: [ ]}', "f()", "(a)", "a.b.c[1][2].d(e)", "'x' in y",
    "1 <= 2 >= 3 != 4 == 5 > 6 < 7", "a // comment", "true", "false || x", "null", "- -1",
    'has(device.platform) && device.platform in ["ios", "macos"]', '"engineering" in user.groups',
])
def test_common_shapes_are_parsed_fast(text: str) -> None:
    assert _check(text)


@pytest.mark.parametrize("text", ["1.", "1e3", "0x1F", "7u", 'r"x"', '"a\\nb"', '"""x"""', "if", "x.in",
                                  "T{a: 1}", ".a", "a &", "a ==", "(a", "a b"])
def test_everything_else_is_left_to_lark(text: str) -> None:
    assert parse_common(text) is None


def test_syntax_errors_are_still_lark_s() -> None:
    with pytest.raises(CelSyntaxError) as error:
        parse('device.trust == "managed" &&')
    assert error.value.issue.message.startswith("unexpected end")


def _conditions_parsed_while(load: Any) -> list[tuple[str, bool]]:
    seen: list[tuple[str, bool]] = []

    def recording(text: str) -> lark.Tree | None:
        tree = parse_common(text)
        seen.append((text, tree is not None))
        return tree

    with mock.patch.object(parse_module, "parse_common", recording):
        load()
    return seen


def test_bundled_examples_and_cases_never_need_lark() -> None:
    """The fast parser is what loads every policy we ship and every tests/cases policy."""
    seen = _conditions_parsed_while(lambda: load_policies(ROOT / "policies"))
    for file in sorted((ROOT / "tests" / "cases").glob("*.yaml")):
        spec = yaml.safe_load(file.read_text())
        docs = spec.get("policies") or [spec["policy"]]
        seen += _conditions_parsed_while(
            lambda: load_sources({f"{d['name']}.yaml": yaml.safe_dump(d) for d in docs}))
    assert len(seen) > 50
    assert [text for text, fast in seen if not fast] == []
