"""Sender-constrained tokens: the ``cnf`` claim when minting, the proof when presenting.

A bound token is useless to a thief without the client's key, which is why the bundled policy
lets bound tokens live longer. That only holds if every presentation proves possession:
``check_sender`` compares the presented proof with ``cnf`` (constant time), and
``verify_dpop_proof`` checks an RFC 9449 DPoP proof and returns its key thumbprint.

>>> cnf_claim(dpop_jkt="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
{'jkt': '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I'}
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import jwt

from .keys import ASYMMETRIC_ALGORITHMS, algorithms_for, b64url, jwk_thumbprint
from .verify import TokenInvalid, VerifiedToken, _epoch, binding_of


def cnf_claim(*, dpop_jkt: str | None = None, certificate_thumbprint: str | None = None) -> dict[str, str] | None:
    """The ``cnf`` claim binding a token to a DPoP key or an mTLS client certificate (or ``None``)."""
    if dpop_jkt and certificate_thumbprint:
        raise ValueError("bind a token to one key: a DPoP key or a client certificate, not both")
    if dpop_jkt:
        return {"jkt": dpop_jkt}
    if certificate_thumbprint:
        return {"x5t#S256": certificate_thumbprint}
    return None


def check_sender(claims_or_token: VerifiedToken | Mapping[str, Any], *, dpop_jkt: str | None = None,
                 certificate_thumbprint: str | None = None, required: bool = False) -> str:
    """Check the presenter holds the key the token is bound to; return the binding.

    A bound token presented without the matching proof is refused (RFC 9449 §7.1, RFC 8705
    §3); ``required=True`` also refuses an unbound (bearer) token.

    >>> check_sender({"cnf": {"jkt": "abc"}}, dpop_jkt="abc")
    'dpop'
    """
    claims = claims_or_token.claims if isinstance(claims_or_token, VerifiedToken) else claims_or_token
    binding = binding_of(claims)
    if binding == "dpop":
        expected, presented, what = claims["cnf"]["jkt"], dpop_jkt, "DPoP key"
    elif binding == "mtls":
        expected, presented, what = claims["cnf"]["x5t#S256"], certificate_thumbprint, "client certificate"
    else:
        if required:
            raise TokenInvalid("sender", "token must be sender-constrained (DPoP or mTLS)")
        return binding
    if presented is None:
        raise TokenInvalid("sender", f"token is bound to a {what}; present proof of possession")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise TokenInvalid("sender", f"{what} does not match the token's binding")
    return binding


def verify_dpop_proof(proof: str, *, method: str, url: str, now: Any = None, access_token: str | None = None,
                      max_age: int = 300, leeway: int = 30, algorithms: Iterable[str] = ASYMMETRIC_ALGORITHMS,
                      seen: Callable[[str, int], bool] | None = None) -> str:
    """Verify an RFC 9449 DPoP proof for ``method url``; return the JWK thumbprint (``jkt``).

    ``access_token`` (at a resource server) also requires the matching ``ath``. ``seen(jti,
    expires)`` is the replay check: it records the proof's ``jti`` and returns ``True`` if it
    was used before. Raises :class:`TokenInvalid` with ``error="invalid_dpop_proof"``.

    >>> jkt = verify_dpop_proof(proof, method="POST", url="https://as.example/token")  # doctest: +SKIP
    """
    def bad(description: str) -> TokenInvalid:
        return TokenInvalid("dpop", description, "invalid_dpop_proof")

    if not isinstance(proof, str) or len(proof) > 8192 or proof.count(".") != 2:
        raise bad("malformed DPoP proof")
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise bad("malformed DPoP proof") from None
    alg, jwk = header.get("alg"), header.get("jwk")
    if header.get("typ") != "dpop+jwt":
        raise bad("DPoP proof must have typ dpop+jwt")
    if alg not in set(algorithms) or not isinstance(jwk, dict):
        raise bad("DPoP proof needs an allowed asymmetric alg and a jwk header")
    if any(private in jwk for private in ("d", "p", "q", "k")):  # a proof must never carry a secret
        raise bad("DPoP proof jwk must be a public key")
    try:
        key = jwt.PyJWK(jwk).key
        thumbprint = jwk_thumbprint(jwk)
    except (jwt.PyJWTError, ValueError):
        raise bad("DPoP proof jwk is not a usable public key") from None
    if alg not in algorithms_for(key):
        raise bad("DPoP proof alg does not fit its key")
    try:
        claims = jwt.decode(proof, key, algorithms=[alg],
                            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                     "verify_aud": False, "require": ["jti", "htm", "htu", "iat"]})
    except jwt.InvalidSignatureError:
        raise bad("DPoP proof has a bad signature") from None
    except jwt.PyJWTError:
        raise bad("DPoP proof lacks jti, htm, htu or iat") from None
    instant = _epoch(now)
    iat = claims["iat"]
    if isinstance(iat, bool) or not isinstance(iat, (int, float)):
        raise bad("DPoP proof iat must be a number")
    if iat > instant + leeway or iat < instant - max_age - leeway:
        raise bad("DPoP proof is too old or from the future")
    if claims["htm"] != method.upper():
        raise bad("DPoP proof is for another HTTP method")
    if not isinstance(claims["htu"], str) or _htu(claims["htu"]) != _htu(url):
        raise bad("DPoP proof is for another URL")
    if access_token is not None:
        expected = b64url(hashlib.sha256(access_token.encode("ascii")).digest())
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
            raise bad("DPoP proof is not bound to this access token (ath)")
    if not isinstance(claims["jti"], str) or not claims["jti"] or len(claims["jti"]) > 256:
        raise bad("DPoP proof jti must be a short string")
    if seen is not None and seen(f"{thumbprint}:{claims['jti']}", int(iat) + max_age + leeway):
        raise bad("DPoP proof was already used")
    return thumbprint


def _htu(url: str) -> str:
    # RFC 9449 §4.3: compare without query and fragment; scheme and host are case-insensitive.
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))
