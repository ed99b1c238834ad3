"""The decision as data: its JSON form, its expiry instants and the trace a later stage extends."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttlpolicy.decision import Decision, RuleOutcome, Step, _utc, step_dict

ISSUED = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def _decision(**changes: object) -> Decision:
    base = Decision(
        allow=True, access_ttl=900, refresh_ttl=3600, rotation=True, idle_timeout=1800, max_session=7200,
        reuse_grace=30, sender_constrained=False, issued_at=ISSUED, session_end=None, step_up=False,
        step_up_reasons=[], deny_reason=None, matched=["short"], errors=[], policy_name="p", policy_digest="sha256:x",
        steps=[("access_ttl", "base", 3600, 3600, None, "defaults"), ("access_ttl", "cap", 900, 900, "short", None)])
    return dataclasses.replace(base, **changes)


def test_a_step_names_its_rule_and_source_only_when_it_has_them() -> None:
    assert Step("access_ttl", "base", 3600, 3600).to_dict() == {
        "target": "access_ttl", "step": "base", "value": 3600, "result": 3600}
    assert Step("access_ttl", "cap", 900, 900, rule="short", source="tier gold").to_dict() == {
        "target": "access_ttl", "step": "cap", "value": 900, "result": 900, "rule": "short", "source": "tier gold"}
    assert step_dict(("refresh_ttl", "deny", None, 0, "r", None)) == {
        "target": "refresh_ttl", "step": "deny", "value": None, "result": 0, "rule": "r"}
    assert step_dict(("refresh_ttl", "limit_min", 60, 60, None, "limits")) == {
        "target": "refresh_ttl", "step": "limit_min", "value": 60, "result": 60, "source": "limits"}


def test_a_rule_outcome_carries_its_message_and_applied_effects_only_when_it_has_them() -> None:
    assert RuleOutcome("r", "matched").to_dict() == {"rule": "r", "outcome": "matched"}
    assert RuleOutcome("r", "error", "boom", "deny").to_dict() == {
        "rule": "r", "outcome": "error", "message": "boom", "applied": "deny"}


def test_the_json_form_of_a_decision() -> None:
    decision = _decision(errors=[RuleOutcome("e", "error", "boom")], extra={"state": "degraded"})
    assert decision.to_dict() == {
        "allow": True, "access_ttl": 900, "refresh_ttl": 3600,
        "refresh": {"rotation": True, "idle_timeout": 1800, "max_session": 7200, "reuse_grace": 30,
                    "on_reuse": "revoke_family", "sender_constrained": False},
        "expires_at": {"access": "2026-03-02T10:15:00Z", "refresh": "2026-03-02T11:00:00Z", "session": None},
        "step_up": False, "step_up_reasons": [], "deny_reason": None, "matched": ["short"],
        "errors": [{"rule": "e", "outcome": "error", "message": "boom"}], "tier": None,
        "trace": [{"target": "access_ttl", "step": "base", "value": 3600, "result": 3600, "source": "defaults"},
                  {"target": "access_ttl", "step": "cap", "value": 900, "result": 900, "rule": "short"}],
        "policy": {"name": "p", "digest": "sha256:x"},
        "state": "degraded",
    }
    assert _decision(rules=[RuleOutcome("short", "matched")]).to_dict()["rules"] == [
        {"rule": "short", "outcome": "matched"}]


def test_steps_a_later_stage_appends_to_the_trace_are_kept_everywhere() -> None:
    decision = _decision()
    assert decision.trace_entries() == decision.steps and decision.trace_entries() is not decision.steps
    assert decision.trace is decision.trace  # formatted once, then kept
    decision.trace.append(Step("refresh_ttl", "automatic", "disable_refresh", 0, source="activity"))
    assert decision.trace_entries()[-1] == ("refresh_ttl", "automatic", "disable_refresh", 0, None, "activity")
    assert len(decision.trace_entries()) == 3
    assert decision.to_dict()["trace"][-1] == {"target": "refresh_ttl", "step": "automatic",
                                               "value": "disable_refresh", "result": 0, "source": "activity"}


def test_expiry_instants_are_utc_whole_seconds_and_absent_for_what_is_not_issued() -> None:
    berlin = timezone(timedelta(hours=1))
    decision = _decision(issued_at=datetime(2026, 3, 2, 11, 0, 0, 999_000, tzinfo=berlin),
                         session_end=datetime(2026, 3, 2, 13, 0, tzinfo=berlin))
    assert decision.expires_at() == {"access": "2026-03-02T10:15:00Z", "refresh": "2026-03-02T11:00:00Z",
                                     "session": "2026-03-02T12:00:00Z"}
    denied = _decision(allow=False, access_ttl=0, refresh_ttl=0)
    assert denied.expires_at() == {"access": None, "refresh": None, "session": None}
    no_refresh = _decision(refresh_ttl=0)
    assert no_refresh.expires_at()["refresh"] is None and no_refresh.expires_at()["access"] == "2026-03-02T10:15:00Z"


def test_expiry_instants_are_utc_whatever_the_machine_s_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        berlin = timezone(timedelta(hours=1))
        decision = _decision(issued_at=datetime(2026, 3, 2, 11, 0, tzinfo=berlin))
        assert decision.expires_at()["access"] == "2026-03-02T10:15:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp())))
def test_expiry_instants_are_formatted_as_strftime_formats_them(second: int) -> None:
    assert _utc.__wrapped__(second) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


@given(st.lists(st.tuples(st.sampled_from(["access_ttl", "refresh_ttl"]), st.sampled_from(["base", "cap", "deny"]),
                          st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 4)), st.integers(0, 10**6),
                          st.one_of(st.none(), st.just("r")), st.one_of(st.none(), st.just("defaults"))), max_size=6))
def test_the_json_trace_is_step_dict_of_every_compact_entry(steps: list[Any]) -> None:
    """to_dict() writes the common entries (a rule or a source, not both) out inline."""
    assert _decision(steps=steps).to_dict()["trace"] == [step_dict(entry) for entry in steps]
