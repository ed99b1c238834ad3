"""The decision: lifetimes, refresh behaviour, deny or step-up, and the trace behind every number."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Union

# One trace step as compact data, formatted into a :class:`Step` only when asked (``trace``,
# ``to_dict``): (target, step, value, result, rule, source). The evaluator appends these on the
# hot path; a tuple of shared constants costs a fraction of a dataclass instance.
TraceEntry = tuple[str, str, Union[float, int, str, None], int, Union[str, None], Union[str, None]]


@dataclass(slots=True)
class Step:
    """One change to one number: ``target`` went to ``result`` because of ``step`` (by ``rule``)."""

    target: str  # access_ttl | refresh_ttl | refresh.idle_timeout | ...
    step: str  # base multiply floor cap tier_max limit_min limit_max idle_timeout session deny
    value: float | int | str | None
    result: int
    rule: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "step": self.step, "value": self.value, "result": self.result}
        if self.rule is not None:
            out["rule"] = self.rule
        if self.source is not None:
            out["source"] = self.source
        return out


def step_dict(entry: TraceEntry) -> dict[str, Any]:
    """``Step(*entry).to_dict()`` without building the Step."""
    target, step, value, result, rule, source = entry
    out: dict[str, Any] = {"target": target, "step": step, "value": value, "result": result}
    if rule is not None:
        out["rule"] = rule
    if source is not None:
        out["source"] = source
    return out


@dataclass(slots=True)
class RuleOutcome:
    """How one rule fared: ``matched``, ``no_match`` or ``error`` (with the message)."""

    rule: str
    outcome: str
    message: str | None = None
    applied: str | None = None  # for errors: which effects were applied (fail safe)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "outcome": self.outcome}
        if self.message is not None:
            out["message"] = self.message
        if self.applied is not None:
            out["applied"] = self.applied
        return out


@dataclass(slots=True)
class Decision:
    """What the issuer should do. ``to_dict()`` is the JSON the CLI prints and the API returns.

    >>> decision.allow, decision.access_ttl, decision.refresh_ttl   # doctest: +SKIP
    (True, 900, 28800)
    """

    allow: bool
    access_ttl: int
    refresh_ttl: int
    rotation: bool
    idle_timeout: int | None
    max_session: int | None
    reuse_grace: int | None
    sender_constrained: bool
    issued_at: datetime
    session_end: datetime | None
    step_up: bool
    step_up_reasons: list[str]
    deny_reason: str | None
    matched: list[str]
    errors: list[RuleOutcome]
    steps: list[TraceEntry]  # the trace as compact data; ``trace`` formats it
    policy_name: str
    policy_digest: str
    tier: str | None = None
    rules: list[RuleOutcome] | None = None  # every rule's outcome, with explain=True
    extra: dict[str, Any] = field(default_factory=dict)
    # What the issuer does when a rotated refresh token is presented again after the grace window
    # (RFC 9700 §4.14.2); one value today, a field of the decision for the diff to compare.
    ON_REUSE: ClassVar[str] = "revoke_family"
    _trace: list[Step] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def trace(self) -> list[Step]:
        """Every change to every number, formatted from ``steps`` on first use (then kept, so a
        later stage may append to it)."""
        if self._trace is None:
            self._trace = [Step(*entry) for entry in self.steps]
        return self._trace

    def trace_entries(self) -> list[TraceEntry]:
        """The trace as compact entries, steps appended to ``trace`` included (for a later stage
        that builds a new decision with ``dataclasses.replace(decision, steps=...)``)."""
        if self._trace is None:
            return list(self.steps)
        return [(s.target, s.step, s.value, s.result, s.rule, s.source) for s in self._trace]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "allow": self.allow,
            "access_ttl": self.access_ttl,
            "refresh_ttl": self.refresh_ttl,
            "refresh": {"rotation": self.rotation, "idle_timeout": self.idle_timeout,
                        "max_session": self.max_session, "reuse_grace": self.reuse_grace,
                        "on_reuse": self.ON_REUSE, "sender_constrained": self.sender_constrained},
            "expires_at": self.expires_at(),
            "step_up": self.step_up,
            "step_up_reasons": self.step_up_reasons,
            "deny_reason": self.deny_reason,
            "matched": self.matched,
            "errors": [e.to_dict() for e in self.errors],
            "tier": self.tier,
            "trace": ([step_dict(entry) for entry in self.steps] if self._trace is None
                      else [step.to_dict() for step in self._trace]),
            "policy": {"name": self.policy_name, "digest": self.policy_digest},
        }
        if self.rules is not None:
            out["rules"] = [r.to_dict() for r in self.rules]
        out.update(self.extra)
        return out

    def expires_at(self) -> dict[str, str | None]:
        """Absolute expiry instants (RFC 3339, UTC, whole seconds) of what this decision allows:
        ``access`` and ``refresh`` (``None`` when not issued) and ``session`` (``None`` when the
        session end is unknown). Lifetimes were already cut to the session end."""
        issued = self.issued_at
        return {
            "access": _rfc3339(issued + timedelta(seconds=self.access_ttl)) if self.allow else None,
            "refresh": _rfc3339(issued + timedelta(seconds=self.refresh_ttl)) if self.refresh_ttl else None,
            "session": _rfc3339(self.session_end) if self.session_end is not None else None,
        }


def _rfc3339(instant: datetime) -> str:
    """``2026-03-02T10:00:00Z``: UTC, whole seconds (truncated). Called three times per decision,
    so the usual case (already UTC) skips the conversion; isoformat's "+00:00" becomes "Z"."""
    if instant.tzinfo is not timezone.utc:
        instant = instant.astimezone(timezone.utc)
    return instant.isoformat(timespec="seconds")[:-6] + "Z"
