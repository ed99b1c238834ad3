"""Caller credentials: API keys (stored as SHA-256 hashes) and JWT bearer tokens.

JWTs are checked by the token SDK's verifier, the same code that checks subject tokens.

Errors follow RFC 6750: 401 with ``WWW-Authenticate: Bearer realm="ttlpolicy"`` (plus
``error="invalid_token"`` when a credential was sent but is not good), 403 with
``error="insufficient_scope"`` for a caller without the needed scope.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from starlette.responses import Response

from ..tokens.keys import KeyFileError, VerifyKey, load_jwks, load_pem_public_key
from ..tokens.verify import IssuerConfig, TokenInvalid, TokenVerifier
from .config import AuthSettings, ConfigError, JwtSettings
from .problems import problem

REALM = "ttlpolicy"
_MAX_CREDENTIAL = 8192
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')  # RFC 6750 error_description characters


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: ``kind`` (api_key, jwt, anonymous), an ``id`` for the log, and scopes."""

    kind: str
    id: str
    scopes: frozenset[str]

    def log_entry(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}


ANONYMOUS = Caller("anonymous", "anonymous", frozenset({"decide", "admin"}))


class AuthError(Exception):
    """A refused request; :meth:`response` is the RFC 6750 + RFC 9457 answer."""

    def __init__(self, status: int, description: str, error: str | None = None, scope: str | None = None):
        super().__init__(description)
        self.status, self.description, self.error, self.scope = status, description, error, scope

    def challenge(self) -> str:
        parts = [f'Bearer realm="{REALM}"']
        if self.error:
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{_UNSAFE.sub("?", self.description)}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return ", ".join(parts)

    def response(self) -> Response:
        code = "unauthorized" if self.status == 401 else "insufficient-scope"
        return problem(code, self.description, headers={"WWW-Authenticate": self.challenge()})


def hash_key(key: str) -> str:
    """The form an API key is stored in: ``sha256:<hex>``.

    >>> hash_key("s3cret").startswith("sha256:")
    True
    """
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def load_verify_keys(settings: JwtSettings) -> list[VerifyKey]:
    """Public keys from PEM files (keys or certificates) and a JWKS file; raises :class:`ConfigError`.

    The token SDK's loader, so callers' and subject tokens' keys follow one set of rules: the
    key's type decides its algorithms, shared secrets and private material are refused.
    """
    try:
        keys = [load_pem_public_key(path, settings.algorithms) for path in settings.public_keys]
        if settings.jwks_file is not None:
            keys += load_jwks(settings.jwks_file, settings.algorithms)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    if not keys:
        raise ConfigError("auth.jwt: no configured key can verify any of the allowed algorithms "
                          f"({', '.join(settings.algorithms)})")
    return keys


class JwtVerifier:
    """Caller JWTs: the token SDK's :class:`~ttlpolicy.tokens.TokenVerifier` (the one set of JWT
    rules subject tokens follow too) for one issuer, plus an LRU cache of verified tokens until
    ``exp``. A refused token is a 401 ``invalid_token`` whose description is the verifier's."""

    def __init__(self, settings: JwtSettings):
        self.settings = settings
        self.keys = load_verify_keys(settings)
        try:
            issuer = IssuerConfig(issuer=settings.issuer, audience=(settings.audience,), keys=tuple(self.keys),
                                  algorithms=settings.algorithms, leeway=settings.leeway,
                                  required_claims=("exp", "iss", "aud"))
        except ValueError as exc:
            raise ConfigError(f"auth.jwt: {exc}") from None
        self._verifier = TokenVerifier([issuer], max_length=_MAX_CREDENTIAL)
        self._cache: OrderedDict[bytes, tuple[Caller, float]] = OrderedDict()

    def verify(self, token: str) -> Caller:
        """The caller a token stands for; raises :class:`AuthError` (401 invalid_token)."""
        cache_key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(cache_key)
        if hit is not None:
            if time.time() < hit[1] + self.settings.leeway:
                self._cache.move_to_end(cache_key)
                return hit[0]
            del self._cache[cache_key]
        try:
            claims = self._verifier.verify(token).claims
        except TokenInvalid as exc:  # its description never holds the token, a key or a claim's value
            raise _invalid(exc.description) from None
        caller = Caller("jwt", _identity(claims), _scopes(claims))
        if self.settings.cache_size:
            self._cache[cache_key] = (caller, float(claims["exp"]))
            if len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return caller


def _invalid(description: str) -> AuthError:
    return AuthError(401, description, "invalid_token")


def _identity(claims: Mapping[str, Any]) -> str:
    for claim in ("sub", "client_id", "azp"):
        if claims.get(claim) not in (None, ""):
            return str(claims[claim])[:256]
    return "unknown"


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str))
    return frozenset()


class Authenticator:
    """Turns request headers into a :class:`Caller` or an :class:`AuthError`."""

    def __init__(self, settings: AuthSettings):
        self.enabled = settings.enabled
        # SHA-256 of the key -> (that digest, its caller), built once: a request hashes the key it
        # presents once and finds its entry with one dict lookup, not a comparison per stored key.
        self._keys: dict[bytes, tuple[bytes, Caller]] = {}
        for entry in settings.api_keys:
            digest = bytes.fromhex(entry.hash.removeprefix("sha256:"))
            self._keys.setdefault(digest, (digest, Caller("api_key", entry.name, frozenset(entry.scopes))))
        self._jwt = JwtVerifier(settings.jwt) if settings.jwt is not None else None

    def authenticate(self, authorization: str | None, api_key: str | None) -> Caller:
        """The caller behind ``Authorization`` / ``X-API-Key``; raises :class:`AuthError`."""
        if not self.enabled:
            return ANONYMOUS
        if api_key is not None:
            return self._api_key(api_key)
        if authorization is None:
            raise AuthError(401, "credentials required")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(401, "credentials required (Bearer token or X-API-Key)")
        credential = credential.strip()
        if not credential or len(credential) > _MAX_CREDENTIAL or " " in credential:
            raise _invalid("malformed bearer token")
        if self._jwt is not None and credential.count(".") == 2:
            return self._jwt.verify(credential)
        return self._api_key(credential)

    def _api_key(self, key: str) -> Caller:
        if not self._keys or not key or len(key) > _MAX_CREDENTIAL:
            raise _invalid("unknown API key")
        presented = hashlib.sha256(key.encode()).digest()
        # The lookup is keyed by the digest of a secret, not the secret: its timing can reveal at
        # most something about a SHA-256 output, which says nothing about a key. The final check is
        # a constant-time comparison of the two digests, as before.
        hit = self._keys.get(presented)
        if hit is None or not hmac.compare_digest(hit[0], presented):
            raise _invalid("unknown API key")
        return hit[1]


def require_scope(caller: Caller, needed: Iterable[str]) -> None:
    """Raise a 403 :class:`AuthError` unless ``caller`` holds one of ``needed``."""
    needed = tuple(needed)
    if not caller.scopes.intersection(needed):
        raise AuthError(403, f"requires scope {' or '.join(needed)}", "insufficient_scope", " ".join(needed))
