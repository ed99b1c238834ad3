"""Mint tokens from a decision: lifetimes to ``iat``/``nbf``/``exp``, the session cap, signing.

The SDK is what mints tokens, so it enforces the session's absolute cap itself instead of
trusting that every caller passed ``user.auth_time`` to the decision (defence in depth):
``exp`` is the earliest of ``now + ttl``, the session end the caller knows, ``auth_time +
max_session`` and any absolute instant the decision carries.

>>> decision = policies.decide(context, now=now)                                  # doctest: +SKIP
>>> claims = apply_decision({"iss": ISS, "aud": "api", "sub": "alice"}, decision, now)  # doctest: +SKIP
>>> token = sign(claims, private_key, "ES256", kid="k1", typ=ACCESS_TOKEN_TYPE)    # doctest: +SKIP
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import jwt

from ..context import parse_timestamp
from ..decision import FIELDS
from .keys import ASYMMETRIC_ALGORITHMS, algorithms_for, load_private_key
from .verify import _epoch

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068
REFRESH_TOKEN_TYPE = "rt+jwt"  # no registered type exists; a distinct one stops access/refresh mix-ups
AUDIT_CLAIM = "ttl"


class IssuanceDenied(Exception):
    """The decision does not allow minting this token.

    ``step_up`` says the user must re-authenticate (``reasons`` lists why); ``end_session``
    says the session must end (a deny, or the absolute cap reached): revoke its family.
    """

    def __init__(self, description: str, *, step_up: bool = False, reasons: tuple[str, ...] = (),
                 end_session: bool = False):
        super().__init__(description)
        self.description, self.step_up, self.reasons, self.end_session = description, step_up, reasons, end_session


@dataclass(frozen=True, slots=True)
class DecisionView:
    """The parts of a decision the SDK uses, from a :class:`~ttlpolicy.Decision` or its JSON
    (``to_dict()``, the body ``POST /v1/decide`` returns), so HTTP callers use the SDK too.

    ``reuse_grace``, ``sender_constrained`` and ``expires_at`` are read when the decision
    carries them (``refresh.reuse_grace``, ``refresh.sender_constrained``, ``expires_at``).
    """

    allow: bool
    access_ttl: int
    refresh_ttl: int
    rotation: bool
    idle_timeout: int | None
    max_session: int | None
    step_up: bool
    step_up_reasons: tuple[str, ...]
    deny_reason: str | None
    policy: str
    digest: str
    decision_id: str | None = None
    reuse_grace: int | None = None
    sender_constrained: bool = False
    expires_at: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, decision: Any) -> DecisionView:
        if isinstance(decision, DecisionView):
            return decision
        data = decision if isinstance(decision, Mapping) else decision.to_dict()
        value = {name: _lookup(data, key) for name, key in _VIEW_KEYS.items()}
        expires = data.get("expires_at")
        return cls(
            allow=bool(data["allow"]), access_ttl=int(data["access_ttl"]), refresh_ttl=int(data["refresh_ttl"]),
            rotation=bool(value["rotation"]), idle_timeout=value["idle_timeout"], max_session=value["max_session"],
            step_up=bool(value["step_up"]), step_up_reasons=tuple(value["step_up_reasons"] or ()),
            deny_reason=value["deny_reason"], policy=str(value["policy"] or ""), digest=str(value["digest"] or ""),
            decision_id=data.get("decision_id"), reuse_grace=value["reuse_grace"],
            sender_constrained=bool(value["sender_constrained"]),
            expires_at=expires if isinstance(expires, Mapping) else {})

    def instant(self, name: str) -> int | None:
        """The decision's ``expires_at[name]`` (access, refresh or session) as epoch seconds."""
        value = self.expires_at.get(name)
        return None if value is None else int(parse_timestamp(value).timestamp())

    def refuse_unless_issuable(self, step_up_satisfied: bool = False) -> None:
        """Raise :class:`IssuanceDenied` when the decision denies, or asks for a step-up not yet done."""
        if not self.allow:
            raise IssuanceDenied(self.deny_reason or "denied by policy", end_session=True)
        if self.step_up and not step_up_satisfied:
            raise IssuanceDenied("step-up authentication required: " + "; ".join(self.step_up_reasons),
                                 step_up=True, reasons=self.step_up_reasons)


# Where each part of the view sits in a decision's JSON, from the decision's own field table (the
# view's names are the Decision's attribute names; policy and digest are policy_name and policy_digest).
_RENAMED = {"policy_name": "policy", "policy_digest": "digest"}
_VIEW_KEYS = {_RENAMED.get(spec.attribute, spec.attribute): spec.key for spec in FIELDS
              if spec.attribute and _RENAMED.get(spec.attribute, spec.attribute) in DecisionView.__dataclass_fields__
              and _RENAMED.get(spec.attribute, spec.attribute) not in ("expires_at",)}


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    """``data["refresh"]["rotation"]`` for ``refresh.rotation``; ``None`` where a part is missing
    (a decision JSON from an older service has no ``refresh.reuse_grace``)."""
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def session_end(claims: Mapping[str, Any], decision: Any, session_exp: int | float | datetime | None = None
                ) -> int | None:
    """The absolute end of the session (epoch seconds), or ``None`` if nothing caps it.

    The earliest of: ``session_exp`` given by the caller, a ``session_exp`` claim already in
    ``claims``, ``claims["auth_time"] + max_session`` and the decision's ``expires_at.session``.
    """
    view = DecisionView.of(decision)
    ends: list[int] = []
    if session_exp is not None:
        ends.append(int(_epoch(session_exp)))
    if _number(claims.get("session_exp")):
        ends.append(int(claims["session_exp"]))
    if view.max_session is not None and _number(claims.get("auth_time")):
        ends.append(int(claims["auth_time"]) + int(view.max_session))
    decided = view.instant("session")
    if decided is not None:
        ends.append(decided)
    return min(ends) if ends else None


def apply_decision(claims: Mapping[str, Any], decision: Any, now: datetime | float | None,
                   kind: str = "access", session_exp: int | float | datetime | None = None, *,
                   decision_id: str | None = None, step_up_satisfied: bool = False) -> dict[str, Any]:
    """A new claims set with ``iat``, ``nbf``, ``exp``, ``jti``, ``session_exp`` and the audit claim.

    ``exp = min(now + ttl, session end)`` (see :func:`session_end`); a refresh token's ttl is
    also held to the idle timeout. The audit claim ``ttl`` records the policy, its digest and
    the decision id. Raises :class:`IssuanceDenied` when the decision denies, asks for step-up
    (unless ``step_up_satisfied``: the user just did it), grants no such token, or the session
    has ended. ``claims`` is not modified.

    >>> out = apply_decision({"sub": "alice", "auth_time": 1_700_000_000}, decision,   # doctest: +SKIP
    ...                      now=1_700_000_000, kind="refresh")
    >>> out["exp"] - out["iat"], out["ttl"]["policy"]                                # doctest: +SKIP
    (604800, 'workforce')
    """
    view = DecisionView.of(decision)
    view.refuse_unless_issuable(step_up_satisfied)
    if kind == "access":
        ttl, own = view.access_ttl, view.instant("access")
    elif kind == "refresh":
        ttl, own = view.refresh_ttl, view.instant("refresh")
        if view.idle_timeout is not None:
            ttl = min(ttl, int(view.idle_timeout))
    else:
        raise ValueError(f"kind must be 'access' or 'refresh', not {kind!r}")
    if ttl <= 0:
        raise IssuanceDenied(f"the decision grants no {kind} token")
    iat = int(_epoch(now))
    end = session_end(claims, view, session_exp)
    exp = iat + ttl
    for bound in (end, own):
        if bound is not None:
            exp = min(exp, bound)
    if exp <= iat:
        raise IssuanceDenied("the session has reached its absolute limit; sign in again", end_session=True)
    out = dict(claims)
    out.update(iat=iat, nbf=iat, exp=exp, jti=secrets.token_urlsafe(18))
    if end is not None:
        out["session_exp"] = end
    audit = {"policy": view.policy, "digest": view.digest}
    if decision_id or view.decision_id:
        audit["decision_id"] = str(decision_id or view.decision_id)
    out[AUDIT_CLAIM] = audit
    return out


def sign(claims: Mapping[str, Any], key: Any, alg: str, kid: str | None = None, *, typ: str | None = None,
         headers: Mapping[str, Any] | None = None) -> str:
    """Sign ``claims`` with PyJWT. Asymmetric algorithms only, and only one that fits ``key``.

    ``key`` is a private key object or PEM bytes. ``typ`` sets the JOSE type
    (:data:`ACCESS_TOKEN_TYPE`, :data:`REFRESH_TOKEN_TYPE`). A claims set without ``exp`` is
    refused: ttlpolicy never mints a token that lives forever.

    >>> sign({"sub": "alice", "exp": 1_900_000_000}, private_key, "ES256", kid="k1")  # doctest: +SKIP
    'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0...'
    """
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"refusing to sign with {alg!r}: use one of {', '.join(ASYMMETRIC_ALGORITHMS)}")
    if isinstance(key, (bytes, str)):
        key = load_private_key(key.encode() if isinstance(key, str) else key)
    if not hasattr(key, "sign") or alg not in algorithms_for(key):
        raise ValueError(f"{alg} does not fit a {type(key).__name__}; pass a matching private key")
    if not _number(claims.get("exp")):
        raise ValueError("claims need a numeric exp; use apply_decision() first")
    header: dict[str, Any] = dict(headers or {})
    if kid is not None:
        header["kid"] = kid
    if typ is not None:
        header["typ"] = typ
    return jwt.encode(dict(claims), key, algorithm=alg, headers=header or None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
