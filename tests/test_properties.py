"""Promises 1 and 2 as properties: order never matters, tightening never loosens, limits
always hold, and an evaluation error never makes a token live longer."""

from __future__ import annotations

import random
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ttlpolicy import Decision, load_sources

NOW = "2026-03-02T10:00:00Z"
# "true" appears often so that several rules match at once and their effects meet.
CONDITIONS = [
    "true", "true", "true", 'device.trust == "unmanaged"', "user.mfa", "user.risk > 0.5", "time.hour >= 9",
    'location.zone == "corp"', "true", '"admins" in user.groups', 'resource.sensitivity == "restricted"',
    'tier == "finance"', "!user.mfa", 'client.binding != "none"',
]
# Reads an attribute no context here sends, so evaluating it is an error.
FAILING = "user.department == \"x\""
DURATIONS = [0, 60, 300, 600, 900, 1800, 3600, 5400, 7200, 14400, 43200, 86400, 172800, 604800]
LIMITS = {"access_ttl": {"min": 120, "max": 28800}, "refresh_ttl": {"min": 600, "max": 2592000}}

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def some_of(parts: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A non-empty dict with a random subset of ``parts`` (no filtering, so no wasted draws)."""
    keys = sorted(parts)
    return st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: parts[k] for k in chosen}))


def _floor_below_cap(effect: dict[str, Any]) -> dict[str, Any]:
    if "floor" in effect and "cap" in effect and effect["floor"] > effect["cap"]:
        effect["floor"], effect["cap"] = effect["cap"], effect["floor"]
    return effect


def ttl_effect(loosening: bool) -> st.SearchStrategy[dict[str, Any]]:
    factors = [0.0, 0.25, 0.5, 0.9, 1.0] + ([1.5, 3.0] if loosening else [])
    parts = {"multiply": st.sampled_from(factors), "cap": st.sampled_from(DURATIONS)}
    if loosening:
        parts["floor"] = st.sampled_from(DURATIONS)
    return some_of(parts).map(_floor_below_cap)


def rule(loosening: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    effects = some_of({
        "access_ttl": ttl_effect(loosening),
        "refresh_ttl": ttl_effect(loosening),
        "refresh": some_of({"rotation": st.just(True), "idle_timeout": st.sampled_from(DURATIONS[1:]),
                            "max_session": st.sampled_from(DURATIONS[3:])}),
        "deny": st.just("denied"),
        "step_up": st.just("step up"),
    })
    return st.tuples(st.sampled_from(CONDITIONS), effects).map(lambda t: {"when": t[0], **t[1]})


rules = st.lists(rule(), min_size=0, max_size=6)
contexts = st.fixed_dictionaries({}, optional={
    "tier": st.sampled_from(["standard", "finance"]),
    "device": st.fixed_dictionaries({"trust": st.sampled_from(["managed", "unmanaged", "known"])}),
    "user": st.fixed_dictionaries({}, optional={
        "mfa": st.booleans(), "risk": st.floats(0, 1), "groups": st.lists(st.sampled_from(["admins", "staff"]))}),
    "location": st.fixed_dictionaries({"ip": st.sampled_from(["10.1.2.3", "192.0.2.7", "2001:db8::5"])}),
    "resource": st.fixed_dictionaries({"sensitivity": st.sampled_from(["internal", "restricted"])}),
    "client": st.fixed_dictionaries({"binding": st.sampled_from(["none", "mtls"])}),
})
hours = st.integers(0, 23).map(lambda h: f"2026-03-02T{h:02d}:00:00Z")


def policy(rule_list: list[dict[str, Any]], **extra: Any) -> Any:
    named = [{"name": f"r{i}", **r} for i, r in enumerate(rule_list)]
    document = {
        "apiVersion": "ttlpolicy/v1", "name": "p",
        "defaults": {"access_ttl": 3600, "refresh_ttl": 86400, "tier": "standard"},
        "limits": LIMITS,
        "tiers": {"standard": {}, "finance": {"access_ttl": 900, "refresh_ttl": 28800,
                                              "max_access_ttl": 1800, "max_refresh_ttl": 43200}},
        "zones": {"corp": ["10.0.0.0/8"]},
        "attributes": {"user.department": {"type": "string"}},
        "rules": named, **extra,
    }
    return load_sources({"p.yaml": yaml.safe_dump(document)})


def no_longer(after: Decision, before: Decision) -> bool:
    if before.allow is False:
        return after.allow is False
    return after.access_ttl <= before.access_ttl and after.refresh_ttl <= before.refresh_ttl


# Pinned cases: several floors and several caps meeting on one lifetime.
@example([{"when": "true", "access_ttl": {"floor": 7200}}, {"when": "true", "access_ttl": {"floor": 5400}}],
         random.Random(1), {}, NOW)
@example([{"when": "true", "access_ttl": {"cap": 600}}, {"when": "true", "access_ttl": {"cap": 1800}}],
         random.Random(1), {}, NOW)
@given(rules, st.randoms(use_true_random=False), contexts, hours)
def test_order_never_matters(rule_list: list[dict[str, Any]], rnd: Any, context: dict[str, Any], now: str) -> None:
    """Shuffling the rules, and their names (the engine's internal order), changes nothing."""
    named = [{"name": f"r{i}", **r} for i, r in enumerate(rule_list)]
    names = [r["name"] for r in named]
    rnd.shuffle(names)
    shuffled = [{**r, "name": n} for r, n in zip(named, names)]
    rnd.shuffle(shuffled)
    first = load_sources({"p.yaml": yaml.safe_dump(_doc(named))}).decide(context, now=now)
    second = load_sources({"p.yaml": yaml.safe_dump(_doc(shuffled))}).decide(context, now=now)
    assert _outcome(first) == _outcome(second)
    if names == [r["name"] for r in named]:
        assert first.to_dict() == second.to_dict()


def _outcome(decision: Decision) -> dict[str, Any]:
    """The decision without the parts that name rules."""
    data = decision.to_dict()
    return {k: v for k, v in data.items() if k not in ("matched", "trace", "errors", "policy")}


def _doc(named: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "ttlpolicy/v1", "name": "p",
            "defaults": {"access_ttl": 3600, "refresh_ttl": 86400}, "limits": LIMITS, "rules": named,
            "zones": {"corp": ["10.0.0.0/8"]}}


@given(rules, rule(loosening=False), contexts, hours)
def test_a_tightening_rule_never_loosens(rule_list: list[dict[str, Any]], extra: dict[str, Any],
                                         context: dict[str, Any], now: str) -> None:
    before = policy(rule_list).decide(context, now=now)
    after = policy(rule_list + [extra]).decide(context, now=now)
    assert no_longer(after, before), (before.to_dict(), after.to_dict())
    assert after.step_up >= before.step_up


@given(rules, contexts, hours)
def test_limits_always_hold(rule_list: list[dict[str, Any]], context: dict[str, Any], now: str) -> None:
    decision = policy(rule_list).decide(context, now=now)
    if not decision.allow:
        assert decision.access_ttl == decision.refresh_ttl == 0
        return
    assert LIMITS["access_ttl"]["min"] <= decision.access_ttl <= LIMITS["access_ttl"]["max"]
    assert decision.refresh_ttl == 0 or LIMITS["refresh_ttl"]["min"] <= decision.refresh_ttl <= LIMITS[
        "refresh_ttl"]["max"]
    if decision.tier == "finance":
        assert decision.access_ttl <= max(1800, LIMITS["access_ttl"]["min"])
        assert decision.refresh_ttl <= 43200
    if decision.idle_timeout is not None:
        assert decision.refresh_ttl <= max(decision.idle_timeout, LIMITS["refresh_ttl"]["min"])


@example([], {"when": "true", "access_ttl": {"multiply": 3.0}}, {}, NOW, False)
@example([], {"when": "true", "refresh_ttl": {"floor": 172800}}, {}, NOW, False)
@example([], {"when": "true", "access_ttl": {"multiply": {"expr": "2.0 + user.risk", "min": 1.5}}}, {}, NOW, False)
@given(rules, rule(), contexts, hours, st.booleans())
def test_an_evaluation_error_never_lengthens(rule_list: list[dict[str, Any]], suspect: dict[str, Any],
                                            context: dict[str, Any], now: str, either: bool) -> None:
    """A rule whose condition fails is never better for the token than the same rule not matching.

    With ``either``, the condition is ``error || cond``: CEL makes that true when ``cond`` is
    (a real match), and an error otherwise, so the baseline is the rule with ``cond`` alone.
    """
    failing = {**suspect, "when": f"{FAILING} || {suspect['when']}" if either else FAILING}
    baseline = suspect["when"] if either else "false"
    without = policy(rule_list + [{**suspect, "when": baseline}]).decide(context, now=now)
    with_error = policy(rule_list + [failing]).decide(context, now=now)
    assert no_longer(with_error, without), (without.to_dict(), with_error.to_dict())
    if with_error.allow and with_error.errors:
        assert any(e.rule == f"r{len(rule_list)}" for e in with_error.errors)
