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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .decision import Decision, RuleOutcome, Step
from .durations import MAX_DURATION, format_duration

if TYPE_CHECKING:
    from .compile import CompiledPolicy

Program = Callable[[Mapping[str, Any]], Any]
_EPSILON = 1e-6  # 3600 * 0.7 is 2519.9999999999995 in binary floating point; people mean 2520


@dataclass(frozen=True, slots=True)
class TtlOps:
    """The effects of one rule on one lifetime."""

    factor: float | None = None
    factor_program: Program | None = None
    factor_text: str | None = None
    factor_min: float = 0.0
    factor_max: float | None = None
    cap: int | None = None
    floor: int | None = None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    description: str
    when: str
    condition: Program
    access: TtlOps | None
    refresh: TtlOps | None
    rotation: bool | None
    idle_timeout: int | None
    max_session: int | None
    reuse_grace: int | None
    sender_constrained: bool | None
    step_up: str | None
    deny: str | None


class _Target:
    """Collects the effects on one lifetime, then combines them in the canonical order."""

    __slots__ = ("name", "factors", "floors", "caps")

    def __init__(self, name: str):
        self.name = name
        self.factors: list[tuple[float, str]] = []
        self.floors: list[tuple[int, str]] = []
        self.caps: list[tuple[int, str]] = []


def decide(policy: CompiledPolicy, activation: Mapping[str, Any], now: datetime, explain: bool = False) -> Decision:
    access, refresh = _Target("access_ttl"), _Target("refresh_ttl")
    defaults = policy.refresh_defaults
    rotation = bool(defaults.rotation)
    bound = bool(defaults.sender_constrained)
    grace: list[int] = [defaults.reuse_grace] if defaults.reuse_grace is not None else []
    # (seconds, rule); the policy default has rule "" so a plain tuple min() breaks ties by name
    idle: list[tuple[int, str]] = [(defaults.idle_timeout, "")] if defaults.idle_timeout else []
    session: list[tuple[int, str]] = [(defaults.max_session, "")] if defaults.max_session else []
    matched: list[str] = []
    errors: list[RuleOutcome] = []
    outcomes: list[RuleOutcome] | None = [] if explain else None
    denies: list[tuple[str, str]] = []
    step_ups: list[tuple[str, str]] = []

    for rule in policy.rules:
        failure: str | None
        try:
            result = rule.condition(activation)
        except Exception as exc:  # noqa: BLE001 - any failure of a condition is an evaluation error (fail safe)
            result, failure = None, _error_text(exc)
        else:
            if result is False:  # the common case: most rules do not match most requests
                if outcomes is not None:
                    outcomes.append(RuleOutcome(rule.name, "no_match"))
                continue
            failure = None if result is True else f"condition gave {type(result).__name__}, not bool"
        if failure is None:
            matched.append(rule.name)
            # Hot path: a full match records every effect and formats nothing.
            if rule.access is not None:
                _apply_full(rule, rule.access, access, activation, errors)
            if rule.refresh is not None:
                _apply_full(rule, rule.refresh, refresh, activation, errors)
        else:
            applied = _apply_tightening(rule, rule.access, access, activation, errors)
            applied += _apply_tightening(rule, rule.refresh, refresh, activation, errors)
        # Refresh restrictions, deny and step-up only ever tighten: they apply either way.
        if rule.rotation:
            rotation = True
        if rule.idle_timeout is not None:
            idle.append((rule.idle_timeout, rule.name))
        if rule.max_session is not None:
            session.append((rule.max_session, rule.name))
        if rule.reuse_grace is not None:
            grace.append(rule.reuse_grace)
        if rule.sender_constrained:
            bound = True
        if rule.deny is not None:
            denies.append((rule.name, rule.deny))
        if rule.step_up is not None:
            step_ups.append((rule.name, rule.step_up))
        if failure is None:
            if outcomes is not None:
                outcomes.append(RuleOutcome(rule.name, "matched"))
            continue
        applied += _restrictions(rule)
        outcome = RuleOutcome(rule.name, "error", failure, "tightening effects only: " + (", ".join(applied) or "none"))
        errors.append(outcome)
        if outcomes is not None:
            outcomes.append(outcome)

    trace: list[Step] = []
    tier_name = activation.get("tier")
    tier = policy.tiers.get(tier_name) if isinstance(tier_name, str) else None
    source = f"tier {tier_name}" if tier else "defaults"
    access_base = tier.access_ttl if tier and tier.access_ttl is not None else policy.default_access
    refresh_base = tier.refresh_ttl if tier and tier.refresh_ttl is not None else policy.default_refresh
    access_value = _combine(access, access_base, source, trace)
    refresh_value = _combine(refresh, refresh_base, source, trace)
    if tier is not None:
        access_value = _limit(trace, "access_ttl", "tier_max", access_value, tier.max_access_ttl, source, min)
        refresh_value = _limit(trace, "refresh_ttl", "tier_max", refresh_value, tier.max_refresh_ttl, source, min)

    idle_timeout, idle_rule = min(idle) if idle else (None, None)
    max_session, session_rule = min(session) if session else (None, None)
    idle_rule, session_rule = idle_rule or None, session_rule or None
    if idle_timeout is not None and refresh_value > idle_timeout:
        refresh_value = idle_timeout
        trace.append(Step("refresh_ttl", "idle_timeout", idle_timeout, refresh_value, idle_rule,
                          None if idle_rule else "defaults"))
    denied_by_session = None
    session_end = _session_end(activation, max_session)
    if session_end is not None or max_session is not None:
        # What remains of the session bounds both lifetimes; without a known start the cap
        # still bounds each token on its own.
        remaining = max_session if session_end is None else int((session_end - now).total_seconds())
        assert remaining is not None
        src = None if session_rule else ("defaults" if session_end is None else "session")
        if remaining <= 0:
            denied_by_session = (session_rule or "max_session",
                                 "the session has reached its absolute limit (max_session); re-authenticate")
            remaining = 0
        if remaining < access_value:
            access_value = remaining
            trace.append(Step("access_ttl", "session", remaining, remaining, session_rule, src))
        if remaining < refresh_value:
            refresh_value = remaining
            trace.append(Step("refresh_ttl", "session", remaining, remaining, session_rule, src))

    limits = policy.limits
    access_value = _limit(trace, "access_ttl", "limit_max", access_value, limits.access_ttl.max, "limits", min)
    access_value = _limit(trace, "access_ttl", "limit_min", access_value, limits.access_ttl.min, "limits", max)
    refresh_value = _limit(trace, "refresh_ttl", "limit_max", refresh_value, limits.refresh_ttl.max, "limits", min)
    if refresh_value > 0:  # 0 means "no refresh token"; the minimum applies only to issued ones
        refresh_value = _limit(trace, "refresh_ttl", "limit_min", refresh_value, limits.refresh_ttl.min, "limits",
                               max)

    if denied_by_session is not None:
        denies.append(denied_by_session)
    denies.sort()
    allow = not denies
    if not allow:
        for name, value in (("access_ttl", access_value), ("refresh_ttl", refresh_value)):
            trace.append(Step(name, "deny", None, 0, denies[0][0]))
        access_value = refresh_value = 0
    # Rules are compiled in name order, so ``matched`` and ``step_ups`` are already sorted;
    # sort anyway (cheap on short sorted lists) so correctness does not hang on that.
    step_ups.sort()
    errors.sort(key=_by_rule)
    matched.sort()
    if outcomes is not None:
        outcomes.sort(key=_by_rule)
    return Decision(
        allow=allow, access_ttl=access_value, refresh_ttl=refresh_value,
        rotation=rotation, idle_timeout=idle_timeout, max_session=max_session,
        reuse_grace=min(grace) if grace else None, sender_constrained=bound,
        issued_at=now, session_end=session_end,
        step_up=bool(step_ups), step_up_reasons=[reason for _, reason in step_ups],
        deny_reason="; ".join(reason for _, reason in denies) if denies else None,
        matched=matched, errors=errors, trace=trace,
        policy_name=policy.name, policy_digest=policy.digest,
        tier=tier_name if isinstance(tier_name, str) else None, rules=outcomes,
    )


def _session_end(activation: Mapping[str, Any], max_session: int | None) -> datetime | None:
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
    factor = ops.factor if ops.factor_program is None else _dynamic_factor(rule, ops, activation, errors)
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
    factor = ops.factor if ops.factor_program is None else _dynamic_factor(rule, ops, activation, errors)
    if factor is not None and factor <= 1.0:
        target.factors.append((factor, rule.name))
        applied.append(f"{target.name} × {factor:g}")
    if ops.cap is not None:
        target.caps.append((ops.cap, rule.name))
        applied.append(f"{target.name} cap {format_duration(ops.cap)}")
    return applied


def _dynamic_factor(rule: CompiledRule, ops: TtlOps, activation: Mapping[str, Any],
                    errors: list[RuleOutcome]) -> float:
    """Evaluate a factor expression, clamped to its bounds; its lower bound if it fails."""
    assert ops.factor_program is not None
    try:
        value = ops.factor_program(activation)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"factor gave {type(value).__name__}, not a finite number")
    except Exception as exc:  # noqa: BLE001 - fail safe: the most restrictive factor the author allowed
        errors.append(RuleOutcome(rule.name, "error", f"multiply {ops.factor_text!r}: {_error_text(exc)}",
                                  f"factor {min(ops.factor_min, 1.0):g} (its lower bound, at most 1)"))
        return min(ops.factor_min, 1.0)  # a lower bound above 1 must not lengthen on failure
    value = max(float(value), ops.factor_min)
    return value if ops.factor_max is None else min(value, ops.factor_max)


def _combine(target: _Target, base: int, source: str, trace: list[Step]) -> int:
    name = target.name
    trace.append(Step(name, "base", base, base, None, source))
    value: float = base
    for factor, rule in sorted(target.factors):
        value *= factor
        trace.append(Step(name, "multiply", factor, _seconds(value), rule))
    result = _seconds(value)
    if target.floors:
        floor, rule = max(target.floors)
        if floor > result:
            result = floor
            trace.append(Step(name, "floor", floor, result, rule))
    if target.caps:
        cap, rule = min(target.caps)
        if cap < result:
            result = cap
            trace.append(Step(name, "cap", cap, result, rule))
    return result


def _limit(trace: list[Step], target: str, step: str, value: int, bound: int | None, source: str,
           pick: Callable[[int, int], int]) -> int:
    if bound is None:
        return value
    result = pick(value, bound)
    if result != value:
        trace.append(Step(target, step, bound, result, None, source))
    return result


def _seconds(value: float) -> int:
    # Factors are finite and non-negative, but a product of large ones may still overflow: no
    # lifetime is longer than the longest duration a policy can write (NaN cannot occur, as
    # 0 × a finite factor is 0; it would take the first branch and come out as 0 anyway).
    if not value <= MAX_DURATION:
        return MAX_DURATION if value > MAX_DURATION else 0
    return int(math.floor(value + _EPSILON))


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
