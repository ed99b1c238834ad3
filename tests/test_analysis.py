"""The static checks: impossible and tautological conditions (errors), dominated effects and
loosening rules (warnings, which a rule can acknowledge with a reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttlpolicy import PolicyError, load_sources
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


def errors(rules: str, head: str = HEAD) -> list[tuple[str, int, int, str]]:
    with pytest.raises(PolicyError) as info:
        load_sources({"p.yaml": head + rules})
    return sorted((p.code, p.location.line, p.location.column, p.message) for p in info.value.errors
                  if p.location is not None)


@pytest.mark.parametrize("condition", [
    'device.trust == "managed" && device.trust == "known"',
    "user.risk < 0.2 && user.risk > 0.7",
    '!(device.trust in ["managed", "compliant", "known", "unmanaged"])',
    'time.weekday in ["sat", "sun"] && time.weekday == "mon"',
    'tier == "a" && tier != "a"',
])
def test_condition_never_true_is_an_error(condition: str) -> None:
    head = HEAD.replace("rules:\n", "tiers: {a: {}, b: {}}\nrules:\n")
    found = errors(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n", head)
    assert [(c, line, col) for c, line, col, _ in found] == [("condition-never-true", 9, 11)]
    assert "can never match" in found[0][3] and "delete the rule" in found[0][3]


@pytest.mark.parametrize("condition, column, message", [
    ("user.risk > 1.0", 24, "user.risk > 1.0 is never true: user.risk is declared in 0 … 1"),
    ("time.hour >= 24 || user.mfa", 25, "time.hour >= 24 is never true: time.hour is declared in 0 … 23"),
    ("user.mfa && time.minute == 60", 39, "time.minute == 60 is never true"),
    ("user.risk < -0.5", 24, "user.risk < -0.5 is never true"),
    ("24 <= time.hour", 12, "time.hour >= 24 is never true"),
    ("time.hour in [22, 24]", 30, "time.hour == 24 is never true"),
])
def test_comparisons_outside_the_declared_range_are_errors_at_the_literal(condition: str, column: int,
                                                                           message: str) -> None:
    found = errors(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n")
    assert [(c, line, col) for c, line, col, _ in found] == [("cel-impossible-comparison", 8, column)]
    assert message in found[0][3] and "compare with a value inside that range" in found[0][3]


def test_a_declared_range_of_the_policy_counts_too() -> None:
    head = HEAD.replace("rules:\n", "attributes:\n  user.level: {type: int, min: 0, max: 5}\nrules:\n")
    found = errors("  - name: r\n    when: 'user.level > 5 || user.level == 9'\n    deny: x\n", head)
    assert [(c, col) for c, _, col, _ in found] == [("cel-impossible-comparison", 25),
                                                     ("cel-impossible-comparison", 44)]


def test_integer_literals_beyond_64_bits_are_errors() -> None:
    found = errors("  - name: r\n    when: 'size(user.groups) > 99999999999999999999'\n    deny: x\n")
    assert [(c, line, col) for c, line, col, _ in found] == [("cel-literal-range", 8, 32)]
    assert "does not fit a 64-bit int" in found[0][3] and "use a smaller number" in found[0][3]


@pytest.mark.parametrize("condition", ["user.risk >= 0.0", "time.hour < 24 || user.mfa",
                                       'client.binding != "mtls" || client.binding != "dpop"'])
def test_condition_always_true_is_an_error(condition: str) -> None:
    found = errors(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n")
    assert [c for c, *_ in found] == ["condition-always-true"]
    assert 'write `when: "true"` if that is meant' in found[0][3]


@pytest.mark.parametrize("condition", [
    "user.risk > 0.5", 'device.trust == "managed" || device.trust == "known"', "time.hour >= 22 || time.hour < 6",
    'has(client.type) && client.type == "public"', '"admins" in user.groups', "true",
    "size(user.groups) > 100",  # not judged: a function
    # true only for values no literal names: the analysis must try a non-member too
    '!(location.country in ["DE", "US"])', '!(location.country in ["DE"]) && location.country != "US"',
    # true only between two close literals: the analysis must try the gap between them
    "user.risk > 0.5 && user.risk < 0.505",
    # two attributes compared with each other: each must be able to take the other's literals
    'user.id == client.id && client.id == "svc"',
])
def test_satisfiable_conditions_are_not_flagged(condition: str) -> None:
    assert codes(f"  - name: r\n    when: '{condition}'\n    access_ttl: {{cap: 5m}}\n") == []


def test_cap_above_every_ceiling_and_floor_below_the_minimum() -> None:
    rules = ("  - name: r\n    when: user.mfa\n    access_ttl: {cap: 12h}\n"
             "  - name: f\n    when: user.mfa\n    access_ttl: {floor: 1m}\n")
    found = warnings(rules)
    # a floor that never lifts anything is not reported as loosening: the warning must be true
    assert [(c, line, col) for c, line, col, _ in found] == [
        ("effect-never-applies", 9, 23), ("effect-never-applies", 12, 25)]
    assert "limits already stops access_ttl at 12h" in found[0][3]
    assert "never lifts anything" in found[1][3] and "global minimum 1m" in found[1][3]


def test_a_floor_that_a_tier_ceiling_makes_dead_is_not_called_loosening() -> None:
    head = HEAD.replace("rules:\n", "tiers:\n  fin: {access_ttl: 20m, max_access_ttl: 20m}\n"
                        "  std: {access_ttl: 1h, max_access_ttl: 4h}\nrules:\n").replace(
                            "defaults: {", "defaults: {tier: std, ")
    floor = "  - name: f\n    when: 'tier == \"fin\" && user.mfa'\n    access_ttl: {floor: 2h}\n"
    found = warnings(floor, head)
    assert [(c, line, col) for c, line, col, _ in found] == [("effect-never-applies", 12, 25)]
    assert "in tier fin: the fin ceiling holds it at 20m" in found[0][3] and "remove it" in found[0][3]
    # in both tiers it lifts, but the fin ceiling holds it to 20m there: the message says so
    shrink = "  - name: s\n    when: user.risk > 0.5\n    access_ttl: {multiply: 0.5}\n"
    found = warnings(floor.replace('tier == "fin" && ', "") + shrink, head)
    assert [c for c, *_ in found] == ["loosening-rule"]
    assert "up to 2h (20m in fin, where a ceiling or cap holds it)" in found[0][3]


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
    (tmp_path / "p.yaml").write_text(HEAD + "  - name: r\n    when: user.mfa\n    access_ttl: {multiply: 2}\n")
    assert main(["lint", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning[loosening-rule]" in out and "0 errors, 1 warning" in out
    assert main(["lint", "--strict", str(tmp_path)]) == 1


def test_bundled_policies_acknowledge_their_loosening_rules() -> None:
    from ttlpolicy import load_policies

    found = {(w.code, w.severity, w.message.split("'")[1]) for w in load_policies(ROOT / "policies").warnings}
    assert found == {("loosening-rule", "note", "sender-constrained"),
                     ("loosening-rule", "note", "managed-device-with-mfa")}


def test_bundled_policies_pass_lint_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--strict", str(ROOT / "policies")]) == 0
    out = capsys.readouterr().out
    assert "note[loosening-rule]" in out and "— acknowledged: Intended:" in out and "4 acknowledged" in out


ACK = "    allow:\n      - {code: loosening-rule, reason: reviewed in PR 12 — bound tokens may live longer}\n"


def test_an_acknowledged_warning_is_a_note_with_its_reason(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rule = "  - name: up\n    when: user.mfa\n    access_ttl: {multiply: 2}\n"
    found = load_sources({"p.yaml": HEAD + rule + ACK}).warnings
    assert [(w.code, w.severity) for w in found] == [("loosening-rule", "note")]
    assert found[0].message.endswith("— acknowledged: reviewed in PR 12 — bound tokens may live longer")
    (tmp_path / "p.yaml").write_text(HEAD + rule + ACK)
    assert main(["lint", "--strict", str(tmp_path)]) == 0
    assert main(["lint", "--strict", "--format", "github", str(tmp_path)]) == 0
    assert "::notice file=" in capsys.readouterr().out


def test_an_acknowledgement_only_covers_its_own_rule_and_code() -> None:
    rules = ("  - name: up\n    when: user.mfa\n    access_ttl: {multiply: 2}\n"
             "  - name: other\n    when: user.risk > 0.5\n    refresh_ttl: {floor: 2d}\n" + ACK)
    found = sorted((w.code, w.severity, w.location.line) for w in load_sources({"p.yaml": HEAD + rules}).warnings
                   if w.location)
    assert found == [("loosening-rule", "note", 12), ("loosening-rule", "warning", 9)]


def test_an_unused_acknowledgement_is_a_warning_at_its_code() -> None:
    rule = "  - name: down\n    when: user.mfa\n    access_ttl: {multiply: 0.5}\n"
    found = warnings(rule + ACK)
    assert [(c, line, col) for c, line, col, _ in found] == [("allow-unused", 11, 16)]
    assert "remove this entry" in found[0][3]


@pytest.mark.parametrize("entry, message", [
    ("[loosening-rule]", "expected object"),
    ("[{code: loosening-rule}]", "'reason' is required"),
    ("[{code: loosening-rule, reason: ''}]", "reason"),
    ("[{code: cel-syntax, reason: x}]", "must be one of loosening-rule, effect-never-applies"),
])
def test_an_acknowledgement_needs_a_known_warning_code_and_a_reason(entry: str, message: str) -> None:
    rule = f"  - name: up\n    when: user.mfa\n    access_ttl: {{multiply: 2}}\n    allow: {entry}\n"
    found = errors(rule)
    assert [c for c, *_ in found] == ["schema"] and message in found[0][3], found


@pytest.mark.parametrize("condition, column", [
    ('time.now - user.auth_time > duration("72h")', 12),
    ('has(user.auth_time) && (user.auth_time - time.now).getHours() > 1', 36),
])
def test_a_difference_of_instants_is_a_warning_at_the_subtraction(condition: str, column: int) -> None:
    found = warnings(f"  - name: r\n    when: '{condition}'\n    step_up: stale\n")
    assert [(c, line, col) for c, line, col, _ in found] == [("cel-duration-overflow", 8, column)]
    assert "compare the instants instead" in found[0][3]


def test_the_warning_is_honest_the_difference_fails_and_the_comparison_does_not() -> None:
    """A context may carry instants 1970..9000 apart; their difference is no CEL duration, so the
    rule fails (safe: its step-up applies, with an error); comparing the instants never fails."""
    ctx = {"user": {"auth_time": "8999-01-01T00:00:00Z"}}
    subtract = load_sources({"p.yaml": HEAD + "  - name: r\n    when: 'time.now - user.auth_time > duration(\"72h\")'\n"
                                              "    step_up: stale\n"})
    assert subtract.decide(ctx, now="2026-12-01T00:00:00Z").errors
    compare = load_sources({"p.yaml": HEAD + "  - name: r\n    when: 'user.auth_time < time.now - duration(\"72h\")'\n"
                                             "    step_up: stale\n"})
    assert codes("  - name: r\n    when: 'user.auth_time < time.now - duration(\"72h\")'\n    step_up: stale\n") == []
    decision = compare.decide(ctx, now="2026-12-01T00:00:00Z")
    assert not decision.errors and not decision.step_up


def test_instants_known_at_lint_time_are_not_warned_about() -> None:
    condition = 'timestamp("2030-01-01T00:00:00Z") - timestamp("2029-01-01T00:00:00Z") > duration("1h")'
    assert codes(f"  - name: r\n    when: '{condition}'\n    step_up: stale\n") == []
