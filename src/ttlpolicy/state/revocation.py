"""Revocation: tokens that stop being good before they expire.

A revocation names a *selector* — one token (``jti``), a refresh family (``sid``), a subject
(``sub``), a client (``client_id``/``azp``), a tenant (``tenant``), or ``all`` — and, except for
a single token, a moment ``issued_before``: every token of that selector issued at or before it
is revoked (tokens issued later are not, so a user can sign in again). Bulk revocation in a
breach is the same thing with ``issued_before`` set to when the breach began, or ``all``.

Revocations are records in a shared collection (:mod:`.records`): idempotent — a selector has at
most one active revocation, so the same request twice, or "revoke alice" run twice a minute
apart, is one entry; a repeat that reaches further (a later ``issued_before``) extends that entry
in place rather than adding another — listable, and liftable (a lifted one is kept, with who
lifted it and why, until it expires). Each is kept until every token it could match has expired
anyway (``expires_at``).

Checking is a lookup in memory — at most six dictionary reads — in the :class:`RevocationIndex`
that every process rebuilds when the collection's version changes.

>>> registry = Revocations(store, retention=90 * 86400)                       # doctest: +SKIP
>>> registry.revoke("subject", "alice", reason="INC-42", by="api_key:soc", now=time.time())  # doctest: +SKIP
>>> registry.check(TokenFacts(subject="alice", issued_at=t), now=time.time())  # doctest: +SKIP
Revocation(kind='subject', value='alice', ...)
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping

from ..errors import Problem
from .records import UNREAD, RecordCollection, Written
from .store import StateStore

audit_log = logging.getLogger("ttlpolicy.audit")

Kind = Literal["token", "family", "subject", "client", "tenant", "all"]
KINDS: tuple[Kind, ...] = ("token", "family", "subject", "client", "tenant", "all")
# How a selector reads a token's claims.
CLAIMS: Mapping[str, tuple[str, ...]] = {"token": ("jti",), "family": ("sid",), "subject": ("sub",),
                                         "client": ("client_id", "azp"), "tenant": ("tenant", "tid")}
MAX_VALUE = 512
MAX_REASON = 500
FUTURE_SKEW = 60.0  # an issued_before this far ahead of now is a mistake, not a plan


class RevocationInputError(ValueError):
    """A revocation request that cannot be stored; ``path`` names the field."""

    def __init__(self, path: str, message: str, code: str = "invalid-field"):
        super().__init__(f"{path}: {message}")
        self.path, self.message, self.code = path, message, code

    def problem(self) -> Problem:
        return Problem.field(self.path, self.code, self.message)


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What a check knows of a token. Unknown fields are None; ``issued_at`` in epoch seconds."""

    jti: str | None = None
    family: str | None = None
    subject: str | None = None
    client: str | None = None
    tenant: str | None = None
    issued_at: float | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> TokenFacts:
        iat = claims.get("iat")
        return cls(jti=_claim(claims, "jti"), family=_claim(claims, "sid"), subject=_claim(claims, "sub"),
                   client=_claim(claims, "client_id") or _claim(claims, "azp"),
                   tenant=_claim(claims, "tenant") or _claim(claims, "tid"),
                   issued_at=float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None)

    def value(self, kind: str) -> str | None:
        return {"token": self.jti, "family": self.family, "subject": self.subject, "client": self.client,
                "tenant": self.tenant}.get(kind)


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    """A non-empty string claim (the names are those of CLAIMS), else None."""
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Revocation:
    id: str
    kind: str
    value: str | None
    issued_before: float | None  # None only for kind "token"
    reason: str
    created_by: str
    created_at: float
    expires_at: float
    lifted_at: float | None = None
    lifted_by: str | None = None
    lift_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.lifted_at is None

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "issued_before": self.issued_before, "reason": self.reason,
                "created_by": self.created_by, "created_at": self.created_at, "expires_at": self.expires_at,
                "lifted_at": self.lifted_at, "lifted_by": self.lifted_by, "lift_reason": self.lift_reason}

    @classmethod
    def from_record(cls, record_id: str, record: Mapping[str, Any]) -> Revocation:
        return cls(id=record_id, kind=str(record["kind"]), value=record.get("value"),
                   issued_before=record.get("issued_before"), reason=str(record.get("reason", "")),
                   created_by=str(record.get("created_by", "")), created_at=float(record["created_at"]),
                   expires_at=float(record["expires_at"]), lifted_at=record.get("lifted_at"),
                   lifted_by=record.get("lifted_by"), lift_reason=record.get("lift_reason"))

    def to_dict(self) -> dict[str, Any]:
        """The API's view: instants as RFC 3339."""
        from .timefmt import rfc3339

        return {"id": self.id, "kind": self.kind, "value": self.value,
                "issued_before": rfc3339(self.issued_before) if self.issued_before is not None else None,
                "reason": self.reason, "created_by": self.created_by, "created_at": rfc3339(self.created_at),
                "expires_at": rfc3339(self.expires_at), "status": "active" if self.active else "lifted",
                "lifted_at": rfc3339(self.lifted_at) if self.lifted_at is not None else None,
                "lifted_by": self.lifted_by, "lift_reason": self.lift_reason}

    def describe(self) -> str:
        """For a trace or a check answer: ``subject alice issued before 2026-…``."""
        from .timefmt import rfc3339

        what = "every token" if self.kind == "all" else f"{self.kind} {self.value}"
        if self.issued_before is None:
            return f"{what} revoked ({self.reason})"
        return f"{what} issued before {rfc3339(self.issued_before)} revoked ({self.reason})"


def revocation_id(kind: str, value: str | None, issued_before: float | None) -> str:
    """Stable id: the same selector and moment always give the same revocation (idempotency)."""
    moment = "" if issued_before is None else repr(float(issued_before))
    digest = hashlib.sha256(f"{kind}\0{value or ''}\0{moment}".encode()).digest()
    return "rev_" + base64.b32encode(digest[:15]).decode().lower()


@dataclass
class RevocationIndex:
    """Active revocations by selector, for checks in O(1). Immutable once built."""

    tokens: dict[str, Revocation] = field(default_factory=dict)
    # (kind, value) -> the active revocation with the latest issued_before for that selector
    selectors: dict[tuple[str, str | None], Revocation] = field(default_factory=dict)

    @classmethod
    def build(cls, revocations: Iterable[Revocation], now: float, base: RevocationIndex | None = None
              ) -> RevocationIndex:
        index = cls() if base is None else cls(dict(base.tokens), dict(base.selectors))
        for revocation in revocations:
            if not revocation.active or revocation.expires_at <= now:
                continue
            if revocation.kind == "token":
                assert revocation.value is not None
                index.tokens[revocation.value] = revocation
                continue
            key = (revocation.kind, revocation.value)
            held = index.selectors.get(key)
            if held is None or (revocation.issued_before or 0) > (held.issued_before or 0):
                index.selectors[key] = revocation
        return index

    def active(self, revocation: Revocation, now: float) -> Revocation | None:
        """The active revocation of the same selector as ``revocation`` (its token, or its kind
        and value), if any."""
        if revocation.kind == "token":
            held = self.tokens.get(revocation.value or "")
        else:
            held = self.selectors.get((revocation.kind, revocation.value))
        return held if held is not None and held.expires_at > now else None

    def updated(self, changed: Iterable[Revocation], everything: Mapping[str, Revocation],
                now: float) -> RevocationIndex:
        """A new index with ``changed`` applied (``everything`` already holds them): the dicts are
        copied, not rebuilt, unless a revocation was lifted or has expired."""
        changed = list(changed)
        if any(not r.active or r.expires_at <= now for r in changed):
            return RevocationIndex.build(everything.values(), now)
        return RevocationIndex.build(changed, now, base=self)

    def check(self, facts: TokenFacts, now: float) -> Revocation | None:
        """The revocation that covers ``facts``, if any. A token whose issue time is unknown is
        covered by every revocation of its selectors (it cannot be shown to be newer)."""
        if facts.jti is not None:
            hit = self.tokens.get(facts.jti)
            if hit is not None and hit.expires_at > now:
                return hit
        if not self.selectors:
            return None
        for kind in ("family", "subject", "client", "tenant", "all"):
            value = None if kind == "all" else facts.value(kind)
            if kind != "all" and value is None:
                continue
            hit = self.selectors.get((kind, value))
            if hit is None or hit.expires_at <= now:
                continue
            if facts.issued_at is None or hit.issued_before is None or facts.issued_at <= hit.issued_before:
                return hit
        return None


class Revocations:
    """Create, lift, list and check revocations on a :class:`StateStore` (thread-safe).

    ``retention``: the longest any token lives; a revocation is kept that long after the
    moment it covers (a token revocation: until the token's own expiry, when given).
    """

    COLLECTION = "revocations"

    def __init__(self, store: StateStore, *, retention: float):
        self.collection = RecordCollection(store, self.COLLECTION, ttl=retention * 2)
        self.retention = retention
        self._lock = threading.Lock()
        self._version: str | None = None
        self._all: dict[str, Revocation] = {}
        self.index = RevocationIndex()
        self.synced_at: float | None = None

    # -- reading ---------------------------------------------------------------------------------

    def sync(self, now: float, force: bool = False, version: str | None = UNREAD) -> bool:
        """Reload from the store if another process changed it; True if reloaded. Raises
        :class:`~.store.StoreUnavailable` (and keeps the copy in memory)."""
        if version is UNREAD:
            version = self.collection.version()
        if version == self._version and not force and self.synced_at is not None:
            self.synced_at = now
            return False
        version, loaded = self.collection.reload(Revocation.from_record, self._all,
                                                 lambda r: r.expires_at > now, "revocation(s)")
        index = RevocationIndex.build(loaded.values(), now)
        with self._lock:
            self._version, self._all, self.index, self.synced_at = version, loaded, index, now
        expired = [r.id for r in loaded.values() if r.expires_at <= now]
        if expired:
            self.collection.delete(expired)
        return True

    def check(self, facts: TokenFacts, now: float) -> Revocation | None:
        return self.index.check(facts, now)

    def get(self, revocation_id: str) -> Revocation | None:
        record = self.collection.get(revocation_id)
        return None if record is None else Revocation.from_record(revocation_id, record)

    def listing(self, now: float, *, kind: str | None = None, value: str | None = None,
             status: str = "active", cursor: str | None = None, limit: int = 100) -> tuple[list[Revocation], str | None]:
        """A page of revocations, newest first; the second item is the next page's cursor."""
        self.sync(now)
        with self._lock:
            entries = [r for r in self._all.values() if r.expires_at > now]
        if kind is not None:
            entries = [r for r in entries if r.kind == kind]
        if value is not None:
            entries = [r for r in entries if r.value == value]
        if status != "all":
            entries = [r for r in entries if r.active == (status == "active")]
        entries.sort(key=lambda r: (-r.created_at, r.id))
        if cursor is not None:
            created, _, after = _decode_cursor(cursor)
            entries = [r for r in entries if (-r.created_at, r.id) > (-created, after)]
        page = entries[:limit]
        following = _encode_cursor(page[-1]) if len(entries) > limit else None
        return page, following

    # -- writing ---------------------------------------------------------------------------------

    def prepare(self, item: Mapping[str, Any], by: str, now: float, path: str = "") -> Revocation:
        """Validate one request item (``kind``, ``value``, ``reason``, optional ``issued_before``
        and ``expires_at`` as epoch seconds); raises :class:`RevocationInputError`."""
        prefix = f"{path}." if path else ""
        unknown = sorted(set(item) - {"kind", "value", "reason", "issued_before", "expires_at"})
        if unknown:
            raise RevocationInputError(prefix + unknown[0], "unknown field", "unknown-field")
        kind = item.get("kind")
        if kind not in KINDS:
            raise RevocationInputError(prefix + "kind", f"expected one of {', '.join(KINDS)}")
        value = item.get("value")
        if kind == "all":
            if value is not None:
                raise RevocationInputError(prefix + "value", "kind 'all' takes no value")
        elif not isinstance(value, str) or not value.strip():
            raise RevocationInputError(prefix + "value", f"kind {kind!r} needs a value (the {kind}'s identifier)")
        elif len(value) > MAX_VALUE:
            raise RevocationInputError(prefix + "value", f"longer than {MAX_VALUE} characters", "too-long")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise RevocationInputError(prefix + "reason", "required: say why (an incident id, a ticket)")
        if len(reason) > MAX_REASON:
            raise RevocationInputError(prefix + "reason", f"longer than {MAX_REASON} characters", "too-long")
        issued_before = item.get("issued_before")
        if kind == "token":
            if issued_before is not None:
                raise RevocationInputError(prefix + "issued_before", "a single token is revoked outright; "
                                           "issued_before is for the other kinds")
        elif issued_before is None:
            issued_before = now
        else:
            issued_before = _instant(issued_before, prefix + "issued_before")
        if issued_before is not None and issued_before > now + FUTURE_SKEW:
            raise RevocationInputError(prefix + "issued_before", "is in the future; revoke what was issued up to now")
        expires_at = item.get("expires_at")
        longest = (issued_before if issued_before is not None else now) + self.retention
        if expires_at is None:
            if longest <= now:
                raise RevocationInputError(prefix + "issued_before", "every token issued before this has expired "
                                           "already (state.retention); there is nothing left to revoke")
            expires_at = longest
        else:
            expires_at = _instant(expires_at, prefix + "expires_at")
        if expires_at <= now:
            raise RevocationInputError(prefix + "expires_at", "is in the past: that token has expired already")
        expires_at = min(float(expires_at), longest)
        ib = None if issued_before is None else float(issued_before)
        return Revocation(id=revocation_id(str(kind), value, ib), kind=str(kind), value=value,
                          issued_before=ib, reason=reason.strip(), created_by=by, created_at=now,
                          expires_at=expires_at)

    def revoke_all(self, revocations: list[Revocation], now: float) -> list[tuple[Revocation, bool]]:
        """Store validated revocations at once (all or none). For each: the stored revocation
        and whether it is new. A selector that already has an active revocation keeps that one
        entry (its id, reason and author): returned unchanged, or extended to the later
        ``issued_before`` (and ``expires_at``) when the new one reaches further."""
        self.sync(now)
        out: list[tuple[tuple[str, str | None], bool]] = []
        to_write: dict[str, Revocation] = {}
        final: dict[tuple[str, str | None], Revocation] = {}  # each selector's entry after this request
        for revocation in revocations:
            selector = (revocation.kind, revocation.value)
            held = final.get(selector) or self.index.active(revocation, now)
            if held is None:
                to_write[revocation.id] = final[selector] = revocation
                out.append((selector, True))
                continue
            if (revocation.issued_before or 0) > (held.issued_before or 0) or revocation.expires_at > held.expires_at:
                ib = None if held.issued_before is None else max(held.issued_before, revocation.issued_before or 0)
                held = replace(held, issued_before=ib, expires_at=max(held.expires_at, revocation.expires_at))
                to_write[held.id] = held
                audit_log.info("extended %s by %s (%s)", held.describe(), revocation.created_by, revocation.reason)
            final[selector] = held
            out.append((selector, False))
        if to_write:
            written = self.collection.write((r.id, r.to_record()) for r in to_write.values())
            for selector, created in out:
                if created:
                    revocation = final[selector]
                    audit_log.info("revoked %s by %s: %s", revocation.describe(), revocation.created_by, revocation.id)
            self._applied(written, to_write.values(), now)
        return [(final[selector], created) for selector, created in out]

    def _applied(self, written: Written, changed: Iterable[Revocation], now: float) -> None:
        """Bring the copy in memory up to date after a write of ours: in place when it was
        current (the write replaced the version it was loaded at), else by a reload. A process
        that has never read the collection (a one-off writer) leaves it for its first sync."""
        with self._lock:
            if self.synced_at is not None and written.before == self._version:
                everything = {**self._all, **{r.id: r for r in changed}}
                self.index = self.index.updated(changed, everything, now)
                self._all, self._version = everything, written.version
                return
        if self.synced_at is not None:
            self.sync(now, force=True)

    def revoke(self, kind: str, value: str | None, *, reason: str, by: str, now: float,
               issued_before: float | None = None, expires_at: float | None = None) -> tuple[Revocation, bool]:
        item: dict[str, Any] = {"kind": kind, "value": value, "reason": reason}
        if issued_before is not None:
            item["issued_before"] = issued_before
        if expires_at is not None:
            item["expires_at"] = expires_at
        return self.revoke_all([self.prepare(item, by, now)], now)[0]

    def lift(self, revocation_id: str, *, by: str, reason: str | None, now: float) -> Revocation | None:
        """Lift a revocation (idempotent); None when there is no such revocation."""
        held = self.get(revocation_id)
        if held is None or held.expires_at <= now:
            return None
        if not held.active:
            return held
        lifted = replace(held, lifted_at=now, lifted_by=by, lift_reason=reason)
        written = self.collection.write([(lifted.id, lifted.to_record())])
        audit_log.info("lifted %s by %s (%s): %s", held.describe(), by, reason or "no reason given", held.id)
        self._applied(written, [lifted], now)
        return lifted


def _instant(value: Any, path: str) -> float:
    from .timefmt import to_epoch

    try:
        return to_epoch(value)
    except ValueError as exc:
        raise RevocationInputError(path, str(exc)) from None


def _encode_cursor(revocation: Revocation) -> str:
    raw = f"{revocation.created_at!r}|{revocation.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, record_id = raw.split("|", 1)
        return float(created), "", record_id
    except (ValueError, UnicodeDecodeError):
        raise RevocationInputError("cursor", "not a cursor this service handed out") from None
