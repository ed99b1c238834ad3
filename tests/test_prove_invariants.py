"""Invariants in policy test files: proved, refuted with a replayed counterexample at the
invariant's line, unknown with the construct's location, wrong; in ``ttlpolicy test`` and
``ttlpolicy verify``, as text, JSON and JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ttlpolicy import load_sources
from ttlpolicy.cli.main import main
from ttlpolicy.errors import Location
from ttlpolicy.prove.invariants import check_invariant

REPO = Path(__file__).resolve().parent.parent

POLICY = """\
apiVersion: ttlpolicy/v1
name: p
defaults: {tier: standard, access_ttl: 1h, refresh_ttl: 1d}
tiers:
  standard: {}
  finance: {access_ttl: 15m, refresh_ttl: 8h, max_access_ttl: 30m}
rules:
  - {name: risky, when: user.risk >= 0.9, deny: too risky}
  - {name: bound, when: 'client.binding in ["mtls", "dpop"]', access_ttl: {multiply: 2}}
  - name: groups
    when: user.groups.exists(g, g.startsWith("adm"))
    access_ttl: {cap: 10m}
"""

TESTS = """\
policy: p
invariants:
  - name: finance tokens live at most 30 minutes
    when: tier == "finance"
    always: decision.access_ttl <= duration("30m")
  - name: finance tokens live at most 15 minutes
    when: tier == "finance"
    always: decision.access_ttl <= duration("15m")
  - name: risky users are denied
    when: user.risk >= 0.9
    always: "!decision.allow"
  - name: no rule ever fails
    always: size(decision.errors) == 0
"""


def write(tmp_path: Path, policy: str = POLICY, tests: str = TESTS) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "p.yaml").write_text(policy)
    (tmp_path / "tests" / "p.yaml").write_text(tests)
    return tmp_path


def test_verify_proves_refutes_and_reports_at_the_invariants_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path, POLICY.split("  - name: groups")[0])
    code = main(["verify", str(root), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and not out["ok"]
    by_name = {r["name"]: r for r in out["invariants"]}
    assert by_name["finance tokens live at most 30 minutes"]["status"] == "proved"
    assert by_name["risky users are denied"]["status"] == "proved"
    assert by_name["no rule ever fails"]["status"] == "proved"
    refuted = by_name["finance tokens live at most 15 minutes"]
    assert refuted["status"] == "refuted" and refuted["location"]["line"] == 6
    ce = refuted["counterexample"]
    assert ce["context"]["tier"] == "finance" and ce["decision"]["access_ttl"] > 900
    # the counterexample is a real decision: replay it
    policies = load_sources({"p.yaml": POLICY.split("  - name: groups")[0]})
    assert policies.decide(ce["context"], now=ce["now"]).access_ttl == ce["decision"]["access_ttl"]


def test_the_solver_refutes_without_the_grid_and_its_counterexample_replays() -> None:
    policies = load_sources({"p.yaml": POLICY.split("  - name: groups")[0]})
    result = check_invariant(policies, "p", "n", 'client.binding == "mtls"', 'decision.access_ttl < duration("2h")',
                             Location("t.yaml", 3, 5), lambda part, line, column: Location("t.yaml", 3, column),
                             grid_scenarios=0, timeout=20)
    assert result.status == "refuted" and result.how == "smt", result
    assert result.context is not None and result.now is not None
    assert policies.decide(result.context, now=result.now).access_ttl >= 7200


def test_an_unsupported_rule_makes_invariants_unknown_with_its_location(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path, tests=TESTS.split("  - name: finance tokens live at most 15")[0])
    code = main(["verify", str(root)])
    text = capsys.readouterr().out
    assert code == 1 and "UNKNOWN" in text
    assert f"{root / 'p.yaml'}:11:23: exists() is not modelled by the prover" in text


def test_a_time_limit_gives_unknown() -> None:
    policies = load_sources({"p.yaml": POLICY.split("  - name: groups")[0].replace(
        "multiply: 2}", "multiply: {expr: \"1.0 + user.risk / 3.0\", max: 3.0}}")})
    result = check_invariant(policies, "p", "n", "true", 'decision.access_ttl != duration("5371s")',
                             Location("t.yaml", 1, 1), lambda *_: Location("t.yaml", 1, 1),
                             grid_scenarios=0, timeout=0.05)
    assert result.status == "unknown" and "time limit" in result.reason


def test_mistakes_in_an_invariant_are_errors_at_their_column(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path, POLICY.split("  - name: groups")[0], "policy: p\ninvariants:\n  - name: typo\n"
                 "    always: decision.access_tl <= duration(\"1h\")\n")
    assert main(["verify", str(root)]) == 1
    text = capsys.readouterr().out
    assert "ERROR" in text and "tests/p.yaml:4:13: 'decision.access_tl' is not a declared attribute" in text


def test_junit_lists_invariants_with_failures_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path)
    assert main(["test", str(root), "--format", "junit"]) == 1
    xml = ET.fromstring(capsys.readouterr().out)
    suite = next(s for s in xml.iter("testsuite") if s.get("name", "").endswith("(invariants)"))
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["finance tokens live at most 15 minutes"].find("failure") is not None
    assert cases["finance tokens live at most 30 minutes"].find("error") is not None  # unknown: the exists() rule
    assert cases["risky users are denied"].get("line") == "9"


def test_the_bundled_invariants_are_proved(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(REPO / "policies"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and len(out["invariants"]) >= 9
    assert {r["status"] for r in out["invariants"]} == {"proved"}
