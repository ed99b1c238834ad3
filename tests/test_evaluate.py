"""The reference evaluator step by step: every number of a decision and the trace that explains it.

The data-driven cases (tests/cases/) check the lifetimes; these tests pin the whole decision,
trace included, for the combination rules one at a time: tier base and ceiling, factors, floors
and caps, global limits, idle timeout and session, deny, and a rule whose condition fails (only
its tightening effects, with a note naming them). Mutation testing (docs/mutation.md) showed
which of these details nothing else checked. Each decision is made with ``explain=True`` (the
reference evaluator) and without (the generated program), and the two must agree.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

import ttlpolicy.compile
from ttlpolicy import load_sources
from ttlpolicy.durations import MAX_DURATION
from ttlpolicy.evaluate import decide as reference_decide, error_text, seconds
from ttlpolicy.generate import generate_program
from ttlpolicy.policyset import PolicySet

NOW = "2026-03-02T10:00:00Z"
NOW_DT = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


class _Policy:
    """A policy document, compiled afresh for every use: mutation testing forks its workers from
    a process that imported this module, so a policy compiled at import would never meet a
    mutant of the compiler or of the generated code (docs/mutation.md)."""

    def __init__(self, document: dict[str, Any]):
        self.text = yaml.safe_dump({"apiVersion": "ttlpolicy/v1", "name": "p", **document})

    def compile(self) -> PolicySet:
        return load_sources({"p.yaml": self.text})

    def get(self, name: str) -> Any:
        return self.compile().get(name)


def _policy(**document: Any) -> _Policy:
    return _Policy(document)


def _decide(policy: _Policy, context: dict[str, Any], now: str = NOW) -> dict[str, Any]:
    """The explained decision as JSON, after checking the unexplained one says the same, and that
    the generated code made it itself unless a rule failed (a recorder stands in for the reference)."""
    handed: list[bool] = []

    def recorder(compiled: Any, act: Any, instant: datetime, explain: bool) -> Any:
        handed.append(explain)
        return reference_decide(compiled, act, instant, explain)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ttlpolicy.compile, "generate_program", functools.partial(generate_program, reference=recorder))
        policies = policy.compile()
    explained = policies.decide(context, now=now, explain=True).to_dict()
    plain = policies.decide(context, now=now).to_dict()
    assert {k: v for k, v in explained.items() if k != "rules"} == plain
    assert handed == [True] + ([False] if explained["errors"] else [])
    return explained


def _step(target: str, step: str, value: Any, result: int, rule: str | None = None,
          source: str | None = None) -> dict[str, Any]:
    out = {"target": target, "step": step, "value": value, "result": result}
    if rule is not None:
        out["rule"] = rule
    if source is not None:
        out["source"] = source
    return out


TIERED = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d", "tier": "standard"},
    limits={"access_ttl": {"min": "10m", "max": "2h"}, "refresh_ttl": {"min": "1h", "max": "2d"}},
    tiers={"standard": {"access_ttl": "30m", "refresh_ttl": "12h", "max_access_ttl": "45m", "max_refresh_ttl": "20h"},
           "public": {}},
    rules=[{"name": "longer", "when": "user.mfa", "access_ttl": {"multiply": 2}, "refresh_ttl": {"multiply": 2}},
           {"name": "much-longer", "when": '"admins" in user.groups',
            "access_ttl": {"multiply": 10}, "refresh_ttl": {"multiply": 10}},
           {"name": "shorter", "when": "!user.mfa", "access_ttl": {"multiply": 0.1}, "refresh_ttl": {"multiply": 0.01}},
           {"name": "no-refresh", "when": '"contractors" in user.groups', "refresh_ttl": {"cap": "0s"}},
           {"name": "one-second-refresh", "when": '"kiosk" in user.groups', "refresh_ttl": {"cap": "1s"}}])


def test_the_tier_sets_the_base_and_its_ceiling_cuts_after_the_factors() -> None:
    decision = _decide(TIERED, {"user": {"mfa": True}})
    assert (decision["access_ttl"], decision["refresh_ttl"], decision["tier"]) == (2700, 72000, "standard")
    assert decision["trace"] == [
        _step("access_ttl", "base", 1800, 1800, source="tier standard"),
        _step("access_ttl", "multiply", 2.0, 3600, rule="longer"),
        _step("refresh_ttl", "base", 43200, 43200, source="tier standard"),
        _step("refresh_ttl", "multiply", 2.0, 86400, rule="longer"),
        _step("access_ttl", "tier_max", 2700, 2700, source="tier standard"),
        _step("refresh_ttl", "tier_max", 72000, 72000, source="tier standard"),
    ]
    assert decision["rules"] == [{"rule": name, "outcome": outcome} for name, outcome in (
        ("longer", "matched"), ("much-longer", "no_match"), ("no-refresh", "no_match"),
        ("one-second-refresh", "no_match"), ("shorter", "no_match"))]
    assert decision["policy"]["name"] == "p" and decision["deny_reason"] is None


def test_a_tier_without_a_base_uses_the_defaults_and_the_global_maximum_still_holds() -> None:
    decision = _decide(TIERED, {"tier": "public", "user": {"mfa": True, "groups": ["admins"]}})
    assert decision["trace"] == [
        _step("access_ttl", "base", 3600, 3600, source="tier public"),
        _step("access_ttl", "multiply", 2.0, 7200, rule="longer"),
        _step("access_ttl", "multiply", 10.0, 72000, rule="much-longer"),
        _step("refresh_ttl", "base", 86400, 86400, source="tier public"),
        _step("refresh_ttl", "multiply", 2.0, 172800, rule="longer"),
        _step("refresh_ttl", "multiply", 10.0, 1728000, rule="much-longer"),
        _step("access_ttl", "limit_max", 7200, 7200, source="limits"),
        _step("refresh_ttl", "limit_max", 172800, 172800, source="limits"),
    ]


def test_the_global_minimum_lifts_both_lifetimes_but_never_a_refresh_token_of_zero() -> None:
    lifted = _decide(TIERED, {"user": {"mfa": False}})
    assert lifted["trace"][-2:] == [_step("access_ttl", "limit_min", 600, 600, source="limits"),
                                    _step("refresh_ttl", "limit_min", 3600, 3600, source="limits")]
    assert (lifted["access_ttl"], lifted["refresh_ttl"]) == (600, 3600)
    none = _decide(TIERED, {"user": {"mfa": True, "groups": ["contractors"]}})
    assert none["refresh_ttl"] == 0 and none["expires_at"]["refresh"] is None
    assert _step("refresh_ttl", "cap", 0, 0, rule="no-refresh") in none["trace"]
    assert [s for s in none["trace"] if s["step"].startswith("limit")] == []
    # a refresh token of one second is issued, so the minimum applies to it
    one = _decide(TIERED, {"user": {"mfa": True, "groups": ["kiosk"]}})
    assert one["refresh_ttl"] == 3600
    assert one["trace"][-1] == _step("refresh_ttl", "limit_min", 3600, 3600, source="limits")


FLOORS_AND_CAPS = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d", "refresh": {"idle_timeout": "1d"}},
    rules=[{"name": "floor-1h", "when": "true", "access_ttl": {"floor": "1h"}},
           {"name": "floor-2h", "when": "user.mfa", "access_ttl": {"floor": "2h"}},
           {"name": "cap-1h", "when": "true", "access_ttl": {"cap": "1h"}, "refresh_ttl": {"cap": "1d"}},
           {"name": "cap-90m", "when": "user.mfa", "access_ttl": {"cap": "90m"}}])


def test_a_floor_cap_or_idle_timeout_equal_to_the_value_changes_nothing_and_leaves_no_step() -> None:
    decision = _decide(FLOORS_AND_CAPS, {"user": {"mfa": False}})
    assert decision["trace"] == [_step("access_ttl", "base", 3600, 3600, source="defaults"),
                                 _step("refresh_ttl", "base", 86400, 86400, source="defaults")]


def test_the_highest_floor_then_the_lowest_cap() -> None:
    decision = _decide(FLOORS_AND_CAPS, {"user": {"mfa": True}})
    assert decision["trace"] == [_step("access_ttl", "base", 3600, 3600, source="defaults"),
                                 _step("access_ttl", "floor", 7200, 7200, rule="floor-2h"),
                                 _step("access_ttl", "cap", 3600, 3600, rule="cap-1h"),
                                 _step("refresh_ttl", "base", 86400, 86400, source="defaults")]


DENIES = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d", "refresh": {"rotation": True, "sender_constrained": True}},
    rules=[{"name": "b-deny", "when": "user.mfa", "deny": "second reason"},
           {"name": "a-deny", "when": "user.mfa", "deny": "first reason"},
           {"name": "grace", "when": "true", "refresh": {"reuse_grace": "30s"}},
           {"name": "bind", "when": "user.mfa", "refresh": {"rotation": True, "sender_constrained": True}}])


def test_every_deny_is_reported_and_the_first_by_name_takes_the_blame() -> None:
    decision = _decide(DENIES, {"user": {"mfa": True}})
    assert decision["allow"] is False and (decision["access_ttl"], decision["refresh_ttl"]) == (0, 0)
    assert decision["deny_reason"] == "first reason; second reason"
    assert decision["trace"][-2:] == [_step("access_ttl", "deny", None, 0, rule="a-deny"),
                                      _step("refresh_ttl", "deny", None, 0, rule="a-deny")]
    assert decision["expires_at"] == {"access": None, "refresh": None, "session": None}


def test_refresh_defaults_hold_without_any_rule_and_a_rule_adds_a_grace_period() -> None:
    decision = _decide(DENIES, {"user": {"mfa": False}})
    assert decision["allow"] is True and decision["deny_reason"] is None
    assert decision["refresh"] == {"rotation": True, "idle_timeout": None, "max_session": None, "reuse_grace": 30,
                                   "on_reuse": "revoke_family", "sender_constrained": True}


ERRORED = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d"},
    attributes={"user.department": {"type": "string", "values": ["eng", "sales"]}},
    rules=[{"name": "errs", "when": 'user.department == "eng"',
            "access_ttl": {"multiply": 0.5, "cap": "20m", "floor": "10m"},
            "refresh_ttl": {"multiply": 1.5, "cap": "10h"},
            "refresh": {"rotation": True, "idle_timeout": "1h", "max_session": "8h", "reuse_grace": "30s",
                        "sender_constrained": True},
            "step_up": "verify again"},
           {"name": "floor-only", "when": 'user.department == "sales"', "access_ttl": {"floor": "3h"}},
           {"name": "deny-errs", "when": 'user.department == "sales"', "deny": "no sales",
            "refresh_ttl": {"multiply": 1.0}}])


def test_a_failed_condition_applies_only_its_tightening_effects_and_names_them() -> None:
    decision = _decide(ERRORED, {})
    missing = "no such attribute 'user.department'"
    assert decision["errors"] == [
        {"rule": "deny-errs", "outcome": "error", "message": missing,
         "applied": "tightening effects only: refresh_ttl × 1, deny"},
        {"rule": "errs", "outcome": "error", "message": missing,
         "applied": "tightening effects only: access_ttl × 0.5, access_ttl cap 20m, refresh_ttl cap 10h, "
                    "refresh rotation, sender-constrained refresh, reuse_grace 30s, idle_timeout 1h, "
                    "max_session 8h, step_up"},
        {"rule": "floor-only", "outcome": "error", "message": missing, "applied": "tightening effects only: none"},
    ]
    assert decision["rules"] == decision["errors"]
    assert decision["refresh"] == {"rotation": True, "idle_timeout": 3600, "max_session": 28800, "reuse_grace": 30,
                                   "on_reuse": "revoke_family", "sender_constrained": True}
    assert decision["step_up"] is True and decision["step_up_reasons"] == ["verify again"]
    assert decision["trace"] == [  # the floor and the factor 1.5 are not applied; the deny wins anyway
        _step("access_ttl", "base", 3600, 3600, source="defaults"),
        _step("access_ttl", "multiply", 0.5, 1800, rule="errs"),
        _step("access_ttl", "cap", 1200, 1200, rule="errs"),
        _step("refresh_ttl", "base", 86400, 86400, source="defaults"),
        _step("refresh_ttl", "multiply", 1.0, 86400, rule="deny-errs"),
        _step("refresh_ttl", "cap", 36000, 36000, rule="errs"),
        _step("refresh_ttl", "idle_timeout", 3600, 3600, rule="errs"),
        _step("access_ttl", "deny", None, 0, rule="deny-errs"),
        _step("refresh_ttl", "deny", None, 0, rule="deny-errs"),
    ]


SESSIONS = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d",
              "refresh": {"max_session": "8h", "idle_timeout": "12h", "reuse_grace": "1m"}},
    rules=[{"name": "short-session", "when": "user.mfa == false", "refresh": {"max_session": "2h", "idle_timeout": "90m"}}])


def test_a_session_at_its_limit_is_over_and_the_rule_that_set_it_is_named() -> None:
    decision = _decide(SESSIONS, {"user": {"auth_time": "2026-03-02T02:00:00Z"}})
    assert decision["allow"] is False
    assert decision["deny_reason"] == "the session has reached its absolute limit (max_session); re-authenticate"
    assert decision["expires_at"]["session"] == "2026-03-02T04:00:00Z"
    assert decision["trace"][2:] == [
        _step("refresh_ttl", "idle_timeout", 5400, 5400, rule="short-session"),
        _step("access_ttl", "session", 0, 0, rule="short-session"),
        _step("refresh_ttl", "session", 0, 0, rule="short-session"),
        _step("access_ttl", "deny", None, 0, rule="short-session"),
        _step("refresh_ttl", "deny", None, 0, rule="short-session"),
    ]
    # exactly at the end of the default session: over too, blamed on the setting
    at_end = _decide(SESSIONS, {"user": {"auth_time": "2026-03-02T02:00:00Z", "mfa": True}})
    assert at_end["allow"] is False and at_end["trace"][-1] == _step("refresh_ttl", "deny", None, 0, rule="max_session")


def test_one_second_of_session_left_bounds_both_lifetimes() -> None:
    decision = _decide(SESSIONS, {"user": {"auth_time": "2026-03-02T02:00:01Z", "mfa": True}})
    assert decision["allow"] is True and (decision["access_ttl"], decision["refresh_ttl"]) == (1, 1)
    assert decision["expires_at"] == {"access": "2026-03-02T10:00:01Z", "refresh": "2026-03-02T10:00:01Z",
                                      "session": "2026-03-02T10:00:01Z"}
    assert decision["trace"][2:] == [_step("refresh_ttl", "idle_timeout", 43200, 43200, source="defaults"),
                                     _step("access_ttl", "session", 1, 1, source="session"),
                                     _step("refresh_ttl", "session", 1, 1, source="session")]


def test_without_a_session_start_the_cap_bounds_each_token() -> None:
    decision = _decide(SESSIONS, {"user": {"mfa": True}})
    assert decision["refresh"]["reuse_grace"] == 60  # the default, no rule sets one
    assert decision["expires_at"]["session"] is None
    assert decision["trace"][2:] == [_step("refresh_ttl", "idle_timeout", 43200, 43200, source="defaults"),
                                     _step("refresh_ttl", "session", 28800, 28800, source="defaults")]


def test_a_token_session_end_bounds_lifetimes_without_any_max_session() -> None:
    decision = _decide(_policy(defaults={"access_ttl": "1h", "refresh_ttl": "1d"}, rules=[]),
                       {"token": {"session_exp": "2026-03-02T10:30:00Z"}})
    assert decision["refresh"]["max_session"] is None and decision["refresh"]["idle_timeout"] is None
    assert decision["trace"][2:] == [_step("access_ttl", "session", 1800, 1800, source="session"),
                                     _step("refresh_ttl", "session", 1800, 1800, source="session")]


def test_a_session_ending_exactly_when_a_token_would_leaves_that_token_alone() -> None:
    policy = _policy(defaults={"access_ttl": "1h", "refresh_ttl": "2h"}, rules=[])
    access_at_end = _decide(policy, {"token": {"session_exp": "2026-03-02T11:00:00Z"}})
    assert (access_at_end["access_ttl"], access_at_end["refresh_ttl"]) == (3600, 3600)
    assert access_at_end["trace"][2:] == [_step("refresh_ttl", "session", 3600, 3600, source="session")]
    refresh_at_end = _decide(policy, {"token": {"session_exp": "2026-03-02T12:00:00Z"}})
    assert (refresh_at_end["access_ttl"], refresh_at_end["refresh_ttl"]) == (3600, 7200)
    assert refresh_at_end["trace"][2:] == []


def test_the_verified_token_s_auth_time_starts_the_session_not_the_context_s() -> None:
    decision = _decide(SESSIONS, {"user": {"mfa": True, "auth_time": "2026-03-01T00:00:00Z"},
                                  "token": {"auth_time": "2026-03-02T09:00:00Z"}})
    assert decision["allow"] is True and decision["expires_at"]["session"] == "2026-03-02T17:00:00Z"


def test_a_failed_factor_with_a_lower_bound_above_one_applies_one() -> None:
    policy = _policy(defaults={"access_ttl": "1h", "refresh_ttl": "1d"},
                     attributes={"user.trust": {"type": "double", "min": 0, "max": 10}},
                     rules=[{"name": "trusted", "when": "true",
                             "access_ttl": {"multiply": {"expr": "1.0 + user.trust / 10.0", "min": 1.2, "max": 1.8}}}])
    decision = _decide(policy, {})
    assert decision["access_ttl"] == 3600
    assert decision["errors"] == [{"rule": "trusted", "outcome": "error",
                                   "message": "multiply '1.0 + user.trust / 10.0': no such attribute 'user.trust'",
                                   "applied": "factor 1 (its lower bound, at most 1)"}]


FACTORS = _policy(
    defaults={"access_ttl": "1h", "refresh_ttl": "1d"},
    attributes={"user.risk": {"type": "double", "min": 0, "max": 1}, "user.department": {"type": "string"}},
    rules=[{"name": "risk", "when": "true", "refresh_ttl": {"multiply": {"expr": "1.0 / (1.0 - user.risk)", "min": 0.25}}},
           {"name": "capped", "when": "true",
            "access_ttl": {"multiply": {"expr": "1.0 / (1.0 - user.risk)", "min": 0.5, "max": 1.5}}},
           {"name": "dept", "when": 'user.department == "eng"',
            "access_ttl": {"multiply": {"expr": "1.0 - user.risk", "min": 0.2}},
            "refresh_ttl": {"multiply": {"expr": "1.0 - user.risk", "min": 0.2}}}])
DEPT_FAILED = {"rule": "dept", "outcome": "error", "message": "no such attribute 'user.department'",
               "applied": "tightening effects only: access_ttl × 0.2, refresh_ttl × 0.2"}


def test_factors_are_clamped_to_their_bounds_and_a_failed_condition_still_evaluates_them() -> None:
    decision = _decide(FACTORS, {"user": {"risk": 0.5}})
    assert decision["trace"] == [  # 2.0 is clamped to 1.5 by one rule, not by the other (no upper bound)
        _step("access_ttl", "base", 3600, 3600, source="defaults"),
        _step("access_ttl", "multiply", 0.5, 1800, rule="dept"),
        _step("access_ttl", "multiply", 1.5, 2700, rule="capped"),
        _step("refresh_ttl", "base", 86400, 86400, source="defaults"),
        _step("refresh_ttl", "multiply", 0.5, 43200, rule="dept"),
        _step("refresh_ttl", "multiply", 2.0, 86400, rule="risk"),
    ]
    assert decision["errors"] == [{**DEPT_FAILED, "applied": "tightening effects only: access_ttl × 0.5, "
                                                             "refresh_ttl × 0.5"}]


def test_a_factor_that_is_not_finite_falls_back_to_its_lower_bound_at_most_one() -> None:
    decision = _decide(FACTORS, {"user": {"risk": 1.0}})
    not_finite = "factor gave float, not a finite number"
    assert decision["errors"] == [
        {"rule": "capped", "outcome": "error", "message": f"multiply '1.0 / (1.0 - user.risk)': {not_finite}",
         "applied": "factor 0.5 (its lower bound, at most 1)"},
        DEPT_FAILED,
        {"rule": "risk", "outcome": "error", "message": f"multiply '1.0 / (1.0 - user.risk)': {not_finite}",
         "applied": "factor 0.25 (its lower bound, at most 1)"},
    ]
    assert (decision["access_ttl"], decision["refresh_ttl"]) == (360, 4320)


def test_a_failed_condition_whose_factor_fails_too_gets_both_errors() -> None:
    decision = _decide(FACTORS, {})
    missing = "no such attribute 'user.risk'"
    assert decision["errors"] == [
        {"rule": "capped", "outcome": "error", "message": f"multiply '1.0 / (1.0 - user.risk)': {missing}",
         "applied": "factor 0.5 (its lower bound, at most 1)"},
        {"rule": "dept", "outcome": "error", "message": f"multiply '1.0 - user.risk': {missing}",
         "applied": "factor 0.2 (its lower bound, at most 1)"},
        {"rule": "dept", "outcome": "error", "message": f"multiply '1.0 - user.risk': {missing}",
         "applied": "factor 0.2 (its lower bound, at most 1)"},
        DEPT_FAILED,
        {"rule": "risk", "outcome": "error", "message": f"multiply '1.0 / (1.0 - user.risk)': {missing}",
         "applied": "factor 0.25 (its lower bound, at most 1)"},
    ]


def test_a_factor_program_giving_a_boolean_is_an_error() -> None:
    policy = FACTORS.get("p")
    activation = policy.context.activation({"user": {"risk": 0.5}}, NOW_DT)
    rule = policy.rules[0]
    assert rule.name == "capped" and rule.access is not None
    odd_rule = dataclasses.replace(rule, access=dataclasses.replace(rule.access, factor_program=lambda act: True))
    decision = reference_decide(dataclasses.replace(policy, rules=(odd_rule, *policy.rules[1:])), activation, NOW_DT)
    assert [e.message for e in decision.errors if e.rule == "capped"] == [
        "multiply '1.0 / (1.0 - user.risk)': factor gave bool, not a finite number"]


def test_a_decision_carries_the_activation_its_rules_saw() -> None:
    """What runs after the policy (rate limits' and emergencies' conditions) reads the same
    validated request instead of validating the context again."""
    policy = FLOORS_AND_CAPS.get("p")
    activation = policy.context.activation({"user": {"mfa": True}}, NOW_DT)
    for explain in (False, True):
        assert reference_decide(policy, activation, NOW_DT, explain).activation is activation
    assert policy.decide({"user": {"mfa": True}}, NOW_DT).activation["user"]["mfa"] is True  # the generated program's


def test_the_reference_explains_only_when_asked_and_a_non_boolean_condition_is_an_error() -> None:
    policy = FLOORS_AND_CAPS.get("p")
    activation = policy.context.activation({"user": {"mfa": True}}, NOW_DT)
    assert reference_decide(policy, activation, NOW_DT).rules is None
    odd = dataclasses.replace(policy, rules=tuple(dataclasses.replace(rule, condition=lambda act: 1)
                                                  for rule in policy.rules))
    decision = reference_decide(odd, activation, NOW_DT)
    assert decision.matched == [] and {e.message for e in decision.errors} == {"condition gave int, not bool"}
    assert decision.access_ttl == 3600  # the floors of rules that failed do not apply; their caps do


@pytest.mark.parametrize(("value", "whole"), [(2519.9999999999995, 2520), (550.55, 550), (0.0, 0),
                                              (float(MAX_DURATION), MAX_DURATION), (MAX_DURATION + 0.5, MAX_DURATION),
                                              (float("inf"), MAX_DURATION),
                                              (float("nan"), 0)])
def test_seconds_rounds_down_forgives_float_noise_and_stays_in_range(value: float, whole: int) -> None:
    assert seconds(value) == whole


def test_error_text_is_the_first_line_at_most_200_characters() -> None:
    assert error_text(ValueError("first\nsecond")) == "first"
    assert error_text(KeyError()) == "KeyError"
    assert error_text(ValueError("x" * 300)) == "x" * 200
