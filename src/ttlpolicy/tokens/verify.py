"""Verify a presented JWT and say precisely why it is not good, in RFC 6750 terms.

A :class:`TokenVerifier` is built once from configuration (issuers, their audiences, their
public keys from PEM or JWKS files, an algorithm allow-list; nothing is fetched over the
network) and is then immutable and safe to share between threads. ``verify`` checks, in this
order: the token's shape, its issuer, its algorithm against the allow-list and the key's type,
its signature, ``iss`` and ``aud``, the required claims, ``exp``/``nbf``/``iat`` against ``now``
with a small leeway, the types of the claims ttlpolicy reads, and the token family's revocation.

>>> verifier = TokenVerifier.from_config({"issuers": [{          # doctest: +SKIP
...     "issuer": "https://id.example.com", "audience": "api",
...     "jwks_file": "jwks.json", "algorithms": ["ES256"]}]})
>>> verified = verifier.verify(token, now=datetime.now(timezone.utc))   # doctest: +SKIP
>>> policies.decide({"token": token_context(verified.claims), ...})     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence, TypeGuard

import jwt

from ..context import MAX_EPOCH, MIN_EPOCH
from .keys import VerifyKey, check_algorithms, load_jwks, load_pem_public_key

if TYPE_CHECKING:  # jwt.types.Options (a TypedDict) only exists in newer PyJWT releases
    from jwt.types import Options as JwtOptions

MAX_TOKEN_LENGTH = 16_384
MAX_LEEWAY = 300
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_REQUIRED = ("exp", "iat", "iss", "aud")
_MAX_STRING = 1024  # the context's limits: a claim that passes here also passes context validation
_MAX_LIST = 256
# RFC 6750 §3: error_description is limited to these characters.
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


class TokenInvalid(Exception):
    """A presented token that must be refused.

    ``error`` is the RFC 6750 error code (``invalid_token``; ``invalid_dpop_proof`` for a bad
    DPoP proof), ``reason`` a stable slug for programs (``expired``, ``not_yet_valid``,
    ``signature``, ``unknown_issuer``, ``audience``, ``algorithm``, ``malformed``,
    ``missing_claim``, ``claim_type``, ``token_type``, ``unknown_key``, ``revoked``, ``reuse``,
    ``sender``), ``description`` a sentence for people. Neither ever contains the token or a key.

    >>> err = TokenInvalid("expired", "token expired")
    >>> err.www_authenticate()
    'Bearer error="invalid_token", error_description="token expired"'
    """

    def __init__(self, reason: str, description: str, error: str = "invalid_token"):
        super().__init__(description)
        self.reason, self.description, self.error = reason, description, error

    def www_authenticate(self, scheme: str = "Bearer", realm: str | None = None) -> str:
        """The ``WWW-Authenticate`` challenge for a 401 (RFC 6750 §3)."""
        parts = [f'realm="{_UNSAFE.sub("?", realm)}"'] if realm else []
        parts += [f'error="{self.error}"', f'error_description="{_UNSAFE.sub("?", self.description)}"']
        return f"{scheme} " + ", ".join(parts)

    def to_dict(self) -> dict[str, str]:
        """The OAuth error object (RFC 6749 §5.2 / RFC 6750 §3) plus the ``reason`` slug."""
        return {"error": self.error, "error_description": self.description, "reason": self.reason}


class Revocations(Protocol):
    """Tells whether a token family (a session, the ``sid`` claim) has been revoked.

    An object that also has ``is_token_revoked(claims) -> bool`` (as
    :class:`ttlpolicy.state.runtime.StateRuntime` does) is asked about the whole token instead: its id,
    family, subject, client, tenant and issue time.
    """

    def is_revoked(self, family: str) -> bool: ...


def _check_revoked(revocations: Revocations, claims: Mapping[str, Any]) -> None:
    whole_token = getattr(revocations, "is_token_revoked", None)
    if whole_token is not None:
        if whole_token(claims):
            raise TokenInvalid("revoked", "token revoked")
        return
    family = claims.get("sid")
    if isinstance(family, str) and revocations.is_revoked(family):
        raise TokenInvalid("revoked", "token family revoked")


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted issuer: its ``iss``, the audiences accepted, its keys and allowed algorithms.

    ``token_types`` restricts the JOSE ``typ`` header (e.g. ``("at+jwt",)`` for RFC 9068
    access tokens), so a refresh or ID token cannot be replayed where an access token is
    expected. ``leeway`` (seconds, at most 300) absorbs clock skew on ``exp``/``nbf``/``iat``.
    """

    issuer: str
    audience: tuple[str, ...]
    keys: tuple[VerifyKey, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = 30
    required_claims: tuple[str, ...] = DEFAULT_REQUIRED
    token_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if isinstance(self.audience, str):  # a single audience is the common case; accept it
            object.__setattr__(self, "audience", (self.audience,))
        if not self.audience or not all(isinstance(a, str) and a for a in self.audience):
            raise ValueError(f"issuer {self.issuer}: audience must be one or more non-empty strings")
        object.__setattr__(self, "algorithms", check_algorithms(self.algorithms))
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"issuer {self.issuer}: leeway must be between 0 and {MAX_LEEWAY} seconds")
        required = tuple(dict.fromkeys(("exp", "iss", "aud", *self.required_claims)))
        object.__setattr__(self, "required_claims", required)
        if self.token_types is not None:
            object.__setattr__(self, "token_types", tuple(_normal_type(t) for t in self.token_types))
        if not any(k.algorithms & set(self.algorithms) for k in self.keys):
            raise ValueError(f"issuer {self.issuer}: no key can verify any of {', '.join(self.algorithms)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> IssuerConfig:
        """Build from configuration: ``issuer``, ``audience`` (string or list), ``public_keys``
        (PEM files), ``jwks_file`` and/or ``jwks`` (inline document), ``algorithms``,
        ``leeway``, ``required_claims``, ``token_types``. Relative paths resolve against
        ``base_dir`` (the config file's directory). Raises ``ValueError`` (incl.
        :class:`~.keys.KeyFileError`) naming what is wrong.
        """
        known = {"issuer", "audience", "public_keys", "jwks_file", "jwks", "algorithms", "leeway",
                 "required_claims", "token_types"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown issuer settings: {', '.join(unknown)}")
        base = Path(base_dir) if base_dir is not None else None
        algorithms = check_algorithms(data.get("algorithms", DEFAULT_ALGORITHMS))

        def resolve(path: str | Path) -> Path:
            p = Path(path)
            return base / p if base is not None and not p.is_absolute() else p

        keys: list[VerifyKey] = [load_pem_public_key(resolve(p), algorithms) for p in data.get("public_keys", ())]
        if data.get("jwks_file"):
            keys += load_jwks(resolve(data["jwks_file"]), algorithms)
        if data.get("jwks"):
            keys += load_jwks(data["jwks"], algorithms)
        audience = data.get("audience", ())
        token_types = data.get("token_types")
        return cls(issuer=str(data.get("issuer", "")),
                   audience=(audience,) if isinstance(audience, str) else tuple(audience),
                   keys=tuple(keys), algorithms=algorithms, leeway=int(data.get("leeway", 30)),
                   required_claims=tuple(data.get("required_claims", DEFAULT_REQUIRED)),
                   token_types=tuple(token_types) if token_types is not None else None)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature, issuer, audience and lifetime were checked.

    ``claims`` is read-only; ``binding`` is ``mtls``, ``dpop`` or ``none`` (from ``cnf``).

    >>> verified.binding, verified.subject, verified.family      # doctest: +SKIP
    ('dpop', 'alice', 'f-3b9...')
    """

    claims: Mapping[str, Any]
    issuer: str
    algorithm: str
    kid: str | None
    token_type: str | None
    binding: str = "none"
    header: Mapping[str, Any] = field(default_factory=dict)
    # The instant (epoch seconds) from which the token is refused as expired: exp, or session_exp
    # when earlier, plus the issuer's leeway. Until then it stays valid (a later instant can only
    # fail on these two; nbf and iat, passed once, stay passed).
    valid_until: float = math.inf

    @property
    def subject(self) -> str | None:
        return self.claims.get("sub")

    @property
    def jti(self) -> str | None:
        return self.claims.get("jti")

    @property
    def family(self) -> str | None:
        """The token family / session id (the ``sid`` claim) that revocation applies to."""
        return self.claims.get("sid")

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims["exp"], timezone.utc)

    def context(self) -> dict[str, Any]:
        """The ``token`` namespace of a decision context: ``token_context(self.claims)``."""
        return token_context(self.claims)


class TokenVerifier:
    """Verifies JWTs from configured issuers. Immutable after construction; thread-safe.

    >>> verifier = TokenVerifier([IssuerConfig("https://id.example", "api", (verify_key(pub),))])  # doctest: +SKIP
    >>> verifier.verify(token, now=1_700_000_000).claims["sub"]                                    # doctest: +SKIP
    'alice'
    """

    def __init__(self, issuers: Iterable[IssuerConfig], *, revocations: Revocations | None = None,
                 max_length: int = MAX_TOKEN_LENGTH):
        self._issuers: dict[str, IssuerConfig] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(f"issuer {config.issuer} is configured twice")
            self._issuers[config.issuer] = config
        if not self._issuers:
            raise ValueError("configure at least one issuer")
        self._revocations = revocations
        self._max_length = max_length

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                    base_dir: str | Path | None = None, revocations: Revocations | None = None) -> TokenVerifier:
        """From ``{"issuers": [{...}, ...]}`` (or the bare list); see :meth:`IssuerConfig.from_mapping`."""
        entries = config.get("issuers", ()) if isinstance(config, Mapping) else config
        return cls([IssuerConfig.from_mapping(e, base_dir) for e in entries], revocations=revocations)

    @property
    def issuers(self) -> list[str]:
        return sorted(self._issuers)

    def verify(self, token: str, now: datetime | float | None = None, *,
               token_type: str | None = None) -> VerifiedToken:
        """Verify ``token`` at ``now`` (aware datetime or epoch seconds; default: the clock).

        ``token_type`` additionally requires that JOSE ``typ`` (e.g. ``"at+jwt"``). Raises
        :class:`TokenInvalid` saying why the token is refused.
        """
        instant = _epoch(now)
        if not isinstance(token, str) or not token or len(token) > self._max_length or token.count(".") != 2:
            raise TokenInvalid("malformed", "malformed token (expected a signed JWT)")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenInvalid("malformed", "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenInvalid("malformed", "malformed token header (no alg)")
        if "crit" in header:  # RFC 7515 §4.1.11: we understand no extension, so none may be critical
            raise TokenInvalid("malformed", "token uses unsupported critical header parameters")
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise TokenInvalid("missing_claim", "token has no iss claim")
        config = self._issuers.get(iss)
        if config is None:
            # The value is not echoed: it is attacker-controlled and may be long or misleading.
            raise TokenInvalid("unknown_issuer", "token is from an unknown issuer")
        if alg not in config.algorithms:  # "none" and every HMAC algorithm end here
            raise TokenInvalid("algorithm", f"token algorithm {_safe(alg, 16)} is not allowed")
        typ = header.get("typ")
        typ = _normal_type(typ) if isinstance(typ, str) else None
        wanted = (_normal_type(token_type),) if token_type else config.token_types
        if wanted is not None and typ not in wanted:
            raise TokenInvalid("token_type", f"wrong token type (expected {' or '.join(wanted)})")
        claims = self._check_signature(token, header, alg, config)
        _check_times(claims, instant, config.leeway)
        _check_claim_types(claims)
        self.check_revocation(claims)
        kid = header.get("kid")
        return VerifiedToken(claims=MappingProxyType(claims), issuer=iss, algorithm=alg,
                             kid=kid if isinstance(kid, str) else None, token_type=typ,
                             binding=binding_of(claims), header=MappingProxyType(dict(header)),
                             valid_until=min(claims["exp"], claims.get("session_exp", math.inf)) + config.leeway)

    def check_revocation(self, claims: Mapping[str, Any]) -> None:
        """Raise :class:`TokenInvalid` (``revoked``) if the configured revocations hold the token."""
        if self._revocations is not None:
            _check_revoked(self._revocations, claims)

    def _check_signature(self, token: str, header: Mapping[str, Any], alg: str,
                         config: IssuerConfig) -> dict[str, Any]:
        # The key is chosen by our configuration and its type; the header's alg must fit it.
        candidates = [k for k in config.keys if alg in k.algorithms]
        kid = header.get("kid")
        if kid is not None and any(k.kid == kid for k in candidates):
            candidates = [k for k in candidates if k.kid == kid]
        elif kid is not None:
            candidates = [k for k in candidates if k.kid is None]  # PEM keys have no kid
        if not candidates:
            raise TokenInvalid("unknown_key", "no trusted key for this token (unknown kid or algorithm)")
        options: JwtOptions = {"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                             "require": list(config.required_claims)}
        for candidate in candidates:
            try:
                return jwt.decode(token, candidate.key, algorithms=[alg], audience=list(config.audience),
                                  issuer=config.issuer, options=options)
            except jwt.InvalidSignatureError:
                continue  # another configured key (rotation) may have signed it
            except jwt.MissingRequiredClaimError as exc:
                raise TokenInvalid("missing_claim", f"token lacks the required claim {exc.claim!r}") from None
            except jwt.InvalidAudienceError:
                raise TokenInvalid("audience", "token is not for this audience") from None
            except jwt.InvalidIssuerError:
                raise TokenInvalid("unknown_issuer", "token is from an unknown issuer") from None
            except jwt.DecodeError:
                raise TokenInvalid("malformed", "malformed token") from None
            except jwt.PyJWTError:
                raise TokenInvalid("claim_type", "token has an invalid registered claim") from None
        raise TokenInvalid("signature", "bad signature")


class VerifiedTokenCache:
    """Tokens verified once, then remembered until they expire (for a service that sees the same
    subject token on many requests: a signature check costs about half a millisecond).

    Keyed by the SHA-256 of the token (and the token type asked for), so the cache holds no
    token; bounded to ``max_entries``, the least recently used going first. Only tokens that
    verified are kept: a refused token is checked in full each time. A remembered token is
    served while ``verified_at <= now < valid_until`` (a clock that moved back verifies again)
    and the verifier's own revocations, if any, are asked on every call. Thread-safe.

    >>> cache = VerifiedTokenCache(verifier)                             # doctest: +SKIP
    >>> cache.verify(token, now).claims["sub"]                           # doctest: +SKIP
    'alice'
    """

    def __init__(self, verifier: TokenVerifier, max_entries: int = 4096):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.verifier = verifier
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[VerifiedToken, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str, now: datetime | float | None = None, *,
               token_type: str | None = None) -> VerifiedToken:
        """What :meth:`TokenVerifier.verify` answers, from the cache while the token is valid."""
        instant = _epoch(now)
        if not isinstance(token, str):
            raise TokenInvalid("malformed", "malformed token (expected a signed JWT)")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        key = digest + (token_type or "").encode()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[1] <= instant < entry[0].valid_until:
                    self._entries.move_to_end(key)
                else:
                    del self._entries[key]
                    entry = None
        if entry is not None:
            self.verifier.check_revocation(entry[0].claims)
            return entry[0]
        verified = self.verifier.verify(token, instant, token_type=token_type)
        with self._lock:
            self._entries[key] = (verified, instant)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return verified


def binding_of(claims: Mapping[str, Any]) -> str:
    """``mtls`` for ``cnf.x5t#S256`` (RFC 8705), ``dpop`` for ``cnf.jkt`` (RFC 9449), else ``none``."""
    cnf = claims.get("cnf")
    if isinstance(cnf, Mapping):
        if isinstance(cnf.get("x5t#S256"), str):
            return "mtls"
        if isinstance(cnf.get("jkt"), str):
            return "dpop"
    return "none"


def token_context(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``token`` namespace of a decision context from a *verified* token's claims.

    Timestamps stay epoch seconds (the context accepts them); ``scope`` becomes a list;
    ``client_id`` falls back to ``azp`` (ID tokens); ``binding`` comes from ``cnf``.
    Claims that are absent are left out, so policy defaults apply.

    >>> token_context({"sub": "alice", "scope": "read write", "amr": ["pwd", "otp"],
    ...                "cnf": {"jkt": "0ZcOCORZNYy"}, "exp": 1700000600, "iss": "x"})
    {'sub': 'alice', 'scope': ['read', 'write'], 'amr': ['pwd', 'otp'], 'exp': 1700000600, 'binding': 'dpop'}
    """
    out: dict[str, Any] = {}
    if isinstance(claims.get("sub"), str):
        out["sub"] = claims["sub"]
    client = claims.get("client_id", claims.get("azp"))
    if isinstance(client, str):
        out["client_id"] = client
    scopes = _scopes(claims)
    if scopes is not None:
        out["scope"] = scopes
    if isinstance(claims.get("amr"), list):
        out["amr"] = [m for m in claims["amr"] if isinstance(m, str)]
    if isinstance(claims.get("acr"), str):
        out["acr"] = claims["acr"]
    for name in ("auth_time", "iat", "exp", "session_exp"):
        value = claims.get(name)
        if _is_number(value):
            out[name] = int(value)
    out["binding"] = binding_of(claims)
    return out


def _scopes(claims: Mapping[str, Any]) -> list[str] | None:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return None


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    # A NumericDate is a JSON number (never a string, never 1e400, which JSON parsers read as
    # infinity) inside the range every timestamp of a context must keep, so that a verified
    # claim can always become a context value and an expiry instant.
    for name in ("exp", "nbf", "iat", "auth_time", "session_exp"):
        if name in claims and not (_is_number(claims[name]) and MIN_EPOCH <= claims[name] < MAX_EPOCH):
            raise TokenInvalid("claim_type", f"claim {name!r} must be a NumericDate (seconds since the epoch, "
                                             "before the year 9000)")
    # RFC 7519 §4.1.4: not accepted on or after exp.
    if now >= claims["exp"] + leeway:
        raise TokenInvalid("expired", "token expired")
    if "session_exp" in claims and now >= claims["session_exp"] + leeway:
        raise TokenInvalid("expired", "session expired; sign in again")
    if "nbf" in claims and now + leeway < claims["nbf"]:
        raise TokenInvalid("not_yet_valid", "token not yet valid")
    if "iat" in claims and now + leeway < claims["iat"]:
        raise TokenInvalid("not_yet_valid", "token issued in the future")


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    """The claims ttlpolicy maps into the context must have their registered types."""
    for name in ("sub", "client_id", "azp", "acr", "sid", "jti"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > _MAX_STRING):
            raise TokenInvalid("claim_type", f"claim {name!r} must be a string")
    scope = claims.get("scope", claims.get("scp"))
    if scope is not None and not (isinstance(scope, str) and len(scope) <= 64 * _MAX_STRING
                                  or _string_list(scope)):
        raise TokenInvalid("claim_type", "claim 'scope' must be a string or a list of strings")
    if isinstance(scope, str) and len(scope.split()) > _MAX_LIST:
        raise TokenInvalid("claim_type", "claim 'scope' has too many scopes")
    if "amr" in claims and not _string_list(claims["amr"]):
        raise TokenInvalid("claim_type", "claim 'amr' must be a list of strings")
    cnf = claims.get("cnf")
    if cnf is not None:
        if not isinstance(cnf, Mapping):
            raise TokenInvalid("claim_type", "claim 'cnf' must be an object")
        methods = [m for m in ("x5t#S256", "jkt") if m in cnf]
        if len(methods) > 1 or any(not isinstance(cnf[m], str) for m in methods):
            raise TokenInvalid("claim_type", "claim 'cnf' must carry one x5t#S256 or jkt string")


def _string_list(value: Any) -> bool:
    return (isinstance(value, list) and len(value) <= _MAX_LIST
            and all(isinstance(v, str) and len(v) <= _MAX_STRING for v in value))


def _is_number(value: Any) -> TypeGuard[float]:  # float includes int for the type checker
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _normal_type(value: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted and media types compare case-insensitively.
    value = value.strip().lower()
    return value.removeprefix("application/")


def _safe(value: str, limit: int) -> str:
    return repr(_UNSAFE.sub("?", value[:limit]))


def _epoch(now: datetime | float | None) -> float:
    if now is None:
        return datetime.now(timezone.utc).timestamp()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        return now.timestamp()
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError("now must be an aware datetime or epoch seconds")
    return float(now)

