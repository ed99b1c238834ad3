"""The static checks: impossible and tautological conditions, dominated effects, loosening rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttlpolicy import load_sources
from ttlpolicy.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

HEAD = """\
apiVersion: ttlpolicy/v1
name: p
defaults: {access_ttl: 1h, refresh_ttl: 1d}
limits:
  access_ttl: {min: 1m, max: 12h}
rules:
"""


def warnings(rules: str, head: str = HEAD) -> list[tuple[str, int, int, str]]:
    policies = load_sources({"p.yaml": head + rules})
    return sorted((w.code, w.location.line, w.location.column, w.message) for w in policies.warnings
                  if w.location is not None)


def codes(rules: str, head: str = HEAD) -> list[str]:
    return [w[0] for w in warnings(rules, head)]


@pytest.mark.parametrize("condition", [
    "user.risk > 1.0",
    'device.trust == "managed" && device.trust == "known"',
    "time.hour >= 24",
    "user.risk < 0.2 && user.risk > 0.7",
    '!(device.trust in ["managed", "compliant", "known", "unmanaged"])',
])
def test_condition_never_true(condition: str) -> None:
    rules = f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n"
    found = warnings(rules)
    assert [(c, line, col) for c, line, col, _ in found] == [("condition-never-true", 8, 11)]
    assert "can never match" in found[0][3]


@pytest.mark.parametrize("condition", ["user.risk >= 0.0", "time.hour < 24 || user.mfa",
                                       'client.binding != "mtls" || client.binding != "dpop"'])
def test_condition_always_true(condition: str) -> None:
    assert codes(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n") == ["condition-always-true"]


@pytest.mark.parametrize("condition", [
    "user.risk > 0.5", 'device.trust == "managed" || device.trust == "known"', "time.hour >= 22 || time.hour < 6",
    'has(client.type) && client.type == "public"', '"admins" in user.groups', "true",
    "size(user.groups) > 100",  # not judged: a function
])
def test_satisfiable_conditions_are_not_flagged(condition: str) -> None:
    assert codes(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n") == []


def test_cap_above_every_ceiling_and_floor_below_the_minimum() -> None:
    rules = ("  - name: r\n    when: user.mfa\n    access_ttl: {cap: 12h}\n"
             "  - name: f\n    when: user.mfa\n    access_ttl: {floor: 1m}\n")
    found = warnings(rules)
    assert [(c, line, col) for c, line, col, _ in found] == [
        ("effect-never-applies", 9, 23), ("effect-never-applies", 12, 25), ("loosening-rule", 12, 25)]
    assert "limits already stops access_ttl at 12h" in found[0][3]
    assert "the global minimum is 1m" in found[1][3]


def test_tier_ceilings_dominate_a_cap() -> None:
    head = HEAD.replace("rules:\n", "tiers:\n  a: {max_access_ttl: 2h}\n  b: {max_access_ttl: 4h}\n"
                        "rules:\n").replace("defaults: {", "defaults: {tier: a, ")
    found = warnings("  - name: r\n    when: user.mfa\n    access_ttl: {cap: 4h}\n", head)
    assert [w[0] for w in found] == ["effect-never-applies"] and "highest tier ceiling" in found[0][3]
    assert codes("  - name: r\n    when: user.mfa\n    access_ttl: {cap: 3h}\n", head) == []


def test_factor_under_an_unconditional_cap() -> None:
    rules = ("  - name: everyone\n    when: 'true'\n    access_ttl: {cap: 30m}\n"
             "  - name: mfa\n    when: user.mfa\n    access_ttl: {multiply: 2}\n")
    assert codes(rules) == ["effect-never-applies", "loosening-rule"]
    # with a factor below 1 elsewhere, the value can drop under the cap: then the factor matters
    shrink = rules + "  - name: risky\n    when: user.risk > 0.5\n    access_ttl: {multiply: 0.25}\n"
    assert codes(shrink) == ["loosening-rule"]


def test_loosening_rules_are_flagged_and_tightening_ones_are_not() -> None:
    rules = ("  - name: up\n    when: user.mfa\n    access_ttl: {multiply: 1.5}\n"
             "  - name: down\n    when: user.mfa\n    access_ttl: {multiply: 0.5}\n"
             "  - name: scaled\n    when: user.risk > 0.0\n"
             "    access_ttl: {multiply: {expr: '1.0 - user.risk', min: 0.25, max: 1.0}}\n"
             "  - name: unbounded\n    when: user.risk > 0.0\n    refresh_ttl: {multiply: '2.0 - user.risk'}\n")
    found = warnings(rules)
    assert [(w[0], w[1]) for w in found] == [("loosening-rule", 9), ("loosening-rule", 18)]
    assert "without an upper bound" in found[1][3] and "by 1.5" in found[0][3]


def test_warnings_do_not_fail_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(HEAD + "  - name: r\n    when: user.risk > 1.0\n    access_ttl: {cap: 5m}\n")
    assert main(["lint", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning[condition-never-true]" in out and "0 errors, 1 warning" in out


def test_bundled_policies_only_show_their_loosening_rules() -> None:
    from ttlpolicy import load_policies

    found = {(w.code, w.message.split("'")[1]) for w in load_policies(ROOT / "policies").warnings}
    assert found == {("loosening-rule", "sender-constrained"), ("loosening-rule", "managed-device-with-mfa")}
