"""The issuer SDK: verify tokens, feed their claims to decisions, mint tokens from decisions.

The token lifecycle in four steps — verify → decide → apply → sign::

    from ttlpolicy import load_policies
    from ttlpolicy.tokens import TokenVerifier, apply_decision, sign, token_context

    policies = load_policies("policies/")
    verifier = TokenVerifier.from_config({"issuers": [{
        "issuer": "https://id.example.com", "audience": "api",
        "jwks_file": "jwks.json", "algorithms": ["ES256"]}]})

    verified = verifier.verify(subject_token, now)            # raises TokenInvalid (RFC 6750)
    decision = policies.decide({"token": token_context(verified.claims), ...}, now=now)
    claims = apply_decision({"iss": ISS, "aud": "api", "sub": verified.subject}, decision, now)
    access_token = sign(claims, private_key, "ES256", kid="k1", typ=ACCESS_TOKEN_TYPE)

Refresh tokens go through :class:`RefreshChain` (rotation, reuse detection, sessions that
only tighten) over a :class:`RefreshStore`. See ``docs/tokens.md``.
"""

from __future__ import annotations

from .issue import (
    ACCESS_TOKEN_TYPE,
    AUDIT_CLAIM,
    REFRESH_TOKEN_TYPE,
    DecisionView,
    IssuanceDenied,
    apply_decision,
    session_end,
    sign,
)
from .keys import (
    ASYMMETRIC_ALGORITHMS,
    KeyFileError,
    VerifyKey,
    algorithms_for,
    certificate_thumbprint,
    jwk_thumbprint,
    load_jwks,
    load_pem_public_key,
    load_private_key,
    private_key_pem,
    public_jwk,
    verify_key,
)
from .refresh import (
    Family,
    Issued,
    MemoryRefreshStore,
    Redemption,
    RefreshChain,
    RefreshRecord,
    RefreshStore,
)
from .sender import check_sender, cnf_claim, verify_dpop_proof
from .verify import (
    IssuerConfig,
    Revocations,
    TokenInvalid,
    TokenVerifier,
    VerifiedToken,
    VerifiedTokenCache,
    binding_of,
    token_context,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ASYMMETRIC_ALGORITHMS",
    "AUDIT_CLAIM",
    "REFRESH_TOKEN_TYPE",
    "DecisionView",
    "Family",
    "IssuanceDenied",
    "Issued",
    "IssuerConfig",
    "KeyFileError",
    "MemoryRefreshStore",
    "Redemption",
    "RefreshChain",
    "RefreshRecord",
    "RefreshStore",
    "Revocations",
    "TokenInvalid",
    "TokenVerifier",
    "VerifiedToken",
    "VerifiedTokenCache",
    "VerifyKey",
    "algorithms_for",
    "apply_decision",
    "binding_of",
    "certificate_thumbprint",
    "check_sender",
    "cnf_claim",
    "jwk_thumbprint",
    "load_jwks",
    "load_pem_public_key",
    "load_private_key",
    "private_key_pem",
    "public_jwk",
    "session_end",
    "sign",
    "token_context",
    "verify_dpop_proof",
    "verify_key",
]
