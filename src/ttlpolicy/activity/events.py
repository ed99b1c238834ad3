"""Events: what token issuers report that the decision service cannot see for itself.

An event is a small JSON object, validated here once for the API (``POST /v1/events``), the
event log and the usage report::

    {"id": "evt-7f3a", "type": "token.refreshed", "time": "2026-03-02T10:00:00Z",
     "subject": "alice", "client": "web", "session": "fam-91", "ip": "203.0.113.9", "country": "DE"}

``id`` makes sending idempotent (the same id twice counts once); ``subject`` or ``client`` says
whose activity it is. Every problem of every event is reported, each at its path
(``events[3].time``), never just the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..context import parse_ip, parse_timestamp
from ..errors import Problem

EVENT_TYPES = (
    "token.issued",         # a token (pair) was minted at sign-in
    "token.refreshed",      # a refresh token was exchanged
    "refresh.failed",       # a refresh was refused (expired, revoked, reused, rate limited ...)
    "auth.failed",          # a sign-in attempt failed (bad password, failed second factor ...)
    "token.bad_signature",  # a token presented to the issuer or a resource server did not verify
    "logout",               # the user ended the session
)
# Which string fields an event may carry, and their longest length.
_STRINGS = {"id": 128, "subject": 256, "client": 256, "tenant": 256, "session": 256, "token_id": 256,
            "reason": 128, "ip": 64, "country": 2}
_FIELDS = frozenset({*_STRINGS, "type", "time"})
MAX_FUTURE = timedelta(minutes=5)  # clock skew tolerated on an event's time
MAX_AGE = timedelta(days=7)  # older events are refused: sliding windows never reach that far back


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event; ``time`` is aware UTC."""

    id: str
    type: str
    time: datetime
    subject: str | None = None
    client: str | None = None
    tenant: str | None = None
    session: str | None = None
    token_id: str | None = None
    reason: str | None = None
    ip: str | None = None
    country: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event-log line: ``event_id`` (not ``id``) so a reader tells it from a decision."""
        out: dict[str, Any] = {"event_id": self.id, "type": self.type,
                               "time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        for name in ("subject", "client", "tenant", "session", "token_id", "reason", "ip", "country"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _problem(path: str, code: str, message: str) -> Problem:
    return Problem.field(path, code, message)


def parse_event(raw: Any, path: str, now: datetime) -> tuple[Event | None, list[Problem]]:
    """``(event, [])`` for a valid ``raw`` object, else ``(None, problems)`` located under ``path``."""
    if not isinstance(raw, dict):
        return None, [_problem(path, "invalid-type", "an event is a JSON object")]
    problems = [_problem(f"{path}.{k}", "unknown-field", "unknown field") for k in raw if k not in _FIELDS]
    values: dict[str, Any] = {}
    for name, limit in _STRINGS.items():
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            problems.append(_problem(f"{path}.{name}", "invalid-field", "expected a non-empty string"))
        elif len(value) > limit:
            problems.append(_problem(f"{path}.{name}", "too-long", f"longer than {limit} characters"))
        else:
            values[name] = value
    if "id" not in raw:
        problems.append(_problem(f"{path}.id", "missing-field", "required (it makes sending idempotent)"))
    kind = raw.get("type")
    if "type" not in raw:
        problems.append(_problem(f"{path}.type", "missing-field", "required"))
    elif kind not in EVENT_TYPES:
        problems.append(_problem(f"{path}.type", "invalid-field", f"expected one of {', '.join(EVENT_TYPES)}"))
    if "subject" not in raw and "client" not in raw:
        problems.append(_problem(path, "missing-field", "give subject or client: whose activity this is"))
    if "ip" in values:
        try:
            parse_ip(values["ip"])
        except ValueError:
            problems.append(_problem(f"{path}.ip", "invalid-field", "not an IPv4 or IPv6 address"))
    country = values.get("country")
    if country is not None and not (country.isascii() and country.isalpha() and country.isupper()):
        problems.append(_problem(f"{path}.country", "invalid-field", "expected an ISO 3166-1 alpha-2 code (DE)"))
    when = now
    if raw.get("time") is not None:
        try:
            when = parse_timestamp(raw["time"]).astimezone(timezone.utc)
        except ValueError as exc:
            problems.append(_problem(f"{path}.time", "invalid-field", str(exc)))
        else:
            if when > now + MAX_FUTURE:
                problems.append(_problem(f"{path}.time", "invalid-field", "more than 5 minutes in the future"))
            elif when < now - MAX_AGE:
                problems.append(_problem(f"{path}.time", "invalid-field", "older than 7 days"))
    if problems:
        return None, problems
    return Event(type=str(kind), time=when, **values), []
