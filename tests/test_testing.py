"""``ttlpolicy test``: the test-file format, the runner, coverage and the output formats."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ttlpolicy import load_policies
from ttlpolicy.cli.main import main
from ttlpolicy.testing import load_test_file, run_tests

ROOT = Path(__file__).resolve().parents[1]

POLICY = """\
apiVersion: ttlpolicy/v1
name: small
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - name: unmanaged
    when: device.trust == "unmanaged"
    access_ttl: {cap: 15m}
  - name: mfa
    when: user.mfa
    access_ttl: {multiply: 2}
  - name: restricted
    when: resource.sensitivity == "restricted"
    deny: no restricted data here
"""

CASES = """\
cases:
  - name: unmanaged device
    context: {device: {trust: unmanaged}}
    expect: {access_ttl: 15m, matched: [unmanaged]}
  - name: managed with mfa
    context: {device: {trust: managed}, user: {mfa: true}}
    expect: {access_ttl: 2h, allow: true}
"""


def make(tmp_path: Path, cases: str = CASES, policy: str = POLICY) -> Path:
    (tmp_path / "small.yaml").write_text(policy)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "small.yaml").write_text(cases)
    return tests


def test_bundled_policies_pass_with_full_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(ROOT / "policies" / "tests"), "--min-coverage", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    total = sum(len(policy.rules) for policy in load_policies(ROOT / "policies"))
    assert f"rule coverage: 100% ({total} of {total} rules" in out
    assert "0 failed" in out


def test_coverage_reports_the_rule_no_case_matched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = make(tmp_path)
    report = run_tests([load_test_file(tests / "small.yaml")])
    assert report.ok
    assert report.coverage.total == 3
    assert report.coverage.percent == pytest.approx(66.7)
    assert report.coverage.never_matched() == ["small/restricted"]
    assert report.coverage.never_unmatched() == []
    assert main(["test", str(tests)]) == 0
    assert "never matched: small/restricted" in capsys.readouterr().out


def test_min_coverage_fails_the_run_below_the_threshold(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    tests = make(tmp_path)
    assert main(["test", str(tests), "--min-coverage", "66"]) == 0
    capsys.readouterr()
    assert main(["test", str(tests), "--min-coverage", "70", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["failed"] == 0
    assert data["coverage"]["percent"] == 66.7 and data["coverage"]["never_matched"] == ["small/restricted"]


def test_a_failure_shows_expected_actual_and_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = make(tmp_path, CASES.replace("access_ttl: 15m", "access_ttl: 20m"))
    assert main(["test", str(tests)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {tests / 'small.yaml'}:2:11: unmanaged device (policy small)" in out
    assert "access_ttl: expected 20m (1200s), got 15m (900s)" in out
    assert "cap" in out and "unmanaged" in out.split("trace:")[1]  # the trace explains the 15m
    assert "1 passed, 1 failed" in out


def test_partial_expectations_and_context_errors(tmp_path: Path) -> None:
    cases = """\
    now: "2025-01-08T12:00:00Z"
    cases:
      - name: only matched_includes and not_matched
        context: {device: {trust: unmanaged}, user: {mfa: true}}
        expect: {matched_includes: [mfa], not_matched: [restricted], refresh_ttl: 1d}
      - name: exact matched list is order-insensitive
        context: {device: {trust: unmanaged}, user: {mfa: true}}
        expect: {matched: [unmanaged, mfa]}
      - name: refused context
        context: {device: {trust: manged}, user: {risk: 2}}
        expect: {context_errors: [user.risk, device.trust]}
      - name: denied
        context: {resource: {sensitivity: restricted}}
        expect: {allow: false, deny_reason: no restricted data here, access_ttl: 0s}
    """
    tests = make(tmp_path, textwrap.dedent(cases))
    report = run_tests([load_test_file(tests / "small.yaml")])
    assert [r.ok for r in report.results] == [True, True, True, True], [r.mismatches for r in report.results]
    assert report.coverage.percent == 100.0


def test_refused_context_without_expectation_fails(tmp_path: Path) -> None:
    cases = "cases:\n  - name: typo\n    context: {device: {trust: manged}}\n    expect: {allow: true}\n"
    report = run_tests([load_test_file(make(tmp_path, cases) / "small.yaml")])
    assert not report.ok
    assert report.results[0].mismatches == [("context_errors", None, ["device.trust"])]


def test_invalid_test_file_is_a_usage_error_with_a_location(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cases = "cases:\n  - name: x\n    context: {}\n    expect: {acess_ttl: 5m}\n"
    tests = make(tmp_path, cases)
    assert main(["test", str(tests)]) == 2
    err = capsys.readouterr().err
    assert f"{tests / 'small.yaml'}:4:14: error[test-file]: cases.0.expect.acess_ttl" in err


def test_bad_duration_and_unknown_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = make(tmp_path, "cases:\n  - name: x\n    expect: {access_ttl: 5 minutes}\n")
    assert main(["test", str(tests)]) == 2
    assert ":3:26: error[test-file]" in capsys.readouterr().err
    (tests / "small.yaml").write_text("policy: nope\ncases:\n  - name: x\n    expect: {allow: true}\n")
    assert main(["test", str(tests)]) == 2
    assert "nope" in capsys.readouterr().err


def test_missing_path_is_an_io_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(tmp_path / "absent")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_junit_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = make(tmp_path, CASES.replace("access_ttl: 2h", "access_ttl: 3h"))
    assert main(["test", str(tests), "--format", "junit"]) == 1
    root = ET.fromstring(capsys.readouterr().out)
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["unmanaged device", "managed with mfa"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "access_ttl: expected 3h (10800s), got 2h (7200s)" in failure.get("message", "")


def test_policies_key_points_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "small.yaml").write_text(POLICY)
    (tmp_path / "t.yaml").write_text("policies: pol\n" + CASES)
    suite = load_test_file(tmp_path / "t.yaml")
    assert suite.policy_dir == tmp_path / "pol"
    assert run_tests([suite]).ok


def test_empty_test_directory_is_an_io_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tests").mkdir()
    assert main(["test", str(tmp_path / "tests")]) == 2
    captured = capsys.readouterr()
    assert "error[no-tests]: directory holds no *.yaml test files" in captured.out + captured.err
