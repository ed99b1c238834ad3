"""Refresh-token families: rotation, a reuse grace window, reuse detection, sessions that only tighten.

A *family* is one sign-in session: every refresh token minted from it shares the family id
(the ``sid`` claim, also put in access tokens so revocation reaches them). Following RFC 9700
§4.14.2:

* with **rotation** a refresh token is single-use: redeeming it consumes it and mints a
  successor. Presenting a consumed token again is **reuse**, the sign of a stolen token, and
  revokes the whole family, so the thief's and the victim's tokens both stop working.
* a **grace window** (seconds) tolerates a client that retries because the answer was lost:
  within it the consumed token may be redeemed again once its successor has not been used;
  that successor is superseded (using it later counts as reuse), so a family never has two
  live branches.
* the session only **tightens**: its absolute end (``auth_time + max_session``) can move
  earlier but never later, and a refresh under a stricter decision (a shorter decided
  refresh lifetime than the presented token got) never outlives the presented token.

Storage is a small :class:`RefreshStore` protocol; :class:`MemoryRefreshStore` is the
in-process reference, ``examples/issuer/store.py`` a SQLite one.

>>> chain = RefreshChain(MemoryRefreshStore(), reuse_grace=10)                     # doctest: +SKIP
>>> issued = chain.start(base_claims, decision, now, client_id="web", auth_time=now)  # doctest: +SKIP
>>> redemption = chain.redeem(verifier.verify(refresh_token, now), now, client_id="web")  # doctest: +SKIP
>>> issued = chain.rotate(redemption, base_claims, policies.decide(context, now=now), now)  # doctest: +SKIP
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping, Protocol

from .issue import DecisionView, IssuanceDenied, apply_decision, session_end
from .sender import check_sender
from .verify import TokenInvalid, VerifiedToken, _epoch, token_context

SUPERSEDED = "-"  # successor of a token whose successor was replaced during a grace retry
MAX_GRACE = 300


@dataclass(frozen=True, slots=True)
class Family:
    """One session: who, which client, when the user authenticated, when it must end, its binding."""

    id: str
    subject: str
    client_id: str
    auth_time: int
    session_exp: int | None
    created_at: int
    public_client: bool = False
    cnf: Mapping[str, str] | None = None
    revoked_at: int | None = None
    revoked_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """What the server remembers of one refresh token (never the token itself).

    ``ttl`` is the lifetime the decision granted (before the session cap), compared on the
    next refresh to tell a stricter decision; ``expires_at`` may be lowered server-side.
    """

    jti: str
    family: str
    issued_at: int
    expires_at: int
    ttl: int
    rotation: bool
    grace: int = 0
    used_at: int | None = None
    successor: str | None = None


class RefreshStore(Protocol):
    """Where families and refresh-token records live. Every method is atomic.

    ``consume`` is a compare-and-set (it must succeed for exactly one caller), and the two
    ``tighten_*`` methods only ever lower a value.
    """

    def create_family(self, family: Family) -> None: ...
    def family(self, family_id: str) -> Family | None: ...
    def tighten_session(self, family_id: str, session_exp: int) -> None: ...
    def revoke_family(self, family_id: str, at: int, reason: str) -> None: ...
    def is_revoked(self, family: str) -> bool: ...
    def add_token(self, record: RefreshRecord) -> None: ...
    def token(self, jti: str) -> RefreshRecord | None: ...
    def consume(self, jti: str, at: int, successor: str) -> bool: ...
    def set_successor(self, jti: str, successor: str) -> None: ...
    def tighten_token(self, jti: str, expires_at: int) -> None: ...


class MemoryRefreshStore:
    """A thread-safe in-memory :class:`RefreshStore` (tests, single-process issuers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Family] = {}
        self._tokens: dict[str, RefreshRecord] = {}

    def copy(self) -> MemoryRefreshStore:
        """An independent store with the same state (records are immutable): for what-if checks."""
        clone = MemoryRefreshStore()
        with self._lock:
            clone._families, clone._tokens = dict(self._families), dict(self._tokens)
        return clone

    def create_family(self, family: Family) -> None:
        with self._lock:
            if family.id in self._families:
                raise ValueError("family id already exists")
            self._families[family.id] = family

    def family(self, family_id: str) -> Family | None:
        return self._families.get(family_id)

    def tighten_session(self, family_id: str, session_exp: int) -> None:
        with self._lock:
            fam = self._families[family_id]
            if fam.session_exp is None or session_exp < fam.session_exp:
                self._families[family_id] = replace(fam, session_exp=session_exp)

    def revoke_family(self, family_id: str, at: int, reason: str) -> None:
        with self._lock:
            fam = self._families.get(family_id)
            if fam is not None and fam.revoked_at is None:  # the first reason is the one that counts
                self._families[family_id] = replace(fam, revoked_at=at, revoked_reason=reason)

    def is_revoked(self, family: str) -> bool:
        fam = self._families.get(family)
        return fam is not None and fam.revoked_at is not None

    def add_token(self, record: RefreshRecord) -> None:
        with self._lock:
            self._tokens[record.jti] = record

    def token(self, jti: str) -> RefreshRecord | None:
        return self._tokens.get(jti)

    def consume(self, jti: str, at: int, successor: str) -> bool:
        with self._lock:
            record = self._tokens.get(jti)
            if record is None or record.successor is not None:
                return False
            self._tokens[jti] = replace(record, used_at=at, successor=successor)
            return True

    def set_successor(self, jti: str, successor: str) -> None:
        with self._lock:
            self._tokens[jti] = replace(self._tokens[jti], successor=successor)

    def tighten_token(self, jti: str, expires_at: int) -> None:
        with self._lock:
            record = self._tokens[jti]
            if expires_at < record.expires_at:
                self._tokens[jti] = replace(record, expires_at=expires_at)


@dataclass(frozen=True, slots=True)
class Issued:
    """The result of :meth:`RefreshChain.start` / :meth:`RefreshChain.rotate`.

    ``refresh_claims`` is the new refresh token to sign (``None``: no new one — the decision
    grants none, or the presented token is not rotated and stays valid). Build the access
    token with :meth:`access_claims`, which adds ``sid`` and ``cnf`` and holds it to the
    session's end.
    """

    family: str | None
    session_exp: int | None
    refresh_claims: dict[str, Any] | None
    cnf: Mapping[str, str] | None
    rotated: bool
    _decision: DecisionView = field(repr=False)
    _now: float = field(repr=False)
    _decision_id: str | None = field(default=None, repr=False)

    def access_claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The access-token claims for this issuance (same decision and instant)."""
        base = dict(claims)
        if self.family is not None:
            base["sid"] = self.family
        if self.cnf is not None:
            base["cnf"] = dict(self.cnf)
        # Step-up was settled when this issuance was allowed; it is not asked twice.
        return apply_decision(base, self._decision, self._now, "access", self.session_exp,
                              decision_id=self._decision_id, step_up_satisfied=True)


@dataclass(frozen=True, slots=True)
class Redemption:
    """A presented refresh token that may be exchanged: decide, then :meth:`RefreshChain.rotate`."""

    family: Family
    record: RefreshRecord
    verified: VerifiedToken
    retry: bool  # a retry within the reuse grace window

    def context(self) -> dict[str, Any]:
        """Context namespaces the server knows for this refresh: ``user.auth_time`` of the session,
        the ``token`` claims, with the (possibly tightened) ``session_exp`` of the family."""
        token = token_context(self.verified.claims)
        if self.family.session_exp is not None:  # the family's end, unless the token's own is earlier
            token["session_exp"] = min(token.get("session_exp", self.family.session_exp), self.family.session_exp)
        return {"user": {"auth_time": self.family.auth_time}, "token": token,
                "grant": {"type": "refresh_token"}}


class RefreshChain:
    """Rotation, reuse detection and session tightening over a :class:`RefreshStore`.

    ``reuse_grace`` (seconds, at most 300) applies when the decision does not set
    ``refresh.reuse_grace`` itself. The store is the only state: chains are cheap and
    thread-safe as long as the store is.
    """

    def __init__(self, store: RefreshStore, *, reuse_grace: int = 0):
        if not 0 <= reuse_grace <= MAX_GRACE:
            raise ValueError(f"reuse_grace must be between 0 and {MAX_GRACE} seconds")
        self.store = store
        self.reuse_grace = reuse_grace

    def start(self, claims: Mapping[str, Any], decision: Any, now: datetime | float, *, client_id: str,
              auth_time: datetime | float | None = None, public_client: bool = False,
              cnf: Mapping[str, str] | None = None, decision_id: str | None = None,
              step_up_satisfied: bool = False) -> Issued:
        """Open a session at sign-in: a new family and its first refresh token (if granted).

        ``auth_time`` defaults to ``claims["auth_time"]``, then to ``now``. A public client
        whose tokens are not sender-constrained always gets rotation (RFC 9700 §4.14.2), even
        if the decision does not ask for it.
        """
        view = DecisionView.of(decision)
        view.refuse_unless_issuable(step_up_satisfied)
        if view.sender_constrained and cnf is None:
            raise IssuanceDenied("the policy requires a sender-constrained token (DPoP or mTLS)")
        instant = _epoch(now)
        at = int(instant)
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise ValueError("claims need a string sub")
        if auth_time is None:
            auth_time = claims.get("auth_time", instant)
        auth = int(_epoch(auth_time))
        base = {**claims, "auth_time": auth, "client_id": client_id}
        # the earliest of auth_time + max_session, the decided instant and a session_exp the claims carry
        session_exp = session_end(base, view)
        if view.refresh_ttl <= 0:
            return Issued(None, session_exp, None, cnf, False, view, instant, decision_id)
        family = Family(id=secrets.token_urlsafe(18), subject=subject, client_id=client_id, auth_time=auth,
                        session_exp=session_exp, created_at=at, public_client=public_client,
                        cnf=dict(cnf) if cnf else None)
        base["sid"] = family.id
        if cnf is not None:
            base["cnf"] = dict(cnf)
        # apply_decision finds the same session end in base and the decision itself
        refresh = apply_decision(base, view, instant, "refresh", decision_id=decision_id, step_up_satisfied=True)
        rotation = view.rotation or (public_client and cnf is None)
        self.store.create_family(family)
        self.store.add_token(self._record(refresh, family.id, view, rotation))
        return Issued(family.id, session_exp, refresh, family.cnf, rotation, view, instant, decision_id)

    def redeem(self, verified: VerifiedToken, now: datetime | float, *, client_id: str,
               dpop_jkt: str | None = None, certificate_thumbprint: str | None = None) -> Redemption:
        """Check a verified refresh token against the store; raises :class:`TokenInvalid`.

        Refused: an unknown token, another client's token, a revoked family, a token whose
        binding the presenter cannot prove, a token past its (server-side) expiry or its
        session's end. A consumed token presented outside the grace window revokes the family
        (``reason="reuse"``).
        """
        at = int(_epoch(now))
        jti, family_id = verified.jti, verified.family
        record = self.store.token(jti) if isinstance(jti, str) else None
        if record is None or record.family != family_id:
            raise TokenInvalid("revoked", "unknown refresh token")
        family = self.store.family(record.family)
        if family is None:
            raise TokenInvalid("revoked", "unknown refresh token")
        if family.client_id != client_id:
            raise TokenInvalid("client", "refresh token was issued to another client")
        if family.revoked_at is not None:
            raise TokenInvalid("revoked", "token family revoked")
        # Proof of possession comes before reuse detection: a thief without the key must not be
        # able to revoke the victim's session by replaying a consumed token.
        check_sender({"cnf": family.cnf}, dpop_jkt=dpop_jkt, certificate_thumbprint=certificate_thumbprint)
        if family.session_exp is not None and at >= family.session_exp:
            self.store.revoke_family(family.id, at, "session reached its absolute limit")
            raise TokenInvalid("expired", "session expired; sign in again")
        if at >= record.expires_at:
            raise TokenInvalid("expired", "refresh token expired")
        if record.successor is None:
            return Redemption(family, record, verified, retry=False)
        if self._retry_allowed(record, at):
            return Redemption(family, record, verified, retry=True)
        self.store.revoke_family(family.id, at, "refresh token reuse")
        raise TokenInvalid("reuse", "refresh token reuse detected; token family revoked")

    def rotate(self, redemption: Redemption, claims: Mapping[str, Any], decision: Any, now: datetime | float, *,
               decision_id: str | None = None) -> Issued:
        """Apply the refresh decision: tighten the session, rotate (or not), return the new tokens.

        A deny or a session past its end revokes the family; step-up raises
        :class:`IssuanceDenied` without revoking. A decision granting no refresh token ends the
        presented one (only an access token is issued).
        """
        view = DecisionView.of(decision)
        family, record = redemption.family, redemption.record
        instant = _epoch(now)
        at = int(instant)
        if not view.allow:  # a denied refresh ends the whole session, not just this token
            self.store.revoke_family(family.id, at, "denied by policy")
        view.refuse_unless_issuable()
        if view.sender_constrained and family.cnf is None:
            raise IssuanceDenied("the policy requires a sender-constrained token (DPoP or mTLS); sign in again")
        base = {**claims, "sid": family.id, "client_id": family.client_id, "auth_time": family.auth_time}
        if family.cnf is not None:
            base["cnf"] = dict(family.cnf)
        # the family's end, or earlier: auth_time + max_session, the decided instant, a session_exp the claims carry
        session_exp = session_end(base, view, family.session_exp)
        if session_exp is not None and session_exp != family.session_exp:
            self.store.tighten_session(family.id, session_exp)
        if session_exp is not None and at >= session_exp:
            self.store.revoke_family(family.id, at, "session reached its absolute limit")
            raise IssuanceDenied("the session has reached its absolute limit; sign in again", end_session=True)

        def issued(refresh: dict[str, Any] | None, rotated: bool) -> Issued:
            return Issued(family.id, session_exp, refresh, family.cnf, rotated, view, instant, decision_id)

        ttl = _decided_refresh_ttl(view)
        if ttl <= 0:  # the policy grants no refresh token in this context: this one ends here
            self.store.tighten_token(record.jti, at)
            return issued(None, False)
        # once rotating, always (a public client's bearer tokens rotate from sign-in on: RFC 9700 §4.14.2)
        rotation = view.rotation or record.rotation
        if not rotation:  # the presented token lives on, and tighten_token never lengthens it
            self.store.tighten_token(record.jti, at + ttl if session_exp is None else min(at + ttl, session_exp))
            return issued(None, False)
        refresh = apply_decision(base, view, instant, "refresh", session_exp, decision_id=decision_id)
        # A stricter decision than the one the presented token got never extends the horizon. A
        # lifetime that merely ends with the session (the evaluator cuts it to what remains of
        # max_session) is not stricter: the session end bounds it anyway.
        if ttl < record.ttl and (session_exp is None or at + ttl < session_exp):
            refresh["exp"] = min(refresh["exp"], record.expires_at)
        new = self._record(refresh, family.id, view, True)
        self.store.add_token(new)  # before the swap, so a concurrent retry always finds it
        self._swap(redemption, new.jti, at)
        return issued(refresh, True)

    def _swap(self, redemption: Redemption, successor: str, at: int) -> None:
        """Consume the presented token (or supersede its successor on a retry): exactly one winner."""
        record = redemption.record
        if self.store.consume(record.jti, at, successor):
            return
        current = self.store.token(record.jti)
        if current is not None and self._retry_allowed(current, at) and current.successor is not None \
                and self.store.consume(current.successor, at, SUPERSEDED):
            self.store.set_successor(record.jti, successor)
            return
        self.store.revoke_family(record.family, at, "refresh token reuse")
        raise TokenInvalid("reuse", "refresh token reuse detected; token family revoked")

    def _retry_allowed(self, record: RefreshRecord, at: int) -> bool:
        if record.successor in (None, SUPERSEDED) or record.used_at is None or at - record.used_at > record.grace:
            return False
        successor = self.store.token(record.successor)
        return successor is not None and successor.successor is None

    def _record(self, refresh: Mapping[str, Any], family: str, view: DecisionView, rotation: bool) -> RefreshRecord:
        grace = view.reuse_grace if view.reuse_grace is not None else self.reuse_grace
        return RefreshRecord(jti=refresh["jti"], family=family, issued_at=refresh["iat"], expires_at=refresh["exp"],
                             ttl=_decided_refresh_ttl(view), rotation=rotation,
                             grace=max(0, min(int(grace), MAX_GRACE)))


def _decided_refresh_ttl(view: DecisionView) -> int:
    ttl = view.refresh_ttl
    return min(ttl, int(view.idle_timeout)) if view.idle_timeout is not None else ttl

