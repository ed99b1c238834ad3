"""The symbolic compiler has exactly the evaluator's semantics: thousands of random requests
decided by model evaluation of the SMT terms and by the real evaluator give identical fields,
rounding of IEEE 754 factor products, fail-safe errors and session arithmetic included."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy import ContextError, load_policies, load_sources
from ttlpolicy.prove.encode import Locator, encode
from ttlpolicy.prove.solve import evaluate
from ttlpolicy.prove.symbols import SymbolicContext

REPO = Path(__file__).resolve().parent.parent
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Factors whose products round (0.7, 0.3, 1.1 ...), expression factors, floors over caps, int
# arithmetic with its errors, absent attributes, timestamps and every refresh setting.
ROUNDING = """\
apiVersion: ttlpolicy/v1
name: rounding
timezone: America/Chicago
defaults:
  tier: standard
  access_ttl: 3600
  refresh_ttl: 7d
  refresh: {idle_timeout: 3d, max_session: 20d, reuse_grace: 10s}
limits:
  access_ttl: {min: 1m, max: 8h}
  refresh_ttl: {min: 10m, max: 30d}
tiers:
  standard: {}
  gold: {access_ttl: 7777, refresh_ttl: 3d, max_access_ttl: 5h, max_refresh_ttl: 5d}
zones:
  lab: [192.168.0.0/16, "fd00::/8"]
default: true
attributes:
  user.level: {type: int, min: -5, max: 100}
  user.score: {type: double, min: 0, max: 10}
  location.expected_countries: {type: list, default: []}
rules:
  - {name: a, when: user.mfa, access_ttl: {multiply: 0.7}, refresh_ttl: {multiply: 1.1}}
  - {name: b, when: 'user.level > 3', access_ttl: {multiply: 0.3, floor: 5m}}
  - {name: c, when: 'user.score * 2.5 > 7.3', access_ttl: {multiply: {expr: "user.score / 3.0", min: 0.2, max: 2.0}}}
  - {name: d, when: '10 / user.level > 2', refresh_ttl: {cap: 1d, multiply: 0.9}, refresh: {rotation: true}}
  - {name: e, when: 'location.zone == "lab" || time.hour < 7', access_ttl: {cap: 40m}, step_up: lab}
  - {name: f, when: 'has(user.auth_time) && time.now - user.auth_time > duration("36h")', refresh: {max_session: 2d}}
  - {name: g, when: 'user.level % 4 == 1 && time.weekday in ["sat", "sun"]', deny: weekend}
  - {name: h, when: 'user.groups.size() > 1 && "ops" in user.groups', refresh_ttl: {multiply: "1.0 + user.score"}}
  - {name: i, when: 'client.id.startsWith("svc-") || location.country in location.expected_countries',
     refresh: {sender_constrained: true, idle_timeout: 5h, reuse_grace: 0s}}
  - {name: j, when: 'tier == "gold" && user.score >= 9.5', access_ttl: {multiply: 3.0}, refresh_ttl: {floor: 4d}}
"""


# Constant factors only: the products are computed into a table (no floating point in the formula).
STATIC = "\n".join(line for line in ROUNDING.replace("name: rounding", "name: static").replace(
    "default: true\n", "").splitlines()
                   if not line.startswith(("  - {name: c,", "  - {name: h,"))) + "\n"


def sets() -> list[Any]:
    return [load_policies(REPO / "policies"), load_sources({"rounding.yaml": ROUNDING, "static.yaml": STATIC})]


SETS = sets()
POLICIES = [(s, name) for s in SETS for name in s.names]


def value_for(name: str, attribute: Any, draw: Any) -> Any:
    kind = attribute.type
    if name == "location.ip":
        return draw(st.sampled_from(["10.1.2.3", "172.16.0.1", "198.51.100.200", "203.0.113.9", "192.168.4.4",
                                     "fd00::1", "2001:db8:100::7", "::ffff:10.9.9.9", "8.8.8.8"]))
    if name == "location.country":
        return draw(st.sampled_from(["DE", "US", "FR"]))
    if name == "time.zone":
        return draw(st.sampled_from(["UTC", "Asia/Kolkata", "Pacific/Chatham", "Europe/Berlin"]))
    if kind == "string":
        if attribute.values:
            return draw(st.sampled_from(list(attribute.values)))
        return draw(st.sampled_from(["svc-a", "x", "", "svc-"]))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "int":
        low = -5 if attribute.min is None else int(attribute.min)
        high = 10 if attribute.max is None else min(int(attribute.max), 10)
        return draw(st.integers(low, high))
    if kind == "double":
        low = 0.0 if attribute.min is None else attribute.min
        high = 1.0 if attribute.max is None else attribute.max
        return draw(st.one_of(st.floats(low, high), st.sampled_from([low, high, (low + high) / 2, 0.3, 0.7])))
    if kind == "list":
        items = ["DE", "US", "ops", "contractors", "finance-admins", "x"]
        return draw(st.lists(st.sampled_from(items), max_size=3))
    # timestamps near the decision instant (sessions, stale authentication) and far off
    return (datetime(2026, 3, 1, tzinfo=timezone.utc)
            + timedelta(seconds=draw(st.integers(-40 * 86400, 3 * 86400)))).isoformat()


@st.composite
def requests(draw: Any, policy: Any) -> tuple[dict[str, Any], datetime]:
    context: dict[str, Any] = {}
    for name, attribute in sorted(policy.attributes.items()):
        if attribute.derived or name.startswith("activity.") or not draw(st.booleans()):
            continue
        value = value_for(name, attribute, draw)
        namespace, _, leaf = name.partition(".")
        if leaf:
            context.setdefault(namespace, {})[leaf] = value
        else:
            context[namespace] = value
    now = datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(
        seconds=draw(st.integers(0, 30 * 86400)), microseconds=draw(st.integers(0, 999_999)))
    return context, now


def real_fields(decision: Any) -> dict[str, Any]:
    return {"allow": decision.allow, "access_ttl": decision.access_ttl, "refresh_ttl": decision.refresh_ttl,
            "rotation": decision.rotation, "idle_timeout": decision.idle_timeout,
            "max_session": decision.max_session, "reuse_grace": decision.reuse_grace,
            "sender_constrained": decision.sender_constrained,
            "session_end": None if decision.session_end is None
            else (decision.session_end - EPOCH) // timedelta(microseconds=1),
            "step_up": decision.step_up, "tier": decision.tier, "matched": sorted(decision.matched),
            "errors": sorted({e.rule for e in decision.errors})}


@pytest.mark.parametrize("policy_set, name", POLICIES, ids=[n for _, n in POLICIES])
def test_model_evaluation_equals_the_real_evaluator(policy_set: Any, name: str) -> None:
    policy = policy_set.get(name)
    ctx = SymbolicContext()
    symbolic = encode(policy, ctx, Locator(policy_set.sources))
    seen = {"errors": 0, "denied": 0, "rounded": 0}

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests(policy))
    def check(request: tuple[dict[str, Any], datetime]) -> None:
        context, now = request
        try:
            decision = policy.decide(context, now)
        except ContextError:
            return
        assert evaluate(ctx, symbolic, context, now) == real_fields(decision), (context, now.isoformat())
        seen["errors"] += bool(decision.errors)
        seen["denied"] += not decision.allow
        seen["rounded"] += any(step[1] == "multiply" for step in decision.steps)

    check()
    # The random requests reach the interesting paths, not only the defaults.
    assert seen["denied"] and seen["rounded"], seen
    if name in ("rounding", "static"):
        assert seen["errors"], seen
