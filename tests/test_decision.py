"""The decision as data: its JSON form, its expiry instants and the trace a later stage extends."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jsonschema

from ttlpolicy import decision as decision_module
from ttlpolicy.decision import (FIELDS, Decision, DecisionField, RuleOutcome, Step, _attribute, _utc, decision_schema,
                                step_dict)

ISSUED = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def as_json(decision: Decision) -> dict[str, Any]:
    """``decision.to_dict()``, checked against a to_dict generated from FIELDS now: the one in use
    was generated when decision.py was imported, which a runner that imported it earlier (mutation
    testing, for one) would otherwise be left testing instead of the generator."""
    out = decision.to_dict()
    assert decision_module._generate_to_dict()(decision) == out
    return out


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
    assert as_json(decision) == {
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
    assert as_json(_decision(rules=[RuleOutcome("short", "matched")]))["rules"] == [
        {"rule": "short", "outcome": "matched"}]


def test_a_field_reads_the_attribute_its_key_ends_with_unless_it_names_another() -> None:
    assert _attribute("refresh.rotation", {"type": "boolean"}) == DecisionField(
        "refresh.rotation", {"type": "boolean"}, "d.rotation", "rotation")
    assert _attribute("policy.name", {"type": "string"}, "policy_name") == DecisionField(
        "policy.name", {"type": "string"}, "d.policy_name", "policy_name")
    assert _attribute("a.b.c", {}).attribute == "c"  # the last part, however deep
    assert all(hasattr(_decision(), spec.attribute) for spec in FIELDS if spec.attribute)


def test_the_schema_of_the_json_form_is_the_field_table() -> None:
    """The OpenAPI document's Decision: every field required except the optional ones, each
    nested object too, and the JSON form of decisions with and without each part validates."""
    schema = decision_schema()
    assert schema["type"] == schema["properties"]["refresh"]["type"] == schema["properties"]["policy"]["type"] == "object"
    assert sorted(schema["required"]) == sorted({spec.key.split(".")[0] for spec in FIELDS if not spec.optional})
    assert sorted(schema["properties"]["refresh"]["required"]) == sorted(
        spec.key.split(".")[1] for spec in FIELDS if spec.key.startswith("refresh."))
    assert "rules" in schema["properties"] and "rules" not in schema["required"]
    for decision in (_decision(), _decision(allow=False, access_ttl=0, refresh_ttl=0, deny_reason="no"),
                     _decision(rules=[RuleOutcome("short", "matched")], errors=[RuleOutcome("e", "error", "boom")],
                               session_end=ISSUED + timedelta(hours=2), tier="gold")):
        jsonschema.validate(as_json(decision), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**_decision().to_dict(), "access_ttl": "15m"}, schema)


def test_steps_a_later_stage_appends_to_the_trace_are_kept_everywhere() -> None:
    decision = _decision()
    assert decision.trace_dicts() == [step_dict(entry) for entry in decision.steps]  # not yet formatted
    assert decision.trace_entries() == decision.steps and decision.trace_entries() is not decision.steps
    assert decision.trace is decision.trace  # formatted once, then kept
    decision.trace.append(Step("refresh_ttl", "automatic", "disable_refresh", 0, source="activity"))
    assert decision.trace_entries()[-1] == ("refresh_ttl", "automatic", "disable_refresh", 0, None, "activity")
    assert len(decision.trace_entries()) == 3
    assert as_json(decision)["trace"][-1] == {"target": "refresh_ttl", "step": "automatic",
                                               "value": "disable_refresh", "result": 0, "source": "activity"}


def test_expiry_instants_are_utc_whole_seconds_and_absent_for_what_is_not_issued() -> None:
    berlin = timezone(timedelta(hours=1))
    decision = _decision(issued_at=datetime(2026, 3, 2, 11, 0, 0, 999_000, tzinfo=berlin),
                         session_end=datetime(2026, 3, 2, 13, 0, tzinfo=berlin))
    assert as_json(decision)["expires_at"] == decision.expires_at() == {
        "access": "2026-03-02T10:15:00Z", "refresh": "2026-03-02T11:00:00Z", "session": "2026-03-02T12:00:00Z"}
    denied = _decision(allow=False, access_ttl=0, refresh_ttl=0)
    assert as_json(denied)["expires_at"] == {"access": None, "refresh": None, "session": None}
    no_refresh = as_json(_decision(refresh_ttl=0))["expires_at"]
    assert no_refresh["refresh"] is None and no_refresh["access"] == "2026-03-02T10:15:00Z"


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
    assert as_json(_decision(steps=steps))["trace"] == [step_dict(entry) for entry in steps]
