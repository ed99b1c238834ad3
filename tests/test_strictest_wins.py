"""Properties that catch loosening bugs as a class, field by field.

Two hand-planted bugs once survived the whole suite: a lifetime rounded to the nearest second
instead of down, and the largest of several reuse grace periods winning instead of the smallest.
Each property here covers the class such a bug belongs to:

* lifetimes are rounded down, never up, whatever the (non-integral) product of factors;
* for every field where "the strictest wins" -- access and refresh lifetimes, deny, step-up,
  rotation, idle timeout, session cap, reuse grace, sender constraint -- adding a tightening
  rule never loosens that field, whatever the other rules, the context and the hour.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ttlpolicy import Decision, load_sources

NOW = "2026-03-02T10:00:00Z"
CONDITIONS = ["true", "true", 'device.trust == "unmanaged"', "user.mfa", "time.hour >= 9", '"admins" in user.groups']
DURATIONS = [60, 300, 600, 900, 1800, 3600, 14400, 86400, 604800]
DEFAULT_REFRESH = {"rotation": False, "idle_timeout": 604800, "max_session": 2592000, "reuse_grace": 120,
                   "sender_constrained": False}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

contexts = st.fixed_dictionaries({}, optional={
    "device": st.fixed_dictionaries({"trust": st.sampled_from(["managed", "unmanaged"])}),
    "user": st.fixed_dictionaries({}, optional={"mfa": st.booleans(),
                                                 "groups": st.lists(st.sampled_from(["admins", "staff"]))}),
})
hours = st.integers(0, 23).map(lambda h: f"2026-03-02T{h:02d}:00:00Z")


def _policy(rules: list[dict[str, Any]], base: int = 3600) -> Any:
    document = {
        "apiVersion": "ttlpolicy/v1", "name": "p",
        "defaults": {"access_ttl": base, "refresh_ttl": 30 * base, "refresh": DEFAULT_REFRESH},
        "limits": {"access_ttl": {"min": 1, "max": 86400}, "refresh_ttl": {"min": 1, "max": 2592000}},
        "rules": [{"name": f"r{i}", **r} for i, r in enumerate(rules)],
    }
    return load_sources({"p.yaml": yaml.safe_dump(document)})


# ------------------------------------------------------------------- rounding goes down


FRACTIONAL = [0.3, 0.45, 0.55, 0.7, 0.77, 0.9, 0.99]


@SETTINGS
@example(base=1001, factors=[0.55])  # 550.55 -> 550, never 551
@example(base=997, factors=[0.3, 0.99])  # 296.109 -> 296
@given(base=st.integers(60, 7200), factors=st.lists(st.sampled_from(FRACTIONAL), min_size=1, max_size=4))
def test_lifetimes_are_rounded_down_never_up(base: int, factors: list[float]) -> None:
    rules = [{"when": "true", "access_ttl": {"multiply": f}, "refresh_ttl": {"multiply": f}} for f in factors]
    decision = _policy(rules, base).decide({}, now=NOW)
    for value, start in ((decision.access_ttl, base), (decision.refresh_ttl, 30 * base)):
        exact = start * math.prod(factors)
        # Down: never above the exact product (beyond float noise), and less than a second below.
        assert value <= exact + 1e-6, (value, exact)
        assert value > exact - 1, (value, exact)


# ------------------------------------------------------- the strictest wins, field by field


def _looser(after: Decision, before: Decision) -> list[str]:
    """The fields in which ``after`` is looser than ``before`` (one definition per field)."""
    if not before.allow:
        return [] if not after.allow else ["allow"]
    if not after.allow:
        return []  # a deny is the strictest decision of all
    looser = [name for name in ("access_ttl", "refresh_ttl", "idle_timeout", "max_session", "reuse_grace")
              if _longer(getattr(after, name), getattr(before, name))]
    looser += [name for name in ("step_up", "rotation", "sender_constrained")
               if getattr(before, name) and not getattr(after, name)]
    return looser


def _longer(after: int | None, before: int | None) -> bool:
    """None means unbounded (no idle timeout, no session cap, the issuer's grace)."""
    if before is None:
        return False
    return after is None or after > before


def _effect(loosening: bool) -> st.SearchStrategy[dict[str, Any]]:
    factors = [0.25, 0.5, 0.9, 1.0] + ([1.5, 3.0] if loosening else [])
    parts: dict[str, st.SearchStrategy[Any]] = {"multiply": st.sampled_from(factors),
                                                "cap": st.sampled_from(DURATIONS)}
    if loosening:
        parts["floor"] = st.sampled_from(DURATIONS)
    return st.fixed_dictionaries({}, optional=parts).filter(bool).map(_floor_below_cap)


def _floor_below_cap(effect: dict[str, Any]) -> dict[str, Any]:
    if "floor" in effect and "cap" in effect and effect["floor"] > effect["cap"]:
        effect["floor"], effect["cap"] = effect["cap"], effect["floor"]
    return effect


refresh_settings = st.fixed_dictionaries({}, optional={
    "rotation": st.just(True),
    "idle_timeout": st.sampled_from(DURATIONS),
    "max_session": st.sampled_from(DURATIONS[3:]),
    "reuse_grace": st.sampled_from([0, 5, 10, 60, 300]),
    "sender_constrained": st.just(True),
}).filter(bool)


def _rule(loosening: bool) -> st.SearchStrategy[dict[str, Any]]:
    effects = st.fixed_dictionaries({}, optional={
        "access_ttl": _effect(loosening), "refresh_ttl": _effect(loosening), "refresh": refresh_settings,
        "deny": st.just("denied"), "step_up": st.just("step up"),
    }).filter(bool)
    return st.tuples(st.sampled_from(CONDITIONS), effects).map(lambda t: {"when": t[0], **t[1]})


# Pinned: the two bugs that once survived, and every refresh setting meeting another.
@example([{"when": "true", "refresh": {"reuse_grace": 60}}], {"when": "true", "refresh": {"reuse_grace": 5}},
         {}, NOW)
@example([{"when": "true", "refresh": {"idle_timeout": 3600, "max_session": 86400}}],
         {"when": "true", "refresh": {"idle_timeout": 600, "max_session": 604800}}, {}, NOW)
@example([], {"when": "true", "refresh": {"rotation": True, "sender_constrained": True}}, {}, NOW)
@example([{"when": "true", "step_up": "a"}], {"when": "true", "access_ttl": {"cap": 600}}, {}, NOW)
@SETTINGS
@given(st.lists(_rule(loosening=True), max_size=5), _rule(loosening=False), contexts, hours)
def test_a_tightening_rule_never_loosens_any_field(rules: list[dict[str, Any]], extra: dict[str, Any],
                                                   context: dict[str, Any], now: str) -> None:
    before = _policy(rules).decide(context, now=now)
    after = _policy(rules + [extra]).decide(context, now=now)
    assert _looser(after, before) == [], (before.to_dict(), after.to_dict())


@SETTINGS
@given(st.lists(_rule(loosening=False), min_size=1, max_size=5), contexts, hours)
def test_each_refresh_setting_is_the_strictest_that_applies(rules: list[dict[str, Any]],
                                                            context: dict[str, Any], now: str) -> None:
    """With only conditions that hold, every refresh field is the strictest any rule or the
    defaults name: the lowest idle timeout, session cap and grace; rotation and binding if any."""
    always = [{**r, "when": "true"} for r in rules]
    decision = _policy(always).decide(context, now=now)
    if not decision.allow:
        return
    settings_ = [DEFAULT_REFRESH] + [r.get("refresh", {}) for r in always]
    for name in ("idle_timeout", "max_session", "reuse_grace"):
        strictest = min(s[name] for s in settings_ if name in s)
        assert getattr(decision, name) == strictest, (name, decision.to_dict())
    for name in ("rotation", "sender_constrained"):
        assert getattr(decision, name) == any(s.get(name) for s in settings_), (name, decision.to_dict())
