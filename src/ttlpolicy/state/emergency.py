"""Emergency ceilings: a time-boxed override that can only tighten, for a scope written in CEL.

``ttlpolicy emergency start --scope 'tier == "finance"' --access 5m --refresh 0s --for 24h
--reason INC-42``: for 24 hours every decision whose context matches the scope gets access
tokens of at most 5 minutes and no refresh token. An emergency may also deny or force step-up.
It can only make tokens shorter (ceilings, deny, step-up) — there is no way to write one that
lengthens anything — and it always ends: ``ends_at`` is mandatory and capped by the service's
``state.emergency_max_duration``; it can be ended early.

The scope is type-checked, when the emergency is created, against the declared attributes of
every policy it applies to, and errors point at the column inside the scope. If a policy
reloaded later no longer accepts the scope, or the scope cannot be evaluated for a request,
the emergency applies (fail safe) and the decision says so.

Emergencies are records in a shared collection (:mod:`.records`), kept in memory by every
process and applied from there: an emergency keeps applying while the store is down.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..durations import format_duration, parse_duration
from ..errors import Location, Problem
from .conditions import Program, compile_condition, holds
from .records import UNREAD, RecordCollection
from .store import StateStore
from .timefmt import rfc3339, to_epoch

if TYPE_CHECKING:
    from ..policyset import PolicySet

audit_log = logging.getLogger("ttlpolicy.audit")
MAX_SCOPE = 2000
MAX_REASON = 500
MAX_EMERGENCIES = 1000  # live at once; more is a runaway script, not an incident


class EmergencyInputError(ValueError):
    """Bad emergency input; ``errors`` lists every problem (located at its line and column for the scope)."""

    def __init__(self, errors: list[Problem]):
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Emergency:
    id: str
    scope: str
    policies: tuple[str, ...] | None  # None: every policy
    access_ttl: int | None  # ceilings in seconds
    refresh_ttl: int | None
    deny: str | None
    step_up: str | None
    reason: str
    created_by: str
    starts_at: float
    ends_at: float
    ended_at: float | None = None
    ended_by: str | None = None

    def live(self, now: float) -> bool:
        return self.ended_at is None and self.starts_at <= now < self.ends_at

    def effects(self) -> str:
        """``access ≤ 5m, refresh off, deny``: what it does, for the trace and the CLI."""
        parts = []
        if self.access_ttl is not None:
            parts.append(f"access ≤ {format_duration(self.access_ttl)}")
        if self.refresh_ttl is not None:
            parts.append("refresh off" if self.refresh_ttl == 0 else f"refresh ≤ {format_duration(self.refresh_ttl)}")
        if self.deny is not None:
            parts.append(f"deny ({self.deny})")
        if self.step_up is not None:
            parts.append(f"step-up ({self.step_up})")
        return ", ".join(parts)

    def label(self) -> str:
        """``emergency INC-42 until 2026-12-02T03:00:00Z``."""
        return f"emergency {self.reason} until {rfc3339(self.ends_at)}"

    def to_record(self) -> dict[str, Any]:
        return {"scope": self.scope, "policies": list(self.policies) if self.policies is not None else None,
                "access_ttl": self.access_ttl, "refresh_ttl": self.refresh_ttl, "deny": self.deny,
                "step_up": self.step_up, "reason": self.reason, "created_by": self.created_by,
                "starts_at": self.starts_at, "ends_at": self.ends_at, "ended_at": self.ended_at,
                "ended_by": self.ended_by}

    @classmethod
    def from_record(cls, record_id: str, r: Mapping[str, Any]) -> Emergency:
        policies = r.get("policies")
        return cls(id=record_id, scope=str(r["scope"]), policies=tuple(policies) if policies is not None else None,
                   access_ttl=r.get("access_ttl"), refresh_ttl=r.get("refresh_ttl"), deny=r.get("deny"),
                   step_up=r.get("step_up"), reason=str(r["reason"]), created_by=str(r.get("created_by", "")),
                   starts_at=float(r["starts_at"]), ends_at=float(r["ends_at"]), ended_at=r.get("ended_at"),
                   ended_by=r.get("ended_by"))

    def to_dict(self, now: float) -> dict[str, Any]:
        status = "ended" if self.ended_at is not None or now >= self.ends_at else "active"
        return {"id": self.id, "scope": self.scope, "policies": list(self.policies) if self.policies else None,
                "access_ttl": self.access_ttl, "refresh_ttl": self.refresh_ttl, "deny": self.deny,
                "step_up": self.step_up, "reason": self.reason, "created_by": self.created_by,
                "starts_at": rfc3339(self.starts_at), "ends_at": rfc3339(self.ends_at),
                "ended_at": rfc3339(self.ended_at) if self.ended_at is not None else None,
                "ended_by": self.ended_by, "status": status, "effects": self.effects()}


@dataclass(frozen=True, slots=True)
class EmergencyMatch:
    """An emergency that applies to one decision; ``error`` when its scope could not be evaluated."""

    emergency: Emergency
    error: str | None = None


def _duration(value: Any, path: str, errors: list[Problem]) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        errors.append(Problem.field(path, "invalid-field", str(exc)))
        return None


class Emergencies:
    """Start, end, list and apply emergencies on a :class:`StateStore` (thread-safe)."""

    COLLECTION = "emergencies"

    def __init__(self, store: StateStore, *, max_duration: float):
        self.max_duration = max_duration
        self.collection = RecordCollection(store, self.COLLECTION, ttl=max_duration * 2 + 86400)
        self._lock = threading.Lock()
        self._version: str | None = None
        self._all: dict[str, Emergency] = {}
        # (emergency id, policy digest) -> compiled scope, or the error that stops it compiling
        self._programs: dict[tuple[str, str], Program | str] = {}

    # -- reading ---------------------------------------------------------------------------------

    def sync(self, now: float, version: str | None = UNREAD) -> bool:
        """Reload from the store when it changed (every write replaces the collection's version);
        True when it did. Raises StoreUnavailable."""
        if version is UNREAD:
            version = self.collection.version()
        if version == self._version:  # None before the first read, and for a collection never written
            return False
        # An emergency keeps applying until its end, whatever happens to the store.
        version, loaded = self.collection.reload(Emergency.from_record, self._all, lambda e: e.live(now),
                                                 "live emergency(ies)")
        with self._lock:
            self._version, self._all = version, loaded
        expired = [e.id for e in loaded.values() if e.ends_at + self.max_duration <= now]
        if expired:
            self.collection.delete(expired)  # ended ones stay listable for a while, then go
        return True

    def all(self) -> list[Emergency]:
        with self._lock:
            return list(self._all.values())

    def live(self, now: float) -> list[Emergency]:
        if not self._all:  # the usual case, on every decision: no lock, no list
            return []
        return [e for e in self.all() if e.live(now)]

    def listing(self, now: float, status: str = "active") -> list[Emergency]:
        self.sync(now)
        entries = self.all()
        if status == "active":
            entries = [e for e in entries if e.live(now)]
        elif status == "ended":
            entries = [e for e in entries if not e.live(now)]
        return sorted(entries, key=lambda e: (-e.starts_at, e.id))

    def get(self, emergency_id: str) -> Emergency | None:
        record = self.collection.get(emergency_id)
        return None if record is None else Emergency.from_record(emergency_id, record)

    def matching(self, policy: Any, activation: Mapping[str, Any], now: float) -> list[EmergencyMatch]:
        """The live emergencies whose scope holds for ``activation`` under ``policy`` (a
        CompiledPolicy). A scope that does not compile for this policy or cannot be evaluated
        matches: an emergency errs on the side of applying."""
        live = self.live(now)
        if not live:
            return []
        out = []
        for emergency in live:
            if emergency.policies is not None and policy.name not in emergency.policies:
                continue
            program = self._program(emergency, policy)
            if isinstance(program, str):
                out.append(EmergencyMatch(emergency, program))
                continue
            result = holds(program, activation)
            if result is None:
                out.append(EmergencyMatch(emergency, "the scope could not be evaluated for this context"))
            elif result:
                out.append(EmergencyMatch(emergency))
        return sorted(out, key=lambda m: (m.emergency.ends_at, m.emergency.id))

    def _program(self, emergency: Emergency, policy: Any) -> Program | str:
        key = (emergency.id, policy.digest)
        program = self._programs.get(key)
        if program is None:
            compiled, issues = compile_condition(emergency.scope, policy.attributes)
            program = compiled if compiled is not None else f"the scope does not fit policy {policy.name}: " + \
                "; ".join(i.message for i in issues)
            with self._lock:
                if len(self._programs) > 4 * MAX_EMERGENCIES:
                    self._programs.clear()
                self._programs[key] = program
        return program

    # -- writing ---------------------------------------------------------------------------------

    def prepare(self, body: Mapping[str, Any], policies: PolicySet, by: str, now: float) -> Emergency:
        """Validate a start request; raises :class:`EmergencyInputError` with every problem.

        Fields: ``scope`` (CEL), ``reason``, ``ends_at`` (RFC 3339) or ``duration`` (``24h``),
        optional ``policies`` (names), and at least one of ``access_ttl``, ``refresh_ttl``
        (durations; ``0s`` turns refresh off), ``deny``, ``step_up`` (reasons)."""
        errors: list[Problem] = []
        allowed = {"scope", "reason", "ends_at", "duration", "policies", "access_ttl", "refresh_ttl", "deny", "step_up"}
        for field_name in sorted(set(body) - allowed):
            errors.append(Problem.field(field_name, "unknown-field", "unknown field"))
        scope = body.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            errors.append(Problem.field("scope", "missing-field", 'required: a CEL condition such as tier == "finance" (or "true" for every request)'))
            scope = None
        elif len(scope) > MAX_SCOPE:
            errors.append(Problem.field("scope", "too-long", f"longer than {MAX_SCOPE} characters"))
            scope = None
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            errors.append(Problem.field("reason", "missing-field", "required: the incident id or why"))
        elif len(reason) > MAX_REASON:
            errors.append(Problem.field("reason", "too-long", f"longer than {MAX_REASON} characters"))
        names = body.get("policies")
        targets = list(policies)
        if names is not None:
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                errors.append(Problem.field("policies", "invalid-field", "expected a list of policy names"))
            else:
                unknown = [n for n in names if n not in policies]
                for name in unknown:
                    errors.append(Problem.field("policies", "unknown-policy", f"no policy {name!r} (known: {', '.join(policies.names)})"))
                targets = [policies.get(n) for n in names if n in policies]
        access = _duration(body.get("access_ttl"), "access_ttl", errors)
        refresh = _duration(body.get("refresh_ttl"), "refresh_ttl", errors)
        texts = {}  # used only when there is no error: None or a reason
        for field_name in ("deny", "step_up"):
            value = texts[field_name] = body.get(field_name)
            if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON):
                errors.append(Problem.field(field_name, "invalid-field", "expected a reason (text)"))
        if all(body.get(f) is None for f in ("access_ttl", "refresh_ttl", "deny", "step_up")):
            errors.append(Problem.field("", "missing-field", "an emergency needs an effect: access_ttl, "
                           "refresh_ttl, deny or step_up"))
        ends_at = self._end(body, now, errors)
        if scope is not None:
            found: dict[tuple[str, int, int, str], list[str]] = {}  # the same mistake once, with its policies
            for policy in targets:
                _, issues = compile_condition(scope, policy.attributes)
                for issue in issues:
                    found.setdefault((issue.code, issue.line, issue.column, issue.message), []).append(policy.name)
            for (code, line, column, message), names in found.items():
                errors.append(Problem(code, f"{message} (policies: {', '.join(names)})", Location("scope", line, column),
                                      path="scope"))
        if len(self.live(now)) >= MAX_EMERGENCIES:
            errors.append(Problem.field("", "too-many-items", f"{MAX_EMERGENCIES} emergencies are live"))
        if errors:
            raise EmergencyInputError(errors)
        assert scope is not None and isinstance(reason, str) and ends_at is not None
        return Emergency(id="em_" + secrets.token_hex(8), scope=scope, policies=tuple(names) if names else None,
                         access_ttl=access, refresh_ttl=refresh, deny=texts["deny"], step_up=texts["step_up"],
                         reason=reason.strip(), created_by=by, starts_at=now, ends_at=ends_at)

    def _end(self, body: Mapping[str, Any], now: float, errors: list[Problem]) -> float | None:
        has_end, has_duration = body.get("ends_at") is not None, body.get("duration") is not None
        cap = f"at most {format_duration(int(self.max_duration))} (state.emergency_max_duration)"
        if has_end == has_duration:
            errors.append(Problem.field("ends_at", "missing-field", f"give exactly one of ends_at or duration: an emergency must end, {cap} from now"))
            return None
        if has_duration:
            seconds = _duration(body["duration"], "duration", errors)
            if seconds is None:
                return None
            if not 0 < seconds <= self.max_duration:
                errors.append(Problem.field("duration", "out-of-range", f"must be above 0s and {cap}"))
                return None
            return now + seconds
        try:
            end = to_epoch(body["ends_at"])
        except ValueError as exc:
            errors.append(Problem.field("ends_at", "invalid-field", str(exc)))
            return None
        if end <= now:
            errors.append(Problem.field("ends_at", "out-of-range", "is in the past"))
            return None
        if end - now > self.max_duration:
            errors.append(Problem.field("ends_at", "out-of-range", f"is too far ahead: {cap}"))
            return None
        return end

    def start(self, emergency: Emergency, now: float) -> Emergency:
        self.collection.write([(emergency.id, emergency.to_record())])
        audit_log.info("%s started by %s: scope %s, %s", emergency.label(), emergency.created_by, emergency.scope,
                       emergency.effects())
        self.sync(now)
        return emergency

    def end(self, emergency_id: str, *, by: str, now: float) -> Emergency | None:
        """End early (idempotent); None when there is no such emergency."""
        held = self.get(emergency_id)
        if held is None:
            return None
        if not held.live(now):
            return held
        ended = replace(held, ended_at=now, ended_by=by)
        self.collection.write([(ended.id, ended.to_record())])
        audit_log.info("%s ended early by %s", held.label(), by)
        self.sync(now)
        return ended


def emergencies_in(entries: Iterable[Emergency], now: float) -> int:
    return sum(1 for e in entries if e.live(now))
