"""Native CEL backend vs cel-python (the reference) on a hand-picked corpus of tricky cases.

Run: PYTHONPATH=src python -m pytest tests/test_cel_native.py -q
"""

from __future__ import annotations

import datetime
import math
import threading
from typing import Any, Callable

import pytest

from ttlpolicy.cel import native_functions as nf
from ttlpolicy.cel.native import CELEvalError, UnsupportedExpression, _Compiler, compile_expression
from ttlpolicy.cel.parse import parse
from ttlpolicy.cel.reference import compile_reference

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 3, 1, 13, 14, 15, 678000, tzinfo=UTC)
ACT: dict[str, Any] = {
    "user": {"risk": 0.7, "level": 3, "name": "alice@corp.com", "roles": ["dev", "admin"],
             "tags": {"team": "core"}, "manager": None, "active": True},
    "device": {"trust": "unmanaged", "os": "linux"},
    "location": {"zone": "home"},
    "nums": [3, 1, 2],
    "mixed": [1, "a", 3],
    "now": T0,
    "ttl": datetime.timedelta(hours=1, minutes=30),
    "flag": True,
    "s": "héllo",
    "n": None,
}


def _parse(text: str) -> Any:
    return parse(text)  # the parser policies use (cel-python's grammar and tree)


def _outcome(fn: Callable[[Any], Any], act: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", fn(act)
    except CELEvalError:
        return "error", None


def same(a: Any, b: Any) -> bool:
    """Type-strict equality (Python's 1 == 1.0 == True is not good enough here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# Each entry: expression, activation (None -> ACT). Native must agree with the reference.
CORPUS: list[tuple[str, dict[str, Any] | None]] = [
    # numbers, overflow, division
    ("1 + 2 * 3 - 4 / 2 % 3", None), ("-7 / 2", None), ("-7 % 2", None), ("7 % -2", None),
    ("9223372036854775807 + 1", None), ("-9223372036854775807 - 1", None),
    ("-9223372036854775807 - 2", None), ("-(-9223372036854775807 - 1)", None),
    ("9223372036854775807 * 2", None), ("5 / 0", None), ("5 % 0", None), ("5u / 0u", None),
    ("0u - 1u", None), ("18446744073709551615u + 1u", None), ("7u / 2u + 3u % 2u", None),
    ("1 + 1.0", None), ("5.0 % 2.0", None), ("0.1 + 0.2", None), ("1e3 / 4.0", None),
    ("-(5)", None), ("--5", None), ("-1.5", None), ("-\"a\"", None), ("-(1u)", None),
    ("9223372036854775808", None), ("0x1F + -0x1F", None), (".5 + 1.", None),
    # equality / ordering across types
    ("null == null", None), ("null == \"a\"", None),
    ("[1] == null", None), ("{\"a\": 1} == null", None),
    ("[1, 2] == [1, 2]", None), ("[1, \"a\"] == [2, 3]", None),
    ("{\"a\": 1} == {\"a\": 1}", None), ("{\"a\": 1, \"b\": 2} != {\"a\": \"x\", \"b\": 3}", None), ("\"a\" < \"b\"", None),
    ("b\"a\" < b\"b\"", None), ("false < true", None), ("[1] < [2]", None),
    ("user.manager == null", None), ("user.tags == {\"team\": \"core\"}", None),
    # membership
    ("1 in [1, 2]", None), ("\"a\" in [1, \"a\"]", None), ("\"a\" in {\"a\": 1}", None), ("null in [null]", None),
    ("\"admin\" in user.roles", None), ("\"root\" in user.roles", None),
    ("device.os in [\"linux\", \"mac\"]", None), ("user.level in [1, 2, 3]", None),
    ("\"team\" in user.tags", None), ("user.name in user.roles", None), ("user.level in nums", None),
    # attributes, indexing, presence
    ("user.risk", None), ("user.nope", None), ("nobody.risk", None), ("nobody", None),
    ("user.name.first", None), ("user.manager.name", None), ("nums[0]", None), ("nums[3]", None),
    ("nums[0u]", None), ("nums[\"x\"]", None), ("user[\"risk\"]", None),
    ("user[\"zz\"]", None), ("user.tags[\"team\"]", None), ("{\"a\": 1}.a", None),
    ("{1: \"x\"}[1]", None), ("{\"a\": 1, \"a\": 2}", None), ("[1, 1/0]", None),
    ("{\"a\": 1/0}", None), ("has(user.risk)", None), ("has(user.nope)", None),
    ("has(user.tags.team)", None), ("has(user.tags.zz)", None),
    ("nums[user.level - 2]", None), ("[10, 20, 30][user.level - 2]", None), ("{1: \"x\"}[true]", None),
    ("{0: \"z\"}[false]", None), ("{1: \"x\"}[2]", None), ("has((user.risk))", None),
    ("has((user.tags).team)", None), ("{}", None), ("[]", None),
    ("size({})", None), ("[user.level, user.risk]", None), ("{\"a\": user.level}", None),
    ("{user.name: 1}", None), ("2 * user.level", None),
    # logic with error absorption
    ("1/0 == 1 && false", None), ("false && 1/0 == 1", None), ("true && 1/0 == 1", None),
    ("1/0 == 1 || true", None), ("1/0 == 1 || false", None), ("true || 1/0 == 1", None),
    ("user.nope > 1 && user.risk < 0.5", None), ("user.nope > 1 || user.risk > 0.5", None),
    ("flag && user.active && !false", None), ("!(1/0 == 1)", None), ("!1", None),
    ("true ? 1 : 1/0", None), ("false ? 1/0 : 2", None), ("(1/0 == 1) ? 1 : 2", None),
    ("1 ? 1 : 2", None), ("null ? 1 : 2", None), ("user.risk > 0.5 ? \"high\" : \"low\"", None),
    ("true && false || true && true", None),
    ("!user.active", None), ("!(user.risk > 0.5)", None), ("!flag ? 1 : 2", None),
    ("user.risk > 0.5 ? user.name : user.level", None), ("user.risk < 0.5 ? user.name : user.level", None),
    ("user.active && flag", None), ("user.active && !flag", None), ("!user.active || flag", None),
    ("!user.active || !flag", None), ("user.active && flag && user.level > 2", None),
    ("user.active && flag && user.level > 5", None), ("user.active && user.nope > 1 && !flag", None),
    ("user.level > 5 || user.nope || flag", None), ("user.level > 5 || user.nope || !flag", None),
    ("!user.active || !flag || user.level < 3", None),
    # macros
    ("[1, 2, 3].all(x, x > 0)", None), ("[1, \"a\", 3].all(x, x > 2)", None),
    ("[1, \"a\", 3].all(x, x > 0)", None), ("[1, \"a\", 3].exists(x, x > 2)", None),
    ("[1, \"a\", 3].exists(x, x > 5)", None), ("[1, 2, 3].exists_one(x, x > 2)", None),
    ("[1, \"a\", 3].exists_one(x, x > 2)", None), ("nums.map(x, x * 2)", None),
    ("nums.filter(x, x > 1)", None), ("mixed.filter(x, x > 1)", None),
    ("mixed.map(x, x + 1)", None), ("user.tags.all(k, k != \"c\")", None),
    ("user.tags.map(k, k + \"x\")", None), ("[].all(x, x)", None), ("[].exists(x, x)", None),
    ("nums.map(x, nums.filter(y, y < x))", None), ("user.roles.exists(r, r == \"admin\")", None),
    ("nums.all(user, user > 0)", None), ("missing.all(x, x > 0)", None),
    ("[1, 2, 3].exists_one(x, x > 1)", None), ("nums.exists(x, x > 2)", None), ("nums.all(x, x > 1)", None),
    ("user.tags.exists(k, k == \"team\")", None),
    # strings, bytes, conversions
    ("size(\"abc\") + \"abc\".size() + size(nums) + size(user.tags)", None), ("size(s)", None),
    ("size(1)", None), ("size(b\"ab\")", None), ("user.name.startsWith(\"alice\")", None),
    ("user.name.endsWith(\"@corp.com\")", None), ("user.name.contains(\"@\")", None),
    ("\"abc\".startsWith(1)", None), ("user.name.matches(\"^[a-z]+@corp\\\\.com$\")", None),
    ("matches(\"abc\", \"b\")", None), ("\"\\x41\\u00e9\\101\\n\"", None), ("r\"\\n\"", None),
    ("b\"\\x41\" + b\"b\"", None), ("\"a\" + \"b\"", None), ("[1] + [2]", None), ("[1] + \"a\"", None),
    ("int(\"12\") + int(\"-3\")", None), ("int(\"1.5\")", None), ("int(1.9) + int(-1.9)", None),
    ("int(1e30)", None), ("int(1u)", None), ("uint(5)", None), ("uint(-1)", None),
    ("double(1)", None), ("double(\"1.5\")", None), ("double(\"x\")", None), ("string(1)", None),
    ("string(1.5)", None), ("string(b\"ab\")", None), ("bool(\"true\")", None), ("bool(\"x\")", None),
    # timestamps and durations
    ("timestamp(\"2020-01-01T00:00:00Z\") + duration(\"1h\")", None),
    ("duration(\"1h\") + timestamp(\"2020-01-01T00:00:00Z\")", None),
    ("timestamp(\"2020-01-01T01:00:00Z\") - timestamp(\"2020-01-01T00:00:00Z\")", None),
    ("now - duration(\"1h30m\") < now", None), ("now + ttl > now", None),
    ("duration(\"1h\") > duration(\"1m\")", None), ("duration(\"-1.5h\")", None),
    ("duration(\"1x\")", None), ("duration(\"\")", None), ("timestamp(\"garbage\")", None),
    ("timestamp(\"2020-01-01T00:00:00+02:00\") == timestamp(\"2019-12-31T22:00:00Z\")", None),
    ("now == ttl", None), ("now < ttl", None), ("string(ttl)", None),
    ("int(now)", None), ("now.getHours()", None), ("now.getHours(\"America/New_York\")", None),
    ("now.getHours(\"+05:30\")", None), ("now.getHours(\"bogus\")", None),
    ("now.getDayOfWeek()", None), ("now.getDayOfYear()", None), ("now.getMonth()", None),
    ("now.getDate()", None), ("now.getDayOfMonth()", None), ("now.getFullYear()", None),
    ("now.getMinutes() + now.getSeconds() + now.getMilliseconds()", None),
    ("ttl.getHours()", None), ("ttl.getMinutes()", None), ("ttl.getSeconds()", None),
    ("getHours(now)", None), ("-ttl", None),
    # the headline policy shape
    ("device.trust == \"unmanaged\" && user.risk > 0.5 && !(location.zone in [\"corp\", \"vpn\"])",
     None),
    ("device.trust == \"unmanaged\" && user.risk > 0.5", {"device": {"trust": "unmanaged"}}),
    ("device.trust == \"managed\" && user.risk > 0.5", {"device": {"trust": "unmanaged"}}),
    ("user.risk > 0.5", {"user": {"risk": "high"}}), ("user.risk > 0.5", {"user": "x"}),
]


# Every case runs twice: as compiled (a condition as generated code, which hands anything
# unusual to its closure) and as the closures alone (what a policy's generated program calls).
PATHS = pytest.mark.parametrize("generate", [True, False], ids=["generated", "closures"])


@PATHS
@pytest.mark.parametrize(("text", "act"), CORPUS, ids=[c[0][:60] for c in CORPUS])
def test_native_matches_reference(text: str, act: dict[str, Any] | None, generate: bool) -> None:
    tree = _parse(text)
    activation = ACT if act is None else act
    native = _outcome(compile_expression(tree, generate), activation)
    reference = _outcome(compile_reference(tree), activation)
    assert native[0] == reference[0], (native, reference)
    assert same(native[1], reference[1]), (native, reference)


EXPECTED: list[tuple[str, Any]] = [
    ("device.trust == \"unmanaged\" && user.risk > 0.5 && !(location.zone in [\"corp\", \"vpn\"])",
     True),
    ("-7 / 2", -3), ("-7 % 2", -1), ("7u / 2u", 3), ("0.1 + 0.2", 0.1 + 0.2),
    ("false && 1/0 == 1", False), ("1/0 == 1 || true", True), ("has(user.nope)", False),
    ("has(user.tags.team)", True), ("nums.map(x, x * 2)", [6, 2, 4]), ("nums.filter(x, x > 1)", [3, 2]),
    ("size(s)", 5), ("\"\\x41\\u00e9\\101\\n\"", "AéA\n"), ("r\"\\n\"", "\\n"), ("b\"\\x41\"", b"A"),
    ("int(\"31\")", 31), ("string(1.5)", "1.5"), ("string(true)", "true"),
    ("timestamp(\"2020-01-01T00:00:00Z\") + duration(\"1h\")",
     datetime.datetime(2020, 1, 1, 1, tzinfo=UTC)),
    ("duration(\"1h30m\")", datetime.timedelta(minutes=90)), ("now.getHours(\"America/New_York\")", 8),
    ("now.getDayOfWeek()", 5), ("now.getDayOfYear()", 60), ("ttl.getMinutes()", 90),
    ("1u + 2u", 3), ("{\"a\": [1u]}", {"a": [1]}), ("user.roles.exists(r, r == \"admin\")", True),
    ("5.0 / 0.0", math.inf), ("-5.0 / 0.0", -math.inf), ("string(now)", "2024-03-01T13:14:15.678Z"),
    ("flag ? 2u : !flag", 2), ("{}", {}), ("[1, 2, 3].exists_one(x, x > 1)", False),
]


@PATHS
@pytest.mark.parametrize(("text", "expected"), EXPECTED, ids=[e[0][:60] for e in EXPECTED])
def test_expected_values(text: str, expected: Any, generate: bool) -> None:
    result = compile_expression(_parse(text), generate)(ACT)
    assert same(result, expected), result
    if type(result) is int:
        assert type(result) is int  # uint results come back as plain int


# Where cel-python is wrong (or lenient beyond CEL) the native backend deliberately differs.
# (expression, activation, native outcome: value or CELEvalError). Each is also checked to
# really differ from the reference so this list cannot silently go stale.
KNOWN_DIFFERENCES: list[tuple[str, dict[str, Any], Any]] = [
    ("1.0 + 1", {}, CELEvalError),  # celpy: 2.0 (but 1 + 1.0 is an error)
    ("1u + 1", {}, CELEvalError),  # celpy: 2u; 1 + 1u gives int 2
    ("true == 1", {}, False),  # celpy: true (bool is an int subclass); CEL: different kinds
    ("true + 1", {}, CELEvalError),  # celpy: 2
    ("true < 1", {}, CELEvalError),  # celpy: false
    ("1 && true", {}, CELEvalError),  # celpy returns 1: non-bool operands leak through && / ||
    ("\"a\" in \"abc\"", {}, CELEvalError),  # celpy iterates the string's characters
    ("\"abc\".all(c, c != \"z\")", {}, CELEvalError),  # same: macros over a string
    ("[1, 2].filter(x, 1)", {}, CELEvalError),  # celpy uses Python truthiness of non-bools
    ("[1, 2].exists_one(x, 1)", {}, CELEvalError),
    ("a[-1]", {"a": [1, 2]}, CELEvalError),  # celpy: Python negative indexing -> 2
    ("\"abc\"[0]", {}, CELEvalError),  # celpy indexes strings
    ("has(x.c)", {}, CELEvalError),  # celpy: false for ANY error in the operand (undeclared x)
    ("has(a.b.c)", {"a": {"b": 1}}, CELEvalError),  # celpy: false; a.b is not a map
    ("has(a.b.c)", {"a": {}}, CELEvalError),  # celpy: false; a.b is missing
    ("size(null)", {}, CELEvalError),  # celpy: 0
    ("string(true)", {}, "true"),  # celpy: "True"
    ("string(null)", {}, CELEvalError),  # celpy: "None"
    ("bool(1)", {}, CELEvalError),  # celpy: true
    ("int(null)", {}, CELEvalError),  # celpy: 0
    ("int(true)", {}, CELEvalError),  # celpy: 1; CEL converts to int from uint, double, string, timestamp
    ("uint(true)", {}, CELEvalError),  # celpy: 1u
    ("duration(\"1h\") * 2", {}, CELEvalError),  # celpy: 2h (no such CEL overload)
    ("{1.5: \"x\"}", {}, CELEvalError),  # double map keys are not allowed in CEL
    ("[1] != null", {}, True),  # celpy: error, although [1] == null is false
    ("-5.0 / 0.0", {}, -math.inf),  # celpy: +inf for every x / 0.0
    ("[1].contains(1)", {}, CELEvalError),  # celpy: list.contains() (not CEL)
    ("(\"a\" + \"b\").contains(\"a\")", {}, True),  # celpy: no such overload on a concatenation
    ("timestamp(\"2020-01-01\")", {}, CELEvalError),  # celpy (pendulum) accepts a bare date; not RFC 3339
    # CEL equality is heterogeneous at run time (langdef "Equality"): numbers compare by value
    # across int/uint/double, values of different kinds are unequal. celpy errs on all of these.
    ("1 == 1.0", {}, True), ("1u == 1", {}, True), ("null == 1", {}, False), ("1 == null", {}, False),
    ("\"a\" == 1", {}, False), ("\"a\" != 1", {}, True), ("[1, 2] == [1, \"a\"]", {}, False),
    ("[1] == 1", {}, False), ("{\"a\": 1} == {\"a\": \"x\"}", {}, False), ("\"a\" in [1, 2]", {}, False),
    ("1 in {\"a\": 1}", {}, False), ("user.risk in [\"a\"]", ACT, False),
    # ... and so is ordering across numeric kinds (celpy: an error when the left operand is an int).
    ("1 < 1.5", {}, True), ("2 < 1u", {}, False),
    # Timestamps keep their fraction in string() (celpy drops it); a duration's
    # getMilliseconds() is its milliseconds component (celpy: the whole duration in ms).
    ("string(now)", ACT, "2024-03-01T13:14:15.678Z"), ("ttl.getMilliseconds()", ACT, 0),
    # && and || take bools: a non-bool operand that nothing absorbs is an error (celpy returns it)
    ("true && 1", {}, CELEvalError), ("false || 1", {}, CELEvalError), ("1 || false", {}, CELEvalError),
    ("true && 1 && true", {}, CELEvalError), ("false || \"a\" || false", {}, CELEvalError),
    ("a.x && a.y", {"a": {"x": True, "y": 1}}, CELEvalError),
    # so do the macros' predicates (celpy: truthiness, or the value itself)
    ("[1].all(x, x)", {}, CELEvalError), ("[1].exists(x, 1)", {}, CELEvalError),
    # a map's keys compare as CEL values: true is not 1 (celpy, as Python, finds the key true for 1)
    ("{true: \"x\"}[1]", {}, CELEvalError), ("m[1]", {"m": {True: "y"}}, CELEvalError),
    ("size(a.x) == true", {"a": {"x": ["q"]}}, False), ("true in [1, 2]", {}, False),
    ("[1] in [[1.0]]", {}, True),
    # int() and uint() of a string read base 10 only (Go's CEL); celpy reads "0x1f" as hexadecimal
    ("int(\"0x1f\")", {}, CELEvalError), ("uint(\"0x1f\")", {}, CELEvalError),
    # a whole double indexes a list as the int it equals (celpy: no such overload)
    ("nums[1.0]", ACT, 1),
]


@PATHS
@pytest.mark.parametrize(("text", "act", "native"), KNOWN_DIFFERENCES,
                         ids=[k[0][:60] for k in KNOWN_DIFFERENCES])
def test_known_differences(text: str, act: dict[str, Any], native: Any, generate: bool) -> None:
    tree = _parse(text)
    outcome = _outcome(compile_expression(tree, generate), act)
    if native is CELEvalError:
        assert outcome[0] == "error", outcome
    else:
        assert outcome[0] == "value" and same(outcome[1], native), outcome
    assert _outcome(compile_reference(tree), act) != outcome


HAS_ARGUMENT = "has() requires a field selection argument, e.g. has(a.b)"
# Refused when the policy is compiled (lint), at the position of the offending part, with the
# whole message (expression, line, column, message).
UNSUPPORTED: list[tuple[str, int, int, str]] = [
    ("type(1) == int", 1, 1, "type() is not part of the policy language: an attribute always has its declared type "
     "(a context with another type is refused before evaluation); use has() to test presence"),
    ("x &&\n  dyn(y)", 2, 3, "dyn() is not part of the policy language: every attribute has a declared type, so "
     "there is no dynamic value to relax the type checker for; compare values of the same type"),
    ("a.b.frobnicate(1)", 1, 5, "unsupported method 'frobnicate'"),
    ("[1].map(x, x > 0, x)", 1, 5, "map() macro takes exactly 2 arguments here"),
    ("Msg{a: 1}", 1, 1, "message construction is not supported"),
    ("has(a)", 1, 1, HAS_ARGUMENT),
    ("has()", 1, 1, HAS_ARGUMENT),
    ("has(a.b, a.c)", 1, 1, HAS_ARGUMENT),
    ("has([a.b])", 1, 1, HAS_ARGUMENT),  # contains a selection, is none: was has(a.b) (a value where CEL errs)
    ("has(a.b + 1)", 1, 1, HAS_ARGUMENT),
    ("\"x\".matches(\"(a)\\\\1\")", 1, 13, "invalid regex (RE2 syntax): invalid escape sequence: \\1"),
    ("\"x\".matches(\"[\")", 1, 13, "invalid regex (RE2 syntax): missing ]: ["),
    ("\"x\".matches(\"(?=a)\")", 1, 13, "invalid regex (RE2 syntax): invalid perl operator: (?="),
    # a constant pattern is checked at compile time however it is written
    ("a.matches(false ? \"a\" : \"[\")", 1, 11, "invalid regex (RE2 syntax): missing ]: ["),
    ("a.matches(true ? \"[\" : \"a\")", 1, 11, "invalid regex (RE2 syntax): missing ]: ["),
    ("[1].reduce(r, i, 0, r + i)", 1, 5, "unsupported method 'reduce'"),
    ("[1].all(a.b, a.b > 0)", 1, 9, "all() macro variable must be an identifier"),
    ("[1].exists(1, true)", 1, 12, "exists() macro variable must be an identifier"),
    (".x", 1, 1, "leading-dot (root scope) identifiers are not supported"),
    ("1 + .f(1)", 1, 5, "leading-dot (root scope) function calls are not supported"),
    ("foo(1)", 1, 1, "unsupported function 'foo'"),
    ("int(1, 2)", 1, 1, "int() takes exactly one argument"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), UNSUPPORTED,
                         ids=[u[0][:40] for u in UNSUPPORTED])
def test_unsupported(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(UnsupportedExpression) as info:
        compile_expression(_parse(text))
    assert (info.value.line, info.value.column, info.value.message) == (line, column, message)


# Evaluation errors say what went wrong in CEL's terms: the operator and the kinds of its
# operands, the attribute path, the key or index; never a value from the context.
ERROR_MESSAGES: list[tuple[str, dict[str, Any] | None, str]] = [
    ("nums[\"x\"]", None, "no such overload: _[_] applied to (list, string)"),
    ("nums[3]", None, "index out of range: 3"),
    ("nums[-1]", None, "index out of range: -1"),
    ("s[0]", None, "no such overload: _[_] applied to (string, int)"),
    ("user[\"zz\"]", None, "no such key: 'zz'"),
    ("user[1.5]", None, "no such key: 1.5"), ("nums[1.5]", None, "invalid list index: 1.5 is not a whole number"),
    ("{1: \"x\"}[2]", None, "no such key: 2"),
    ("double(\"1e400\")", None, "double() conversion error: out of range"),
    ("int(\"0x1f\")", None, "int() conversion error"),
    ("{1: \"x\"}[true]", None, "no such key: True"),
    ("m[\"a\"]", {"m": {"b": 1}}, "no such key: 'a'"),
    ("user.nope", None, "no such attribute 'user.nope'"),
    ("user.tags.zz", None, "no such attribute 'user.tags.zz'"),
    ("user.name.first", None, "type 'string' does not support field selection ('user.name.first')"),
    ("{\"a\": 1}.b", None, "no such attribute 'b'"),
    ("[1].a", None, "type 'list' does not support field selection ('a')"),
    ("has(user.level.x)", None, "no such overload: has applied to (int)"),
    ("has(nobody.x)", None, "no such attribute 'nobody'"),
    ("\"abc\".all(c, true)", None, "no such overload: all applied to (string)"),
    ("user.level.exists_one(c, true)", None, "no such overload: exists_one applied to (int)"),
    ("nums.all(x, x)", None, "no such overload: all applied to (int)"),
    ("nums.exists(x, \"a\")", None, "no such overload: exists applied to (string)"),
    ("nums.exists(x, x > 5 || x)", None, "no such overload: _||_ applied to (int)"),
    ("nums.exists_one(x, 1)", None, "no such overload: exists_one applied to (int)"),
    ("nums.filter(x, 1.5)", None, "no such overload: filter applied to (double)"),
    ("user.level ? 1 : 2", None, "no such overload: _?_:_ applied to (int)"),
    ("!user.level", None, "no such overload: !_ applied to (int)"),
    ("user.level && flag", None, "no such overload: _&&_ applied to (int)"),
    ("flag && user.name", None, "no such overload: _&&_ applied to (string)"),
    ("user.level || !flag", None, "no such overload: _||_ applied to (int)"),
    ("!flag || user.name", None, "no such overload: _||_ applied to (string)"),
    ("flag && user.level && flag", None, "no such overload: _&&_ applied to (int)"),
    ("!flag || user.name || !flag", None, "no such overload: _||_ applied to (string)"),
    # the first error wins when nothing absorbs it
    ("user.level && user.nope", None, "no such overload: _&&_ applied to (int)"),
    ("user.nope && user.level", None, "no such attribute 'user.nope'"),
    ("flag && user.nope && user.level", None, "no such attribute 'user.nope'"),
    ("{1.5: \"x\"}", None, "unsupported map key type 'double'"),
    ("{user.risk: \"x\"}", None, "unsupported map key type 'double'"),
    ("{\"a\": 1, \"a\": 2}", None, "duplicate map key"),
    ("{user.name: 1, \"alice@corp.com\": 2}", None, "duplicate map key"),
    # operators, conversions and functions: the operator or function and its operands' kinds
    ("1 + 1.0", None, "no such overload: _+_ applied to (int, double)"),
    ("1 - 1.0", None, "no such overload: _-_ applied to (int, double)"),
    ("1 * 1.0", None, "no such overload: _*_ applied to (int, double)"),
    ("1 / 1.0", None, "no such overload: _/_ applied to (int, double)"),
    ("1 % 1.0", None, "no such overload: _%_ applied to (int, double)"),
    ("-\"a\"", None, "no such overload: -_ applied to (string)"),
    ("!1", None, "no such overload: !_ applied to (int)"),
    ("1 < \"a\"", None, "no such overload: _<_ applied to (int, string)"),
    ("1 <= \"a\"", None, "no such overload: _<=_ applied to (int, string)"),
    ("1 > \"a\"", None, "no such overload: _>_ applied to (int, string)"),
    ("1 >= \"a\"", None, "no such overload: _>=_ applied to (int, string)"),
    ("1 in \"a\"", None, "no such overload: @in applied to (int, string)"),
    ("(1).startsWith(\"a\")", None, "no such overload: startsWith applied to (int, string)"),
    ("\"a\".endsWith(1)", None, "no such overload: endsWith applied to (string, int)"),
    ("\"a\".contains(null)", None, "no such overload: contains applied to (string, null_type)"),
    ("(1).matches(\"a\")", None, "no such overload: matches applied to (int, string)"),
    ("int(null)", None, "no such overload: int applied to (null_type)"),
    ("uint(true)", None, "no such overload: uint applied to (bool)"),
    ("double(true)", None, "no such overload: double applied to (bool)"),
    ("string(null)", None, "no such overload: string applied to (null_type)"),
    ("bool(1)", None, "no such overload: bool applied to (int)"),
    ("timestamp(1.0)", None, "no such overload: timestamp applied to (double)"),
    ("duration(1)", None, "no such overload: duration applied to (int)"),
    ("int(\"x\")", None, "int() conversion error"),
    ("uint(\"x\")", None, "uint() conversion error"),
    ("int(\"1" + "0" * 4400 + "\")", None, "int() conversion error: too many digits"),
    ("double(\"x\")", None, "double() conversion error"),
    ("bool(\"x\")", None, "bool() conversion error"),
    ("string(b\"\\xff\")", None, "invalid UTF-8 in bytes"),
    ("duration(\"1x\")", None, "duration() conversion error: expected e.g. \"90s\", \"1h30m\", \"1.5h\""),
    ("int(1e19)", None, "int64 overflow: double out of range"),
    ("uint(-1.0)", None, "uint64 overflow: double out of range"),
    ("9223372036854775807 * 2", None, "int64 overflow"),
    ("-9223372036854775808 % -1", None, "int64 overflow"),
    ("0u - 1u", None, "uint64 overflow"),
    ("1 / 0", None, "division by zero"),
    ("1u / 0u", None, "division by zero"),
    ("1 % 0", None, "modulus by zero"),
    ("1u % 0u", None, "modulus by zero"),
    ("-duration(\"-9223372036.854775808s\")", None, "duration out of range"),
    ("timestamp(\"9999-12-31T23:59:59.999999999Z\") + duration(\"1ns\")", None, "timestamp out of range"),
    ("timestamp(\"0000-01-01T00:00:00Z\")", None, "timestamp out of range"),
    ("timestamp(\"garbage\")", None, "timestamp() conversion error: not an RFC 3339 date-time"),
    ("timestamp(\"2020-02-30T00:00:00Z\")", None, "timestamp() conversion error: no such date"),
    ("timestamp(\"2020-01-01T24:00:00Z\")", None, "timestamp() conversion error: no such time of day"),
    ("timestamp(\"2020-01-01T00:00:00+24:00\")", None, "timestamp() conversion error: bad UTC offset"),
    ("timestamp(0).getHours(\"Mars/Olympus_Mons\")", None, "unknown time zone"),
    ("timestamp(0).getHours(\"+25:00\")", None, "unknown time zone"),
    ("timestamp(0).getHours(1)", None, "no such overload: timezone applied to (int)"),
    ("duration(\"1s\").getHours(\"UTC\")", None, "no such overload: getHours applied to (duration, string)"),
    ("duration(\"1s\").getFullYear()", None, "no such overload: getFullYear applied to (duration)"),
]


@PATHS
@pytest.mark.parametrize(("text", "act", "message"), ERROR_MESSAGES, ids=[e[0][:50] for e in ERROR_MESSAGES])
def test_error_messages(text: str, act: dict[str, Any] | None, message: str, generate: bool) -> None:
    with pytest.raises(CELEvalError) as info:
        compile_expression(_parse(text), generate)(ACT if act is None else act)
    assert str(info.value) == message


# The activation may hold any Mapping and any Sequence, not only dict and list (an SDK caller's
# read-only view, say): each answers as the dict or list with the same contents.
MAPPING_CASES = ["m.a", "m[\"a\"]", "m[\"zz\"]", "m.zz", "m.a.b", "has(m.a)", "has(m.zz)", "has(m.a.b)",
                 "\"a\" in m", "size(m)", "m.all(k, k != \"z\")", "m.exists_one(k, k == \"a\")",
                 "m.map(k, k + \"!\")", "m.filter(k, k == \"b\")", "n[1]", "n[true]",
                 "xs[1]", "xs[5]", "xs.exists(x, x == 2)", "xs.map(x, x * 2)", "xs.filter(x, x > 1)",
                 "xs.all(x, x > 0)", "2 in xs", "size(xs)"]


@pytest.mark.parametrize("text", MAPPING_CASES)
def test_any_mapping_or_sequence_answers_as_a_dict_or_list(text: str) -> None:
    import collections
    import types

    plain = {"m": {"a": 1, "b": 2}, "n": {1: "one"}, "xs": [1, 2, 3]}
    views = {"m": types.MappingProxyType(plain["m"]), "n": types.MappingProxyType(plain["n"]),
             "xs": collections.UserList(plain["xs"])}
    for generate in (True, False):
        fn = compile_expression(_parse(text), generate)
        assert _outcome(fn, views) == _outcome(fn, plain), (text, generate)


@pytest.mark.parametrize("text", ["has(user.risk)", "has((user.tags).team)", "user.level in [1, 2]",
                                  "user.name in [\"a\"]", "user.name in user.roles", "user.active && flag",
                                  "user.active || flag || false", "!user.active", "nums.all(x, x > 0)",
                                  "nums.exists(x, x > 2)", "nums.exists_one(x, x > 2)",
                                  "flag ? user.level > 1 : user.risk > 0.5"])
def test_conditions_run_as_their_closures(text: str) -> None:
    """A condition's value is a bool (or an error): compiled without generated code, it is its
    closure itself, with no conversion of the result wrapped around it (a call less per
    condition per request)."""
    tree = _parse(text)
    assert compile_expression(tree, generate=False).__code__ is _Compiler().compile(tree).fn.__code__


# Values from a request's context: timedelta and datetime (aware or naive) stand for CEL
# durations and timestamps, to the microsecond; patterns of matches() may be data too.
CONTEXT_VALUES: list[tuple[str, dict[str, Any], Any]] = [
    ("string(d)", {"d": datetime.timedelta(days=1, seconds=1, microseconds=5)}, "86401.000005s"),
    ("d == duration(\"-86400.000001s\")", {"d": -datetime.timedelta(days=1, microseconds=1)}, True),
    ("int(t)", {"t": datetime.datetime(1970, 1, 2)}, 86400),  # naive: UTC
    ("int(t)", {"t": datetime.datetime(1970, 1, 2, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))},
     86400),
    ("t.getHours()", {"t": datetime.datetime(2024, 1, 1, 5, 30)}, 5),
    ("t.getHours()", {"t": datetime.datetime(2024, 1, 1, 5, 30,
                                              tzinfo=datetime.timezone(-datetime.timedelta(hours=3)))},
     8),
    ("t.getDate(\"Pacific/Kiritimati\")", {"t": datetime.datetime(2024, 1, 1, 12)}, 2),  # UTC+14
    ("t - duration(\"1us\") < t", {"t": datetime.datetime(2024, 1, 1)}, True),
    ("s.matches(p)", {"s": "alice@corp.com", "p": "@corp\\.com$"}, True),
    ("s.matches(p)", {"s": "alice@corp.com", "p": "^corp"}, False),
    ("matches(s, p)", {"s": "abc", "p": "b"}, True),  # a substring is enough (RE2's search)
    ("s.matches(p)", {"s": "aa", "p": "(a)\\1"}, CELEvalError),  # backreferences: not RE2
    ("s.matches(p)", {"s": "a", "p": "["}, CELEvalError),
    ("s.matches(p)", {"s": "a", "p": 1}, CELEvalError),
]


@pytest.mark.parametrize(("text", "act", "expected"), CONTEXT_VALUES,
                         ids=[f"{c[0]} {sorted(c[1].values(), key=str)[0]!s:.30}" for c in CONTEXT_VALUES])
def test_context_values(text: str, act: dict[str, Any], expected: Any) -> None:
    fn = compile_expression(_parse(text))
    if expected is CELEvalError:
        with pytest.raises(CELEvalError):
            fn(act)
    else:
        assert same(fn(act), expected)


def test_a_naive_datetime_is_utc_whatever_the_servers_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving time
    time.tzset()
    try:
        noon = {"t": datetime.datetime(2024, 1, 1, 12)}
        assert compile_expression(_parse("t.getHours()"))(noon) == 12
        assert compile_expression(_parse("t.getHours(\"+01:00\")"))(noon) == 13
        assert compile_expression(_parse("int(t)"))(noon) == 1704110400
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_internal_values() -> None:
    """Uint, Duration and Timestamp (exported for the prover) print and compare as CEL values."""
    from ttlpolicy.cel.native_functions import Duration, Timestamp, Uint

    assert repr(Uint(3)) == "3u"
    assert repr(Duration(-1_500_000_000)) == "duration('-1.5s')"
    assert repr(Timestamp(1)) == "timestamp('1970-01-01T00:00:00.000000001Z')"
    assert Duration(5) == Duration(5) and Duration(5) != Timestamp(5) and Duration(5) != 5
    assert Timestamp(5) == Timestamp(5) and Timestamp(5) != Duration(5) and Timestamp(5) != 5
    assert len({Duration(5), Duration(5), Timestamp(5), Timestamp(6)}) == 3


def test_error_messages_are_short_and_leak_no_data() -> None:
    secret = {"user": {"ssn": "123-45-6789", "risk": "x" * 500}}
    for text in ("user.risk > 0.5", "user.nope", "nobody.x", "user.ssn + 1", "user.ssn.x"):
        tree = _parse(text)
        for fn in (compile_expression(tree), compile_reference(tree)):
            with pytest.raises(CELEvalError) as info:
                fn(secret)
            assert "123-45" not in str(info.value) and len(str(info.value)) < 120
    with pytest.raises(CELEvalError, match="no such attribute 'user.risk'"):
        compile_expression(_parse("user.risk > 1"))({"user": {}})
    with pytest.raises(CELEvalError, match="no such attribute 'user'"):
        compile_expression(_parse("user.risk > 1"))({})


def test_concurrent_evaluation() -> None:
    fn = compile_expression(_parse("xs.filter(x, x % 2 == 0).map(y, y * k)"))
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(300):
                assert fn({"xs": list(range(10)), "k": k}) == [0, 2 * k, 4 * k, 6 * k, 8 * k]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_results_do_not_alias_constants() -> None:
    fn = compile_expression(_parse("[1, 2]"))
    first = fn({})
    first.append(3)
    assert fn({}) == [1, 2]


# -- matches() is RE2 ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ('"ABC".matches("(?i)^abc$")', True),   # RE2 flags
    ('"\u0663".matches("^\\\\d$")', False),   # \d is ASCII in RE2 (Python's re matches any Unicode digit)
    ('"a{,3}".matches("^a{,3}$")', True),   # not a repetition in RE2: the literal text
    ('"xabcx".matches("b")', True),          # unanchored: a match anywhere, as CEL says
])
def test_matches_follows_re2(text: str, expected: bool) -> None:
    assert compile_expression(_parse(text))({}) is expected


def test_a_backtracking_pattern_is_answered_at_once() -> None:
    """A pattern that makes a backtracking engine take exponential time (30 characters: minutes
    with Python's re) is linear in RE2; the alarm turns a regression into a failure, not a hang."""
    import signal

    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("matches() backtracked"))
    signal.alarm(10)
    try:
        assert compile_expression(_parse('"' + "a" * 30 + '!".matches("^(a+)+$")'))({}) is False
        assert nf.matches("a" * 100_000 + "!", "^(a|aa)+$") is False
    finally:
        signal.alarm(0)
