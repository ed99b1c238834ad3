"""The one step after the policy: apply state (emergencies, rate limits, a degraded store).

The policy's own evaluation (:mod:`ttlpolicy.evaluate`) stays a pure function of the context.
What the state layer knows — an emergency ceiling for this scope, a rate limit this key has
exceeded, a store that cannot answer — is applied here, afterwards, by :func:`tighten`, which
by construction can only tighten a decision:

* a ceiling lowers ``access_ttl`` / ``refresh_ttl`` to ``min(value, ceiling)`` (``0`` for
  refresh means no refresh token);
* a deny turns the decision into a deny (both lifetimes 0);
* a step-up sets ``step_up`` and adds its reason.

Each of these is ``min``, ``and`` or set union, so the order of ceilings never matters
(promise 1), and every one of them appends a trace step naming its source (promise 3), even
when the value was already lower: "emergency INC-42 until …: access ≤ 5m".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from ..decision import Decision
from ..durations import format_duration


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One tightening: from ``source`` (shown in the trace), applied as trace step ``step``."""

    step: str  # emergency | rate_limit | degraded
    source: str
    access_ttl: int | None = None
    refresh_ttl: int | None = None
    deny: str | None = None
    step_up: str | None = None

    def sort_key(self) -> tuple[str, str, int, int, str, str]:
        # Total over every field: ceilings that tie on their source still apply in one order.
        return (self.step, self.source, -1 if self.access_ttl is None else self.access_ttl,
                -1 if self.refresh_ttl is None else self.refresh_ttl, self.deny or "", self.step_up or "")


def _bound(target: str, bound: int) -> str:
    if target == "refresh_ttl" and bound == 0:
        return "refresh off"
    return f"{target.removesuffix('_ttl')} ≤ {format_duration(bound)}"


def tighten(decision: Decision, ceilings: Iterable[Ceiling], extra: Mapping[str, Any] | None = None) -> Decision:
    """A new decision: ``decision`` under every ceiling, with trace steps for each; never longer.

    ``extra`` is merged into the decision's JSON (``emergencies``, ``rate_limits``, ``state``).
    """
    ordered = sorted(ceilings, key=Ceiling.sort_key)
    if not ordered and not extra:
        return decision
    access, refresh = decision.access_ttl, decision.refresh_ttl
    allow, deny_reason = decision.allow, decision.deny_reason
    step_up, reasons = decision.step_up, list(decision.step_up_reasons)
    trace = decision.trace_entries()  # compact (target, step, value, result, rule, source) entries
    for ceiling in ordered:
        if ceiling.access_ttl is not None:
            access = min(access, ceiling.access_ttl)
            trace.append(("access_ttl", ceiling.step, ceiling.access_ttl, access, None,
                          f"{ceiling.source}: {_bound('access_ttl', ceiling.access_ttl)}"))
        if ceiling.refresh_ttl is not None:
            refresh = min(refresh, ceiling.refresh_ttl)
            trace.append(("refresh_ttl", ceiling.step, ceiling.refresh_ttl, refresh, None,
                          f"{ceiling.source}: {_bound('refresh_ttl', ceiling.refresh_ttl)}"))
        if ceiling.step_up is not None:
            step_up = True
            reason = f"{ceiling.source}: {ceiling.step_up}"
            if reason not in reasons:
                reasons.append(reason)
        if ceiling.deny is not None:
            if allow:
                deny_reason = f"{ceiling.source}: {ceiling.deny}"
            allow = False
            trace.append(("access_ttl", "deny", None, 0, None, f"{ceiling.source}: {ceiling.deny}"))
            trace.append(("refresh_ttl", "deny", None, 0, None, f"{ceiling.source}: {ceiling.deny}"))
    if not allow:
        access = refresh = 0
    merged = dict(decision.extra)
    if extra:
        merged.update(extra)
    return replace(decision, allow=allow, access_ttl=access, refresh_ttl=refresh, deny_reason=deny_reason,
                   step_up=step_up, step_up_reasons=reasons, steps=trace, extra=merged)
