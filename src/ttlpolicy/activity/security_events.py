"""Security Event Tokens (RFC 8417) pushed per RFC 8935: verified, then handed on as one event.

A transmitter (an identity provider, a device manager) pushes a signed JWT whose ``events``
claim holds one CAEP or RISC event about a subject. :class:`SetVerifier` accepts it only when
every check passes, in this order: the token's shape and size; the JOSE header (``typ``
``secevent+jwt``, an asymmetric ``alg`` on the transmitter's allow-list, no ``crit``); a
configured transmitter for ``iss``; the signature with that transmitter's keys; ``aud``; the
claims ``iat`` (not in the future, not older than ``max_age``), ``jti`` and ``events``; an
event type ttlpolicy knows; a subject it can name; and, last, that ``jti`` was not seen before
(replay). Any failure raises :class:`SetRejected` with the RFC 8935 error code and a sentence
that never echoes the token, a key or an attacker-chosen value beyond a short, sanitised excerpt.
Nothing is recorded for a rejected SET, so a rejected one never counts as "seen".
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping, Protocol

import jwt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..tokens.keys import VerifyKey, check_algorithms, load_jwks, load_pem_public_key

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
# The event types ttlpolicy acts on, by URI, with the short names the configuration uses.
EVENT_TYPES: Mapping[str, str] = MappingProxyType({
    CAEP + "session-revoked": "session-revoked",
    CAEP + "credential-change": "credential-change",
    RISC + "account-disabled": "account-disabled",
    RISC + "account-credential-change-required": "account-credential-change-required",
    RISC + "credential-compromise": "credential-compromise",
})
SET_MEDIA_TYPE = "application/secevent+jwt"
MAX_SET_LENGTH = 16_384
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/#?=&%+-]")
# Subject identifier formats (RFC 9493) and the member that names the subject in each.
_SUBJECT_MEMBERS = {"iss_sub": "sub", "email": "email", "opaque": "id", "phone_number": "phone_number",
                    "account": "uri", "uri": "uri", "did": "url"}

ErrorCode = Literal["invalid_request", "invalid_key", "invalid_issuer", "invalid_audience",
                    "authentication_failed", "access_denied"]


class SetRejected(Exception):
    """A SET that must not be acted on. ``err`` is the RFC 8935 §2.3 error code.

    >>> SetRejected("invalid_audience", "SET is not for this audience").to_dict()
    {'err': 'invalid_audience', 'description': 'SET is not for this audience'}
    """

    def __init__(self, err: ErrorCode, description: str, reason: str | None = None):
        super().__init__(description)
        self.err, self.description = err, description
        self.reason = reason or err  # a finer slug for metrics: signature, replay, unknown_event, ...

    def to_dict(self) -> dict[str, str]:
        return {"err": self.err, "description": self.description}


def _excerpt(value: str, limit: int = 96) -> str:
    return _UNSAFE.sub("?", value[:limit]) + ("…" if len(value) > limit else "")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transmitter(_Model):
    """One transmitter whose SETs are accepted: its ``iss``, our audience at it, its keys."""

    issuer: str = Field(min_length=1, max_length=1024)
    audience: tuple[str, ...] = Field(min_length=1, description="accepted aud values (string or list)")
    public_keys: tuple[Path, ...] = ()
    jwks_file: Path | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway: int = Field(60, ge=0, le=300, description="seconds of clock skew on iat")
    max_age: int = Field(86_400, ge=60, le=30 * 86_400,
                         description="oldest iat accepted (seconds); jti are remembered this long")
    require_typ: bool = Field(True, description="require the JOSE typ secevent+jwt (RFC 8417 §2.3)")
    _keys: tuple[VerifyKey, ...] = PrivateAttr(default=())

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_algorithms(value)

    @model_validator(mode="after")
    def _load_keys(self) -> Transmitter:
        keys = [load_pem_public_key(p, self.algorithms) for p in self.public_keys]
        if self.jwks_file is not None:
            keys += load_jwks(self.jwks_file, self.algorithms)
        if not keys:
            raise ValueError("give public_keys (PEM files) or jwks_file")
        self._keys = tuple(keys)
        return self

    @property
    def keys(self) -> tuple[VerifyKey, ...]:
        return self._keys


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One verified event: who sent it, what happened, to whom.

    ``subject`` is the subject's identifier in its format (``iss_sub`` → ``sub``, ``email`` →
    the address, ``opaque`` → ``id``); ``session`` is the session id when the SET names one.
    """

    jti: str
    issuer: str
    type: str  # the short name, e.g. "credential-compromise"
    uri: str
    subject: str
    subject_format: str
    issued_at: float
    session: str | None = None
    event: Mapping[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        """What a revocation or alert records about the SET that caused it (no token, no keys)."""
        out: dict[str, Any] = {"jti": self.jti, "issuer": self.issuer, "event": self.type,
                               "subject_format": self.subject_format, "issued_at": self.issued_at}
        for member in ("reason_admin", "reason_user", "change_type", "credential_type", "event_timestamp"):
            if member in self.event:
                out[member] = self.event[member]
        if self.session is not None:
            out["session"] = self.session
        return out


class ReplayCache(Protocol):
    """Remembers ``(issuer, jti)`` pairs until a time; ``add`` is an atomic check-and-set."""

    def add(self, issuer: str, jti: str, until: float) -> bool:
        """Record the pair; ``False`` if it was already recorded (a replay)."""

    def discard(self, issuer: str, jti: str) -> None:
        """Forget the pair (the event was verified but could not be applied: let it be retried)."""


class MemoryReplayCache:
    """An in-process :class:`ReplayCache` (one worker); expired pairs are swept as it grows."""

    def __init__(self, limit: int = 100_000, clock: Any = time.time):
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._limit, self._clock = limit, clock

    def add(self, issuer: str, jti: str, until: float) -> bool:
        key, now = (issuer, jti), self._clock()
        with self._lock:
            if self._seen.get(key, 0.0) > now:
                return False
            if len(self._seen) >= self._limit:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
                if len(self._seen) >= self._limit:  # still full of live pairs: refuse rather than forget one
                    raise SetRejected("invalid_request", "too many recent SETs to check for replay; retry later",
                                      "replay_cache_full")
            self._seen[key] = until
            return True

    def discard(self, issuer: str, jti: str) -> None:
        with self._lock:
            self._seen.pop((issuer, jti), None)


class SetVerifier:
    """Verifies SETs from configured transmitters. Thread-safe; the replay cache is its only state.

    >>> verifier = SetVerifier([Transmitter(issuer="https://idp.example", audience="ttlpolicy",
    ...                                     jwks_file="idp-jwks.json")])          # doctest: +SKIP
    >>> event = verifier.verify(body)                                              # doctest: +SKIP
    >>> event.type, event.subject                                                  # doctest: +SKIP
    ('credential-compromise', 'alice')
    """

    def __init__(self, transmitters: tuple[Transmitter, ...] | list[Transmitter],
                 replay: ReplayCache | None = None, clock: Any = time.time):
        self._transmitters = {t.issuer: t for t in transmitters}
        if len(self._transmitters) != len(transmitters):
            raise ValueError("a transmitter issuer is configured twice")
        self.replay: ReplayCache = replay or MemoryReplayCache(clock=clock)
        self._clock = clock

    def verify(self, token: Any) -> SecurityEvent:
        """The event in ``token``, or raises :class:`SetRejected`."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii").strip()
            except UnicodeDecodeError:
                raise SetRejected("invalid_request", "the SET is not ASCII text", "malformed") from None
        if not isinstance(token, str) or not token or len(token) > MAX_SET_LENGTH or token.count(".") != 2:
            raise SetRejected("invalid_request", "expected one signed SET (a JWS in compact form)", "malformed")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise SetRejected("invalid_request", "the SET is not a well-formed JWT", "malformed") from None
        issuer = unverified.get("iss")
        transmitter = self._transmitters.get(issuer) if isinstance(issuer, str) else None
        if transmitter is None:
            raise SetRejected("invalid_issuer", "the SET is from no configured transmitter", "unknown_issuer")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in transmitter.algorithms:
            raise SetRejected("invalid_key", f"algorithm {_excerpt(str(alg), 16)} is not allowed for this "
                              "transmitter", "algorithm")
        if "crit" in header:
            raise SetRejected("invalid_request", "the SET uses critical header parameters", "malformed")
        typ = header.get("typ")
        if transmitter.require_typ and not (isinstance(typ, str)
                                            and typ.lower().removeprefix("application/") == "secevent+jwt"):
            raise SetRejected("invalid_request", "the JOSE header typ must be secevent+jwt", "token_type")
        claims = self._signed_claims(token, header, alg, transmitter)
        return self._event(claims, transmitter)

    def _signed_claims(self, token: str, header: Mapping[str, Any], alg: str, transmitter: Transmitter
                       ) -> dict[str, Any]:
        kid = header.get("kid")
        candidates = [k for k in transmitter.keys if alg in k.algorithms]
        if kid is not None and any(k.kid == kid for k in candidates):
            candidates = [k for k in candidates if k.kid == kid]
        if not candidates:
            raise SetRejected("invalid_key", "no configured key of this transmitter fits the SET", "unknown_key")
        options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                   "require": ["iss", "iat", "jti", "aud", "events"]}
        for candidate in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(token, candidate.key, algorithms=[alg],
                                                    options=options)  # type: ignore[arg-type]
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.MissingRequiredClaimError as exc:
                raise SetRejected("invalid_request", f"the SET lacks the claim {exc.claim!r}",
                                  "missing_claim") from None
            except jwt.PyJWTError:
                raise SetRejected("invalid_request", "the SET is not a well-formed JWT", "malformed") from None
        else:
            raise SetRejected("invalid_key", "bad signature", "signature")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if not any(isinstance(a, str) and a in transmitter.audience for a in audiences):
            raise SetRejected("invalid_audience", "the SET is not for this audience", "audience")
        return claims

    def _event(self, claims: Mapping[str, Any], transmitter: Transmitter) -> SecurityEvent:
        now = self._clock()
        iat, jti = claims.get("iat"), claims.get("jti")
        if isinstance(iat, bool) or not isinstance(iat, (int, float)):
            raise SetRejected("invalid_request", "claim 'iat' must be a NumericDate", "claim_type")
        if iat > now + transmitter.leeway:
            raise SetRejected("invalid_request", "the SET was issued in the future", "not_yet_valid")
        if iat < now - transmitter.max_age:
            raise SetRejected("invalid_request", f"the SET is older than {transmitter.max_age}s", "expired")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise SetRejected("invalid_request", "claim 'jti' must be a string of 1 to 256 characters", "claim_type")
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1:
            raise SetRejected("invalid_request", "claim 'events' must hold exactly one event", "claim_type")
        uri, payload = next(iter(events.items()))
        short = EVENT_TYPES.get(uri)
        if short is None:
            raise SetRejected("invalid_request", f"unknown event type {_excerpt(uri)}; known: "
                              f"{', '.join(EVENT_TYPES.values())}", "unknown_event")
        if not isinstance(payload, dict):
            raise SetRejected("invalid_request", f"event {short} must be an object", "claim_type")
        subject_format, subject, session = _subject(claims.get("sub_id", payload.get("subject")), transmitter)
        issuer = transmitter.issuer
        if not self.replay.add(issuer, jti, iat + transmitter.max_age + transmitter.leeway):
            raise SetRejected("invalid_request", "this SET (jti) was already received", "replay")
        return SecurityEvent(jti=jti, issuer=issuer, type=short, uri=uri, subject=subject,
                             subject_format=subject_format, issued_at=float(iat), session=session,
                             event=MappingProxyType(dict(payload)))


def _subject(value: Any, transmitter: Transmitter) -> tuple[str, str, str | None]:
    """``(format, identifier, session id or None)`` of a subject identifier (RFC 9493 / SSF)."""
    if not isinstance(value, dict):
        raise SetRejected("invalid_request", "the SET names no subject (sub_id or the event's subject)",
                          "missing_subject")
    session: str | None = None
    fmt = value.get("format")
    if fmt == "complex":  # {"format": "complex", "user": {...}, "session": {...}}
        inner = value.get("session")
        if isinstance(inner, dict) and isinstance(inner.get("id"), str):
            session = inner["id"]
        value = value.get("user") if isinstance(value.get("user"), dict) else {}
        fmt = value.get("format")
    member = _SUBJECT_MEMBERS.get(fmt) if isinstance(fmt, str) else None
    identifier = value.get(member) if member else None
    if member is None or not isinstance(identifier, str) or not identifier or len(identifier) > 1024:
        raise SetRejected("invalid_request", "the subject identifier has no usable format "
                          f"({', '.join(_SUBJECT_MEMBERS)}, or complex with a user)", "missing_subject")
    if fmt == "iss_sub" and value.get("iss") != transmitter.issuer:
        # Another issuer's subject namespace: "alice" there need not be our "alice".
        raise SetRejected("invalid_request", "an iss_sub subject must be in the transmitter's own namespace",
                          "foreign_subject")
    assert isinstance(fmt, str)
    return fmt, identifier, session
