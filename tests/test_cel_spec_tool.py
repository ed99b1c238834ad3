"""benchmarks/cel_spec.py, the check of ttlpolicy's CEL against cel-spec's own conformance files,
can be trusted: it reads protobuf text format as written, turns expected values into what the
native backend returns, and classifies a value where the spec wants an error as the failure it is.
(The conformance files themselves are not in this repository; this document is written here.)
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import cel_spec  # noqa: E402
from cel_spec import Case, TextFormatError, cases_of, parse_text_format, run, same, to_python  # noqa: E402

DOCUMENT = r'''
# a comment
name: "sample"
section {
  name: "values"
  test { name: "adjacent strings" expr: "1 + " '2'  value: { int64_value: 3 } }
  test {
    name: "escapes"
    expr: "'\\x41\\101\\u00e9\\U0001F600\\n\\\\'"
    value { string_value: "A\101é\360\237\230\200\n\\" }
  }
  test { name: "uint" expr: "3u" value: < uint64_value: 3 > }
  test { name: "double" expr: "-1.5e3" value: { double_value: -1.5e3 } }
  test { name: "infinity" expr: "1.0 / 0.0" value: { double_value: inf } }
  test { name: "nan" expr: "0.0 / 0.0" value: { double_value: nan } }
  test { name: "negative zero" expr: "-0.0" value: { double_value: -0 } }
  test { name: "bytes" expr: "b'\\377'" value: { bytes_value: "\377" } }
  test { name: "default is true" expr: "1 < 2" }
  test {
    name: "list and map"
    expr: "[1, {'a': null}]"
    value: { list_value: { values: [{ int64_value: 1 }, { map_value { entries { key: { string_value: "a" } value: { null_value: NULL_VALUE } } } }] } }
  }
  test {
    name: "bound"
    expr: "x + 1"
    bindings { key: "x" value { value { int64_value: 41 } } }
    value: { int64_value: 42 }
  }
}
section {
  name: "errors and the rest"
  test { name: "overflow" expr: "9223372036854775807 + 1" eval_error { errors { message: "overflow" } } }
  test { name: "a message value" expr: "1" value { object_value { [type.googleapis.com/google.protobuf.Int64Value] { value: 1 } } } }
  test { name: "in a container" container: "cel.expr" expr: "1" }
  test { name: "dotted binding" expr: "a.b" bindings { key: "a.b" value { value { int64_value: 1 } } } }
}
'''


def test_text_format_is_read_as_written() -> None:
    document = parse_text_format(DOCUMENT)
    assert document["name"] == [b"sample"]
    tests = {cel_spec.text(t["name"][0]): t for s in document["section"] for t in s["test"]}
    assert tests["adjacent strings"]["expr"] == [b"1 + 2"]
    assert cel_spec.text(tests["escapes"]["expr"][0]) == "'\\x41\\101\\u00e9\\U0001F600\\n\\\\'"
    assert to_python(tests["escapes"]["value"][0]) == "AAé\U0001F600\n\\"
    assert to_python(tests["uint"]["value"][0]) == 3
    assert to_python(tests["double"]["value"][0]) == -1500.0
    assert to_python(tests["infinity"]["value"][0]) == math.inf
    assert math.isnan(to_python(tests["nan"]["value"][0]))
    assert math.copysign(1, to_python(tests["negative zero"]["value"][0])) == -1
    assert to_python(tests["bytes"]["value"][0]) == b"\xff"
    assert to_python(tests["list and map"]["value"][0]) == [1, {"a": None}]


@pytest.mark.parametrize("broken", ['name: "open', "section { name: 'x'", "test { name: 1 } }", 'expr: "\\q"'])
def test_broken_text_format_is_an_error_not_a_guess(broken: str) -> None:
    with pytest.raises(TextFormatError):
        parse_text_format(broken)


def test_cases_are_taken_or_left_out_with_a_reason() -> None:
    cases, left_out = cases_of("sample", parse_text_format(DOCUMENT))
    names = [c.name for c in cases]
    assert "in a container" not in names and "dotted binding" not in names
    assert left_out == {"a container": 1, "a qualified name bound as one variable": 1}
    message = next(c for c in cases if c.name == "a message value")
    assert not message.comparable
    assert next(c for c in cases if c.name == "default is true").expected is True
    assert next(c for c in cases if c.name == "bound").bindings == {"x": 41}


def test_every_sample_case_passes_both_ways() -> None:
    cases, _ = cases_of("sample", parse_text_format(DOCUMENT))
    outcomes = {(c.name, generated): run(c, generated).outcome for c in cases for generated in (False, True)}
    assert set(outcomes.values()) == {"pass"}, outcomes


@pytest.mark.parametrize(("expr", "expects_error", "expected", "outcome"), [
    ("1 + 1", True, None, "value, spec has an error"),  # the dangerous direction
    ("int('x')", False, 1, "error, spec has a value"),
    ("1 + 1", False, 3, "wrong value"),
    ("1 + 1", False, 2.0, "wrong value"),  # equal in CEL, but not the same answer
    ("-0.0", False, 0.0, "wrong value"),
    ("dyn(1)", False, 1, "refused"),
    ("1 +", True, None, "pass"),  # a parse test that expects an error
    ("1 +", False, 1, "refused"),
])
def test_outcomes(expr: str, expects_error: bool, expected: object, outcome: str) -> None:
    case = Case("f", "s", "n", expr, {}, expects_error, expected)
    assert run(case, False).outcome == outcome
    assert run(case, True).outcome == outcome


def test_same_compares_kinds_and_nan() -> None:
    assert same([1, {"a": math.nan}], [1, {"a": math.nan}])
    assert not same(True, 1) and not same(1, True)
    assert not same({"a": 1}, {"a": 1, "b": 2})


def test_the_command_reads_a_checkout_and_fails_on_a_value_where_an_error_is_due(tmp_path: Path) -> None:
    folder = tmp_path / "tests" / "simple" / "testdata"
    folder.mkdir(parents=True)
    (folder / "good.textproto").write_text(DOCUMENT, encoding="utf-8")
    command = [sys.executable, str(ROOT / "benchmarks" / "cel_spec.py"), str(tmp_path), "--no-report"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| good | 26 | 0 | 0 | 0 | 0 | 0 |" in done.stdout
    (folder / "bad.textproto").write_text(
        'section { name: "s" test { name: "t" expr: "1" eval_error { errors { message: "x" } } } }', encoding="utf-8")
    done = subprocess.run(command + ["--list-failures"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "value, spec has an error: `bad/s/t`: `1` → 1" in done.stdout
