"""activity.* in policies: declared and type-checked, settable in tests, and never lengthening a
decision when (some of) it is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ttlpolicy import PolicyError, load_policies, load_sources
from ttlpolicy.cli.main import main
from ttlpolicy.vocabulary import ACTIVITY, BUILTIN

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "activity" / "policies"
POLICIES = load_policies(EXAMPLE)
NOW = "2026-03-02T10:00:00Z"

counts = st.integers(min_value=0, max_value=200)
ACTIVITY_VALUES = st.fixed_dictionaries({}, optional={
    "refreshes_1h": counts, "failed_auth_15m": st.integers(0, 30), "refresh_failures_1h": counts,
    "bad_signatures_1h": counts, "sessions": st.integers(0, 20), "ips_24h": st.integers(0, 20),
    "countries_24h": st.integers(0, 10), "new_country": st.booleans(), "idle_seconds": st.integers(0, 10**6),
    "client_refreshes_1h": counts, "client_failed_auth_15m": counts})


def decide(activity: dict[str, Any] | None) -> Any:
    context: dict[str, Any] = {"user": {"id": "alice"}}
    if activity is not None:
        context["activity"] = activity
    return POLICIES.decide(context, now=NOW)


@settings(max_examples=150, deadline=None)
@given(ACTIVITY_VALUES, st.data())
def test_missing_activity_never_lengthens_a_decision(full: dict[str, Any], data: st.DataObject) -> None:
    removed = data.draw(st.sets(st.sampled_from(sorted(full))) if full else st.just(set()))
    partial = {k: v for k, v in full.items() if k not in removed}
    known, unknown = decide(full), decide(partial)
    assert unknown.access_ttl <= known.access_ttl
    assert unknown.refresh_ttl <= known.refresh_ttl
    assert known.allow or not unknown.allow
    assert unknown.step_up or not known.step_up or not known.allow
    nothing = decide(None)  # the store could not answer at all
    assert nothing.access_ttl <= known.access_ttl and nothing.refresh_ttl <= known.refresh_ttl


def test_activity_attributes_are_declared_and_typed() -> None:
    assert set(ACTIVITY) == {"activity." + n for n in (
        "refreshes_1h", "failed_auth_15m", "refresh_failures_1h", "bad_signatures_1h", "sessions", "ips_24h",
        "countries_24h", "new_country", "idle_seconds", "client_refreshes_1h", "client_failed_auth_15m")}
    assert all(BUILTIN[n].default is None and not BUILTIN[n].derived for n in ACTIVITY)
    policy = """apiVersion: ttlpolicy/v1
name: typed
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - name: wrong-type
    when: activity.new_country > 3
    access_ttl: {cap: 5m}
  - name: unknown
    when: activity.refreshes_per_fortnight > 1
    access_ttl: {cap: 5m}
"""
    try:
        load_sources({"typed.yaml": policy})
    except PolicyError as exc:
        codes = sorted((p.location.line if p.location else 0, p.code) for p in exc.problems)
    else:
        raise AssertionError("a type error in an activity condition must not load")
    assert [line for line, _ in codes] == [6, 9]


def test_context_values_are_validated() -> None:
    from ttlpolicy import ContextError
    try:
        decide({"refreshes_1h": -1, "new_country": "yes"})
    except ContextError as exc:
        assert sorted(p.path for p in exc.problems) == ["activity.new_country", "activity.refreshes_1h"]
    else:
        raise AssertionError("negative counts and non-boolean flags are refused")


def test_the_example_policy_tests_pass(capsys: Any) -> None:
    assert main(["test", str(EXAMPLE / "tests"), "--min-coverage", "100"]) == 0
    assert main(["lint", str(EXAMPLE)]) == 0
    assert "loosening-rule" in capsys.readouterr().out
