"""Stage 4 — evaluate: a pure function of (compiled policy, activation, now) to a decision.

All matching rules apply, and they combine commutatively, so the order of rules never
matters (promise 1):

* factors multiply (in a canonical order: by value, then rule name, so even floating-point
  rounding cannot depend on the order of the file);
* the highest floor applies, then the lowest cap, so a floor never lifts a value above a cap;
* then the tier ceiling, the refresh idle timeout and session cap, and the global limits,
  which always hold; any deny wins.

A rule whose condition cannot be evaluated applies only its tightening effects (promise 2):
caps, factors of at most 1, deny, step-up and refresh restrictions; never floors or factors
above 1. The decision lists such rules under ``errors``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from .decision import Decision, RuleOutcome, TraceEntry
from .durations import MAX_DURATION, format_duration
from .program import CompiledPolicy, CompiledRule, TtlOps

EPSILON = 1e-6  # 3600 * 0.7 is 2519.9999999999995 in binary floating point; people mean 2520


class _Target:
    """Collects the effects on one lifetime, then combines them in the canonical order."""

    __slots__ = ("name", "factors", "floors", "caps")

    def __init__(self, name: str):
        self.name = name
        self.factors: list[tuple[float, str]] = []
        self.floors: list[tuple[int, str]] = []
        self.caps: list[tuple[int, str]] = []


@dataclass(slots=True)
class Collected:
    """What the matching (and failing) rules asked for, before anything is combined."""

    access: _Target
    refresh: _Target
    rotation: bool
    bound: bool  # sender-constrained refresh
    grace: list[int]
    # (seconds, rule); the policy default has rule "" so a plain tuple min() breaks ties by name
    idle: list[tuple[int, str]]
    session: list[tuple[int, str]]
    matched: list[str] = field(default_factory=list)
    errors: list[RuleOutcome] = field(default_factory=list)
    outcomes: list[RuleOutcome] | None = None
    denies: list[tuple[str, str]] = field(default_factory=list)
    step_ups: list[tuple[str, str]] = field(default_factory=list)


def decide(policy: CompiledPolicy, activation: Mapping[str, Any], now: datetime, explain: bool = False) -> Decision:
    """The reference evaluator: collect, combine, bound, session, deny. The generated program
    (:mod:`ttlpolicy.generate`) computes the same decision and is held to this one in tests."""
    collected = collect(policy, activation, explain)
    trace: list[TraceEntry] = []
    tier_name = activation.get("tier")
    access_value, refresh_value = combine(policy, collected, tier_name, trace)
    access_value, refresh_value, idle_timeout = bound_idle(collected.idle, access_value, refresh_value, trace)
    max_session, session_rule = min(collected.session) if collected.session else (None, None)
    session_end = session_end_of(activation, max_session)
    access_value, refresh_value, session_denied = bound_session(
        session_end, max_session, session_rule or None, now, access_value, refresh_value, trace)
    access_value, refresh_value = apply_limits(policy, access_value, refresh_value, trace)
    if session_denied is not None:
        collected.denies.append(session_denied)
    access_value, refresh_value = deny(collected.denies, access_value, refresh_value, trace)
    return _decision(policy, collected, access_value, refresh_value, idle_timeout, max_session, session_end,
                     tier_name, now, trace, activation)


def collect(policy: CompiledPolicy, activation: Mapping[str, Any], explain: bool) -> Collected:
    """Run every rule's condition and record the effects it asks for (only the tightening
    ones for a rule whose condition failed)."""
    defaults = policy.refresh_defaults
    c = Collected(
        access=_Target("access_ttl"), refresh=_Target("refresh_ttl"),
        rotation=bool(defaults.rotation), bound=bool(defaults.sender_constrained),
        grace=[defaults.reuse_grace] if defaults.reuse_grace is not None else [],
        idle=[(defaults.idle_timeout, "")] if defaults.idle_timeout else [],
        session=[(defaults.max_session, "")] if defaults.max_session else [],
        outcomes=[] if explain else None)
    for rule in policy.rules:
        failure: str | None
        try:
            result = rule.condition(activation)
        except Exception as exc:  # noqa: BLE001 - any failure of a condition is an evaluation error (fail safe)
            result, failure = None, error_text(exc)
        else:
            if result is False:  # the common case: most rules do not match most requests
                if c.outcomes is not None:
                    c.outcomes.append(RuleOutcome(rule.name, "no_match"))
                continue
            failure = None if result is True else f"condition gave {type(result).__name__}, not bool"
        if failure is None:
            c.matched.append(rule.name)
            if rule.access is not None:
                _apply_full(rule, rule.access, c.access, activation, c.errors)
            if rule.refresh is not None:
                _apply_full(rule, rule.refresh, c.refresh, activation, c.errors)
            _apply_restrictions(rule, c)
            if c.outcomes is not None:
                c.outcomes.append(RuleOutcome(rule.name, "matched"))
        else:
            _collect_errored(rule, failure, activation, c)
    return c


def _apply_restrictions(rule: CompiledRule, c: Collected) -> None:
    """Refresh restrictions, deny and step-up only ever tighten: they apply matched or errored."""
    if rule.rotation:
        c.rotation = True
    if rule.idle_timeout is not None:
        c.idle.append((rule.idle_timeout, rule.name))
    if rule.max_session is not None:
        c.session.append((rule.max_session, rule.name))
    if rule.reuse_grace is not None:
        c.grace.append(rule.reuse_grace)
    if rule.sender_constrained:
        c.bound = True
    if rule.deny is not None:
        c.denies.append((rule.name, rule.deny))
    if rule.step_up is not None:
        c.step_ups.append((rule.name, rule.step_up))


def _collect_errored(rule: CompiledRule, failure: str, activation: Mapping[str, Any], c: Collected) -> None:
    """A rule whose condition failed: only its tightening effects, and a note saying which."""
    applied = _apply_tightening(rule, rule.access, c.access, activation, c.errors)
    applied += _apply_tightening(rule, rule.refresh, c.refresh, activation, c.errors)
    _apply_restrictions(rule, c)
    applied += _restrictions(rule)
    outcome = RuleOutcome(rule.name, "error", failure, "tightening effects only: " + (", ".join(applied) or "none"))
    c.errors.append(outcome)
    if c.outcomes is not None:
        c.outcomes.append(outcome)


def combine(policy: CompiledPolicy, c: Collected, tier_name: Any, trace: list[TraceEntry]) -> tuple[int, int]:
    """Both lifetimes from their base (the tier's or the defaults), factors, floors and caps,
    then the tier ceiling."""
    tier = policy.tiers.get(tier_name) if isinstance(tier_name, str) else None
    source = f"tier {tier_name}" if tier else "defaults"
    access_base = tier.access_ttl if tier and tier.access_ttl is not None else policy.default_access
    refresh_base = tier.refresh_ttl if tier and tier.refresh_ttl is not None else policy.default_refresh
    access_value = _combine(c.access, access_base, source, trace)
    refresh_value = _combine(c.refresh, refresh_base, source, trace)
    if tier is not None:
        access_value = _limit(trace, "access_ttl", "tier_max", access_value, tier.max_access_ttl, source, min)
        refresh_value = _limit(trace, "refresh_ttl", "tier_max", refresh_value, tier.max_refresh_ttl, source, min)
    return access_value, refresh_value


def bound_idle(idle: list[tuple[int, str]], access_value: int, refresh_value: int, trace: list[TraceEntry]
               ) -> tuple[int, int, int | None]:
    """The refresh token lives no longer than the shortest idle timeout."""
    if not idle:
        return access_value, refresh_value, None
    idle_timeout, idle_rule = min(idle)
    if refresh_value > idle_timeout:
        refresh_value = idle_timeout
        trace.append(("refresh_ttl", "idle_timeout", idle_timeout, refresh_value, idle_rule or None,
                      None if idle_rule else "defaults"))
    return access_value, refresh_value, idle_timeout


def bound_session(session_end: datetime | None, max_session: int | None, session_rule: str | None, now: datetime,
                  access_value: int, refresh_value: int, trace: list[TraceEntry]
                  ) -> tuple[int, int, tuple[str, str] | None]:
    """What remains of the session bounds both lifetimes; without a known start the cap still
    bounds each token on its own. A session already over is a deny (returned, not applied)."""
    if session_end is None and max_session is None:
        return access_value, refresh_value, None
    remaining = max_session if session_end is None else int((session_end - now).total_seconds())
    assert remaining is not None
    src = None if session_rule else ("defaults" if session_end is None else "session")
    denied = None
    if remaining <= 0:
        denied = (session_rule or "max_session",
                  "the session has reached its absolute limit (max_session); re-authenticate")
        remaining = 0
    if remaining < access_value:
        access_value = remaining
        trace.append(("access_ttl", "session", remaining, remaining, session_rule, src))
    if remaining < refresh_value:
        refresh_value = remaining
        trace.append(("refresh_ttl", "session", remaining, remaining, session_rule, src))
    return access_value, refresh_value, denied


def apply_limits(policy: CompiledPolicy, access_value: int, refresh_value: int, trace: list[TraceEntry]
                 ) -> tuple[int, int]:
    """The policy's global limits, which always hold."""
    limits = policy.limits
    access_value = _limit(trace, "access_ttl", "limit_max", access_value, limits.access_ttl.max, "limits", min)
    access_value = _limit(trace, "access_ttl", "limit_min", access_value, limits.access_ttl.min, "limits", max)
    refresh_value = _limit(trace, "refresh_ttl", "limit_max", refresh_value, limits.refresh_ttl.max, "limits", min)
    if refresh_value > 0:  # 0 means "no refresh token"; the minimum applies only to issued ones
        refresh_value = _limit(trace, "refresh_ttl", "limit_min", refresh_value, limits.refresh_ttl.min, "limits",
                               max)
    return access_value, refresh_value


def deny(denies: list[tuple[str, str]], access_value: int, refresh_value: int, trace: list[TraceEntry]
         ) -> tuple[int, int]:
    """Any deny wins: both lifetimes become 0, attributed to the first denying rule by name."""
    if not denies:
        return access_value, refresh_value
    denies.sort()
    trace.append(("access_ttl", "deny", None, 0, denies[0][0], None))
    trace.append(("refresh_ttl", "deny", None, 0, denies[0][0], None))
    return 0, 0


def _decision(policy: CompiledPolicy, c: Collected, access_value: int, refresh_value: int, idle_timeout: int | None,
              max_session: int | None, session_end: datetime | None, tier_name: Any, now: datetime,
              trace: list[TraceEntry], activation: Mapping[str, Any] | None = None) -> Decision:
    # Rules are compiled in name order, so ``matched`` and ``step_ups`` are already sorted;
    # sort anyway (cheap on short sorted lists) so correctness does not hang on that.
    c.step_ups.sort()
    c.errors.sort(key=_by_rule)
    c.matched.sort()
    if c.outcomes is not None:
        c.outcomes.sort(key=_by_rule)
    denies = c.denies
    return Decision(
        allow=not denies, access_ttl=access_value, refresh_ttl=refresh_value,
        rotation=c.rotation, idle_timeout=idle_timeout, max_session=max_session,
        reuse_grace=min(c.grace) if c.grace else None, sender_constrained=c.bound,
        issued_at=now, session_end=session_end,
        step_up=bool(c.step_ups), step_up_reasons=[reason for _, reason in c.step_ups],
        deny_reason="; ".join(reason for _, reason in denies) if denies else None,
        matched=c.matched, errors=c.errors, steps=trace,
        policy_name=policy.name, policy_digest=policy.digest,
        tier=tier_name if isinstance(tier_name, str) else None, rules=c.outcomes, activation=activation,
    )


def session_end_of(activation: Mapping[str, Any], max_session: int | None) -> datetime | None:
    """The absolute end of the session: the earliest of the start plus ``max_session`` and the
    verified token's ``session_exp``. The start is the verified token's ``auth_time`` if there is
    one (the issuer cannot forge it), else the context's ``user.auth_time``."""
    token = activation.get("token") or {}
    start = token.get("auth_time") or (activation.get("user") or {}).get("auth_time")
    end = start + timedelta(seconds=max_session) if start is not None and max_session is not None else None
    token_end = token.get("session_exp")
    if token_end is not None and (end is None or token_end < end):
        return token_end
    return end


def _restrictions(rule: CompiledRule) -> list[str]:
    """Names of a rule's effects that always apply, for the note on an errored rule."""
    out = ["refresh rotation"] if rule.rotation else []
    if rule.sender_constrained:
        out.append("sender-constrained refresh")
    if rule.reuse_grace is not None:
        out.append(f"reuse_grace {format_duration(rule.reuse_grace)}")
    if rule.idle_timeout is not None:
        out.append(f"idle_timeout {format_duration(rule.idle_timeout)}")
    if rule.max_session is not None:
        out.append(f"max_session {format_duration(rule.max_session)}")
    return out + ["deny"] * (rule.deny is not None) + ["step_up"] * (rule.step_up is not None)


def _by_rule(outcome: RuleOutcome) -> str:
    return outcome.rule


def _apply_full(rule: CompiledRule, ops: TtlOps, target: _Target, activation: Mapping[str, Any],
                errors: list[RuleOutcome]) -> None:
    """Record every effect of a fully matched rule on one lifetime (the hot path; an errored rule
    goes through :func:`_apply_tightening` instead)."""
    factor = ops.factor if ops.factor_program is None else dynamic_factor(rule, ops, activation, errors)
    if factor is not None:
        target.factors.append((factor, rule.name))
    if ops.cap is not None:
        target.caps.append((ops.cap, rule.name))
    if ops.floor is not None:
        target.floors.append((ops.floor, rule.name))


def _apply_tightening(rule: CompiledRule, ops: TtlOps | None, target: _Target, activation: Mapping[str, Any],
                      errors: list[RuleOutcome]) -> list[str]:
    """Record only the tightening effects of a rule whose condition failed, and name them for
    the rule's error note (text is formatted only on this rare path)."""
    applied: list[str] = []
    if ops is None:
        return applied
    factor = ops.factor if ops.factor_program is None else dynamic_factor(rule, ops, activation, errors)
    if factor is not None and factor <= 1.0:
        target.factors.append((factor, rule.name))
        applied.append(f"{target.name} × {factor:g}")
    if ops.cap is not None:
        target.caps.append((ops.cap, rule.name))
        applied.append(f"{target.name} cap {format_duration(ops.cap)}")
    return applied


def dynamic_factor(rule: CompiledRule, ops: TtlOps, activation: Mapping[str, Any],
                    errors: list[RuleOutcome]) -> float:
    """Evaluate a factor expression, clamped to its bounds; its lower bound if it fails."""
    assert ops.factor_program is not None
    try:
        value = ops.factor_program(activation)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"factor gave {type(value).__name__}, not a finite number")
    except Exception as exc:  # noqa: BLE001 - fail safe: the most restrictive factor the author allowed
        errors.append(RuleOutcome(rule.name, "error", f"multiply {ops.factor_text!r}: {error_text(exc)}",
                                  f"factor {min(ops.factor_min, 1.0):g} (its lower bound, at most 1)"))
        return min(ops.factor_min, 1.0)  # a lower bound above 1 must not lengthen on failure
    value = max(float(value), ops.factor_min)
    return value if ops.factor_max is None else min(value, ops.factor_max)


def _combine(target: _Target, base: int, source: str, trace: list[TraceEntry]) -> int:
    name = target.name
    trace.append((name, "base", base, base, None, source))
    value: float = base
    for factor, rule in sorted(target.factors):
        value *= factor
        trace.append((name, "multiply", factor, seconds(value), rule, None))
    result = seconds(value)
    if target.floors:
        floor, rule = max(target.floors)
        if floor > result:
            result = floor
            trace.append((name, "floor", floor, result, rule, None))
    if target.caps:
        cap, rule = min(target.caps)
        if cap < result:
            result = cap
            trace.append((name, "cap", cap, result, rule, None))
    return result


def _limit(trace: list[TraceEntry], target: str, step: str, value: int, bound: int | None, source: str,
           pick: Callable[[int, int], int]) -> int:
    if bound is None:
        return value
    result = pick(value, bound)
    if result != value:
        trace.append((target, step, bound, result, None, source))
    return result


def seconds(value: float) -> int:
    """A combined lifetime in whole seconds (rounding noise of the factors forgiven)."""
    # Factors are finite and non-negative, but a product of large ones may still overflow: no
    # lifetime is longer than the longest duration a policy can write (NaN cannot occur, as
    # 0 × a finite factor is 0; it would take the first branch and come out as 0 anyway).
    if not value <= MAX_DURATION:
        return MAX_DURATION if value > MAX_DURATION else 0
    return int(math.floor(value + EPSILON))


def error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
