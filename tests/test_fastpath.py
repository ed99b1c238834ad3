"""Whole decisions with generated conditions (ttlpolicy.cel.codegen) against the closures alone.

Conditions made of simple tests run as generated code that hands anything unusual to the
closure compiled for the condition (see codegen's docstring). Here every rule of a policy is
also compiled as the plain closure (the evaluator before codegen), and for the same activation
and instant ``to_dict()`` must be identical, with and without ``explain``: results, evaluation
errors and their messages in ``errors`` and in the per-rule outcomes. Contexts are generated from each policy's declared attributes (every enum value,
bounds, literals of its conditions, absent attributes), then activations are also damaged
(attributes removed, values of the wrong type) so that conditions and factor expressions fail
and the generated code has to hand over to the closures.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy import ContextError, load_policies, load_sources
from ttlpolicy.program import CompiledPolicy
from ttlpolicy.cel.native import _Compiler
from ttlpolicy.cel.parse import parse
from ttlpolicy.evaluate import decide
from ttlpolicy.model import Attribute

ROOT = Path(__file__).parent.parent
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
Draw = Callable[[st.SearchStrategy[Any]], Any]


def _case_policies() -> list[CompiledPolicy]:
    out = []
    for file in sorted((ROOT / "tests" / "cases").glob("*.yaml")):
        spec = yaml.safe_load(file.read_text())
        documents = spec.get("policies") or [spec["policy"]]
        out += list(load_sources({f"{d['name']}.yaml": yaml.safe_dump(d, sort_keys=False) for d in documents}))
    return out


POLICIES = list(load_policies(ROOT / "policies")) + _case_policies()
_STRINGS = re.compile(r'"([^"\\]{0,40})"')


def _literals(policy: CompiledPolicy) -> list[str]:
    found = {"x", ""}
    for rule in policy.rules:
        found.update(_STRINGS.findall(rule.when))
    return sorted(found)


def _value(draw: Draw, name: str, attribute: Attribute, literals: list[str]) -> Any:
    kind = attribute.type
    if kind == "string":
        if attribute.values:
            return draw(st.sampled_from(list(attribute.values)))
        if name == "location.ip":
            return draw(st.sampled_from(["10.1.2.3", "192.168.4.5", "203.0.113.9", "2001:db8::1", "::ffff:10.0.0.1"]))
        if name == "location.country":
            return draw(st.sampled_from(["DE", "US", "FR", "CN"]))
        if name == "time.zone":
            return draw(st.sampled_from(["Europe/Berlin", "America/New_York", "UTC"]))
        return draw(st.sampled_from(literals))
    if kind == "bool":
        return draw(st.booleans())
    if kind in ("int", "double"):
        low = attribute.min if attribute.min is not None else -5
        high = attribute.max if attribute.max is not None else 100
        if kind == "int":
            return draw(st.integers(int(low), int(high)))
        return draw(st.sampled_from([float(low), float(high)]) | st.floats(low, high, allow_nan=False))
    if kind == "timestamp":
        hours = draw(st.sampled_from([0, 1, 8, 71, 73, 200, 24 * 40]))
        return (NOW - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    if kind == "list":
        pool = list(attribute.values) if attribute.values else literals
        return draw(st.lists(st.sampled_from(pool), max_size=3))
    raise AssertionError(kind)  # pragma: no cover


@st.composite
def cases(draw: Draw) -> tuple[int, dict[str, Any], datetime]:
    index = draw(st.integers(0, len(POLICIES) - 1))  # an index keeps failure reports short
    policy = POLICIES[index]
    literals = _literals(policy)
    context: dict[str, Any] = {}
    for name, attribute in sorted(policy.attributes.items()):
        if attribute.derived or not draw(st.integers(0, 3)):
            continue  # absent: its default, or missing
        value = _value(draw, name, attribute, literals)
        namespace, _, field = name.partition(".")
        if field:
            context.setdefault(namespace, {})[field] = value
        else:
            context[namespace] = value
    now = NOW + timedelta(hours=draw(st.integers(0, 23)), days=draw(st.integers(0, 6)))
    return index, context, now


@st.composite
def damaged(draw: Draw, activation: dict[str, Any]) -> dict[str, Any]:
    """The activation with some attributes removed or given a value of another type."""
    act = {k: dict(v) if isinstance(v, dict) else v for k, v in activation.items()}
    for namespace in sorted(act):
        value = act[namespace]
        if not isinstance(value, dict):
            continue
        for field in sorted(value):
            roll = draw(st.integers(0, 9))
            if roll == 0:
                del value[field]
            elif roll == 1 and not isinstance(value[field], datetime):  # timestamps stay valid: the session end reads them outside CEL
                value[field] = draw(st.sampled_from([1, 1.5, "s", None, [1], True]))
    return act


# id -> (policy, its closures-only twin); the policy is kept so that its id is not reused.
_CLOSURES: dict[int, tuple[CompiledPolicy, CompiledPolicy]] = {}


def _closures_only(policy: CompiledPolicy) -> CompiledPolicy:
    """The policy with every condition compiled as the native closure, without generated code."""
    cached = _CLOSURES.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    rules = tuple(dataclasses.replace(rule, condition=_Compiler().compile(parse(rule.when)).fn)
                  for rule in policy.rules)
    twin = dataclasses.replace(policy, rules=rules)
    if any(policy is p for p in POLICIES):  # only the fixed ones are worth keeping
        _CLOSURES[id(policy)] = (policy, twin)
    return twin


def _same(policy: CompiledPolicy, activation: dict[str, Any], now: datetime) -> None:
    reference = _closures_only(policy)
    for explain in (False, True):
        expected = decide(reference, activation, now, explain).to_dict()
        assert decide(policy, activation, now, explain).to_dict() == expected


_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(case=cases(), data=st.data())
def test_fast_path_decides_as_the_reference(case: tuple[int, dict[str, Any], datetime],
                                            data: st.DataObject) -> None:
    index, context, now = case
    policy = POLICIES[index]
    try:
        activation = policy.context.activation(context, now)
    except ContextError:
        return  # refused before any rule runs, on either path
    _same(policy, activation, now)
    _same(policy, data.draw(damaged(activation)), now)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_fast_path_on_defaults_only(policy: CompiledPolicy) -> None:
    try:
        activation = policy.context.activation({}, NOW)
    except ContextError:
        return
    _same(policy, activation, NOW)


def test_errors_are_reported_as_before() -> None:
    policy = next(p for p in POLICIES if p.name == "workforce")
    activation = policy.context.activation({"device": {"trust": "managed"}}, NOW)
    del activation["device"]  # every condition reading device.* now fails
    decision = decide(policy, activation, NOW)
    assert decision.errors and "no such attribute 'device'" in (decision.errors[0].message or "")
    _same(policy, activation, NOW)


# Random policies: several rules meeting on the same lifetimes, with every kind of effect, so
# ties (equal caps, floors, factors, timeouts) and each restriction occur.
CONDITIONS = ["true", "true", "user.mfa", "!user.mfa", 'device.trust == "unmanaged"', "user.risk > 0.5",
              'user.department == "x"', '"admins" in user.groups', 'tier == "finance"', "time.hour >= 9",
              "user.risk > 0.5 || user.mfa"]
SECONDS = st.sampled_from([0, 60, 600, 900, 3600, 7200, 86400])
EFFECT = st.fixed_dictionaries({}, optional={
    "multiply": st.sampled_from([0.5, 1.0, 2.0, {"expr": "1.0 - user.risk", "min": 0.25, "max": 1.0},
                                 {"expr": "user.risk * 4.0", "min": 0.5, "max": 3.0}]),
    "cap": SECONDS, "floor": SECONDS})
REFRESH = st.fixed_dictionaries({}, optional={
    "rotation": st.booleans(), "idle_timeout": st.sampled_from([600, 3600, 86400]),
    "max_session": st.sampled_from([3600, 86400, 604800]), "reuse_grace": st.sampled_from([0, 10, 30]),
    "sender_constrained": st.booleans()})
RULE = st.fixed_dictionaries({"when": st.sampled_from(CONDITIONS)}, optional={
    "access_ttl": EFFECT, "refresh_ttl": EFFECT, "refresh": REFRESH,
    "deny": st.sampled_from(["no", "never"]), "step_up": st.sampled_from(["mfa", "again"])})
CONTEXT = st.fixed_dictionaries({}, optional={
    "tier": st.sampled_from(["standard", "finance"]),
    "device": st.fixed_dictionaries({"trust": st.sampled_from(["managed", "unmanaged"])}),
    "user": st.fixed_dictionaries({}, optional={
        "mfa": st.booleans(), "risk": st.sampled_from([0.0, 0.5, 0.75, 1.0]), "department": st.just("x"),
        "groups": st.lists(st.sampled_from(["admins", "staff"])),
        "auth_time": st.sampled_from(["2026-03-02T09:00:00Z", "2026-02-01T00:00:00Z"])}),
})


def _valid(rule: dict[str, Any]) -> dict[str, Any]:
    """Drop empty effects, keep floors at or below caps and give every rule an effect."""
    rule = {k: v for k, v in rule.items() if v != {}}
    for target in ("access_ttl", "refresh_ttl"):
        effect = rule.get(target)
        if effect and "floor" in effect and "cap" in effect and effect["floor"] > effect["cap"]:
            effect["floor"], effect["cap"] = effect["cap"], effect["floor"]
    if len(rule) == 1:
        rule["deny"] = "no"
    return rule


def _random_policy(rules: list[dict[str, Any]], defaults: dict[str, Any]) -> CompiledPolicy:
    document = {
        "apiVersion": "ttlpolicy/v1", "name": "p",
        "defaults": {"access_ttl": 3600, "refresh_ttl": 86400, "tier": "standard",
                     **({"refresh": defaults} if defaults else {})},
        "limits": {"access_ttl": {"min": 120, "max": 28800}, "refresh_ttl": {"min": 600, "max": 2592000}},
        "tiers": {"standard": {}, "finance": {"access_ttl": 900, "max_access_ttl": 1800, "max_refresh_ttl": 43200}},
        "attributes": {"user.department": {"type": "string"}},
        "rules": [{"name": f"r{i % 3}{i}", **_valid(r)} for i, r in enumerate(rules)],
    }
    return load_sources({"p.yaml": yaml.safe_dump(document)}).get("p")


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(rules=st.lists(RULE, min_size=1, max_size=6), defaults=REFRESH,
       contexts=st.lists(CONTEXT, min_size=1, max_size=6), data=st.data())
def test_fast_path_on_random_policies(rules: list[dict[str, Any]], defaults: dict[str, Any],
                                      contexts: list[dict[str, Any]], data: st.DataObject) -> None:
    try:
        policy = _random_policy(rules, defaults)
    except Exception:  # noqa: BLE001 - e.g. a floor above a cap, or a bare double condition: refused
        return
    for context in contexts:
        activation = policy.context.activation(context, NOW)
        _same(policy, activation, NOW)
        _same(policy, data.draw(damaged(activation)), NOW)


@given(seconds=st.integers(0, 253402300799 - 86400 * 400), micro=st.integers(0, 999999),
       zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "+05:45", "-00:30"]))
def test_rfc3339_is_unchanged(seconds: int, micro: int, zone: str) -> None:
    from zoneinfo import ZoneInfo

    from ttlpolicy.decision import _utc  # what to_dict formats every expires_at instant with

    if zone[0] in "+-":
        hours, minutes = int(zone[1:3]), int(zone[4:])
        sign = -1 if zone[0] == "-" else 1
        tz: Any = timezone(sign * timedelta(hours=hours, minutes=minutes))
    else:
        tz = timezone.utc if zone == "UTC" else ZoneInfo(zone)
    instant = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=micro).astimezone(tz)
    before = instant.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    assert _utc(seconds) == before  # (not int(instant.timestamp()): a float, a second off near 2^37 s)
