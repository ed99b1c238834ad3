"""The issuer SDK: strict verification, claims as context, minting from decisions, refresh families."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ttlpolicy import load_policies
from ttlpolicy.tokens import (
    ACCESS_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
    Family,
    IssuanceDenied,
    IssuerConfig,
    MemoryRefreshStore,
    RefreshChain,
    RefreshRecord,
    TokenInvalid,
    TokenVerifier,
    VerifiedToken,
    VerifiedTokenCache,
    apply_decision,
    check_sender,
    cnf_claim,
    jwk_thumbprint,
    public_jwk,
    session_end,
    sign,
    token_context,
    verify_dpop_proof,
    verify_key,
)
import ttlpolicy.tokens as tokens
from ttlpolicy.tokens.refresh import SUPERSEDED

ISS = "https://id.example.com"
AUD = "api"
NOW = 1_741_082_400  # 2025-03-04T10:00:00Z, a Tuesday
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**extra: Any) -> dict[str, Any]:
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW, "exp": NOW + 600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def verifier(**kw: Any) -> TokenVerifier:
    revocations = kw.pop("revocations", None)
    config = IssuerConfig(ISS, AUD, (verify_key(EC_KEY, "k1"), verify_key(RSA_KEY, "k2")),
                          algorithms=("ES256", "RS256"), **kw)
    return TokenVerifier([config], revocations=revocations)


def token(key: Any = EC_KEY, alg: str = "ES256", kid: str | None = "k1", **extra: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**extra), key, algorithm=alg, headers=headers)


def reason(tok: str, **kw: Any) -> str:
    with pytest.raises(TokenInvalid) as info:
        verifier().verify(tok, kw.pop("now", NOW), **kw)
    assert info.value.error == "invalid_token"
    assert len(tok) < 8 or tok not in info.value.description  # the token never appears in an error
    return info.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    return head + "." + _b64(signature)


# ---------------------------------------------------------------- public face

def test_public_names_are_pinned() -> None:
    assert {"TokenVerifier", "VerifiedToken", "TokenInvalid", "token_context", "apply_decision", "sign",
            "RefreshChain", "RefreshStore", "MemoryRefreshStore", "check_sender", "verify_dpop_proof",
            "IssuerConfig"} <= set(tokens.__all__)
    assert all(hasattr(tokens, name) for name in tokens.__all__)


# ---------------------------------------------------------------- verification

def test_valid_token_verifies_with_binding_and_kid() -> None:
    verified = verifier().verify(token(cnf={"jkt": "abc"}), NOW)
    assert verified.subject == "alice" and verified.kid == "k1" and verified.algorithm == "ES256"
    assert verified.binding == "dpop"
    with pytest.raises(TypeError):
        verified.claims["sub"] = "mallory"  # type: ignore[index]


def test_rsa_key_and_epoch_or_datetime_now() -> None:
    tok = token(RSA_KEY, "RS256", "k2")
    assert verifier().verify(tok, datetime.fromtimestamp(NOW, timezone.utc)).algorithm == "RS256"


@pytest.mark.parametrize("tok, expected", [
    ("", "malformed"),
    ("not-a-token", "malformed"),
    ("a.b.c", "malformed"),
    ("a.b.c.d.e", "malformed"),
])
def test_malformed(tok: str, expected: str) -> None:
    assert reason(tok) == expected


def test_expiry_with_leeway() -> None:
    tok = token(exp=NOW + 100)
    assert verifier().verify(tok, NOW + 100 + 29).subject == "alice"  # within the 30 s leeway
    assert reason(tok, now=NOW + 100 + 30) == "expired"


def test_not_yet_valid_and_issued_in_future() -> None:
    assert reason(token(nbf=NOW + 120)) == "not_yet_valid"
    assert reason(token(iat=NOW + 120)) == "not_yet_valid"


def test_session_exp_claim_ends_the_token() -> None:
    with pytest.raises(TokenInvalid, match="session expired"):
        verifier().verify(token(session_exp=NOW - 60), NOW)


def test_bad_signature_and_tampered_payload() -> None:
    assert reason(token(OTHER_EC_KEY)) == "signature"
    header, payload, signature = token(amr=["pwd"]).split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["amr"] = ["pwd", "mfa"]
    assert reason(f"{header}.{_b64(json.dumps(forged).encode())}.{signature}") == "signature"


def test_unknown_issuer_wrong_audience_missing_claims() -> None:
    assert reason(token(iss="https://evil.example")) == "unknown_issuer"
    assert reason(token(aud="other")) == "audience"
    assert reason(token(iss=None)) == "missing_claim"
    assert reason(token(exp=None)) == "missing_claim"
    assert reason(token(aud=None)) == "missing_claim"
    strict = verifier(required_claims=("jti",))
    with pytest.raises(TokenInvalid, match="'jti'"):
        strict.verify(token(), NOW)


def test_alg_none_is_refused() -> None:
    tok = handmade({"alg": "none", "typ": "JWT"}, claims())
    assert reason(tok) == "algorithm"


def test_hmac_key_confusion_is_refused() -> None:
    # The classic attack: sign with HS256 using the issuer's *public* key as the HMAC secret.
    public_pem = EC_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims()).encode())
    tok = head + "." + _b64(hmac.new(public_pem, head.encode(), hashlib.sha256).digest())
    assert reason(tok) == "algorithm"


def test_algorithm_must_fit_the_key_type() -> None:
    # RS256 is allowed, but the kid names an EC key: no key can check it.
    tok = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    assert reason(tok) == "unknown_key"
    assert reason(token(kid="nope")) == "unknown_key"


def test_es384_not_in_allow_list() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    assert reason(jwt.encode(claims(), key, algorithm="ES384")) == "algorithm"


def test_crit_header_and_token_type() -> None:
    assert reason(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"crit": ["exp"]})) == "malformed"
    at = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "k1", "typ": ACCESS_TOKEN_TYPE})
    assert verifier().verify(at, NOW, token_type="application/AT+JWT").token_type == "at+jwt"
    assert reason(token(), token_type="at+jwt") == "token_type"
    typed = verifier(token_types=("at+jwt",))
    with pytest.raises(TokenInvalid, match="wrong token type"):
        typed.verify(token(), NOW)


def test_key_rotation_tries_every_matching_key() -> None:
    config = IssuerConfig(ISS, AUD, (verify_key(OTHER_EC_KEY), verify_key(EC_KEY)), algorithms=("ES256",))
    assert TokenVerifier([config]).verify(token(kid=None), NOW).subject == "alice"


def test_claim_types_are_checked() -> None:
    assert reason(token(amr="mfa")) == "claim_type"
    assert reason(token(cnf={"jkt": "a", "x5t#S256": "b"})) == "claim_type"
    assert reason(token(exp="tomorrow")) in ("claim_type", "malformed")
    assert reason(token(auth_time="yesterday")) == "claim_type"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf", "auth_time", "session_exp"])
@pytest.mark.parametrize("value", [1e300, 2**70, 221_845_392_000, -1, str(NOW + 60)])
def test_numeric_dates_are_bounded_numbers(name: str, value: Any) -> None:
    # Beyond the year 9000 a NumericDate cannot become a context timestamp or an expiry instant.
    assert reason(token(**{name: value})) == "claim_type"


def test_revoked_family() -> None:
    class Revoked:
        def is_revoked(self, family: str) -> bool:
            return family == "f1"

    v = verifier(revocations=Revoked())
    assert v.verify(token(sid="f2"), NOW).family == "f2"
    with pytest.raises(TokenInvalid, match="token family revoked") as info:
        v.verify(token(sid="f1"), NOW)
    assert info.value.reason == "revoked"


def _counting_cache(**kw: Any) -> tuple[VerifiedTokenCache, list[str]]:
    cache = VerifiedTokenCache(verifier(revocations=kw.pop("revocations", None)), **kw)
    calls: list[str] = []
    real = cache.verifier.verify
    cache.verifier.verify = lambda tok, now=None, **k: calls.append(tok) or real(tok, now, **k)  # type: ignore[method-assign]
    return cache, calls


def test_a_cached_token_is_verified_once_until_it_expires() -> None:
    cache, calls = _counting_cache()
    tok = token(sid="f1")  # exp = NOW + 600, leeway 30
    first = cache.verify(tok, NOW)
    assert first.valid_until == NOW + 630
    assert [cache.verify(tok, NOW + s) for s in (1, 100, 629)] == [first] * 3
    assert calls == [tok]
    with pytest.raises(TokenInvalid) as info:  # past exp + leeway: verified again, and refused
        cache.verify(tok, NOW + 630)
    assert info.value.reason == "expired" and calls == [tok, tok] and len(cache) == 0


def test_the_cache_ends_a_token_at_its_session_end_and_verifies_again_if_the_clock_goes_back() -> None:
    cache, calls = _counting_cache()
    tok = token(session_exp=NOW + 100)
    assert cache.verify(tok, NOW + 10).valid_until == NOW + 130
    cache.verify(tok, NOW + 5)  # before the instant it was verified at: not from the cache
    assert len(calls) == 2
    with pytest.raises(TokenInvalid, match="session expired"):
        cache.verify(tok, NOW + 130)


def test_refused_tokens_are_not_cached_and_revocation_is_asked_on_every_hit() -> None:
    revoked: set[str] = set()

    class Revoked:
        def is_revoked(self, family: str) -> bool:
            return family in revoked

    cache, calls = _counting_cache(revocations=Revoked())
    bad = token(key=OTHER_EC_KEY)
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            cache.verify(bad, NOW)
    assert calls == [bad, bad] and len(cache) == 0
    tok = token(sid="f1")
    cache.verify(tok, NOW)
    revoked.add("f1")
    with pytest.raises(TokenInvalid, match="token family revoked"):
        cache.verify(tok, NOW + 1)
    assert calls == [bad, bad, tok]  # refused from the cache, without verifying the signature again


def test_the_cache_is_bounded_keyed_by_digest_and_by_token_type() -> None:
    cache, calls = _counting_cache(max_entries=2)
    a, b, c = (token(jti=name) for name in "abc")
    for tok in (a, b, a, c):  # c pushes out b, the least recently used
        cache.verify(tok, NOW)
    assert len(cache) == 2 and calls == [a, b, c]
    cache.verify(a, NOW)
    cache.verify(b, NOW)
    assert calls == [a, b, c, b]
    assert all(isinstance(key, bytes) and a.encode() not in key for key in cache._entries)  # no token kept
    with pytest.raises(TokenInvalid) as info:  # another token type is another question
        cache.verify(a, NOW, token_type="at+jwt")
    assert info.value.reason == "token_type"
    with pytest.raises(ValueError):
        VerifiedTokenCache(verifier(), max_entries=0)


def test_www_authenticate_is_rfc6750_safe() -> None:
    err = TokenInvalid("expired", 'bad "quote"\\ and ünïcode')
    header = err.www_authenticate(realm="api")
    assert header.startswith('Bearer realm="api", error="invalid_token", error_description="bad ?quote?? and ')
    assert err.to_dict()["error"] == "invalid_token"


def test_config_from_files(tmp_path: Path) -> None:
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    jwks = {"keys": [public_jwk(EC_KEY, kid="k1", alg="ES256"), {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    v = TokenVerifier.from_config({"issuers": [{"issuer": ISS, "audience": [AUD, "other"],
                                                "public_keys": ["issuer.pem"], "jwks_file": "jwks.json",
                                                "algorithms": ["ES256", "RS256"]}]}, base_dir=tmp_path)
    assert v.issuers == [ISS]
    assert v.verify(token(), NOW).kid == "k1"
    assert v.verify(token(RSA_KEY, "RS256", kid=None, aud="other"), NOW).algorithm == "RS256"


@pytest.mark.parametrize("settings, message", [
    ({"algorithms": ["HS256"]}, "unsupported algorithms"),
    ({"algorithms": ["none"]}, "unsupported algorithms"),
    ({"algorithms": ["ES384"]}, "no key can verify"),
    ({"audience": ""}, "audience"),
    ({"leeway": 3600}, "leeway"),
    ({"bogus": 1}, "unknown issuer settings"),
])
def test_bad_config_is_refused(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [public_jwk(EC_KEY, kid="k1")]}))
    entry = {"issuer": ISS, "audience": AUD, "jwks_file": "jwks.json", "algorithms": ["ES256"], **settings}
    with pytest.raises(ValueError, match=message):
        TokenVerifier.from_config([entry], base_dir=tmp_path)


def test_jwks_with_private_material_is_refused(tmp_path: Path) -> None:
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ValueError, match="private material"):
        TokenVerifier.from_config([{"issuer": ISS, "audience": AUD, "jwks_file": "jwks.json",
                                    "algorithms": ["ES256"]}], base_dir=tmp_path)


# ---------------------------------------------------------------- claims as context

def test_token_context_maps_claims() -> None:
    ctx = token_context({"sub": "alice", "azp": "web", "scope": "read write", "amr": ["pwd", "otp"],
                         "acr": "urn:mfa", "auth_time": NOW - 60.5, "iat": NOW, "exp": NOW + 60,
                         "session_exp": NOW + 3600, "cnf": {"x5t#S256": "thumb"}, "iss": ISS})
    assert ctx == {"sub": "alice", "client_id": "web", "scope": ["read", "write"], "amr": ["pwd", "otp"],
                   "acr": "urn:mfa", "auth_time": NOW - 61, "iat": NOW, "exp": NOW + 60,
                   "session_exp": NOW + 3600, "binding": "mtls"}
    assert token_context({})["binding"] == "none"


CLAIMS_POLICY = """
apiVersion: ttlpolicy/v1
name: claims
defaults:
  access_ttl: 10m
  refresh_ttl: 1h
rules:
  - name: mfa-from-amr
    when: '"mfa" in token.amr'
    access_ttl: {multiply: 3}
  - name: dpop-bound
    when: token.binding == "dpop"
    refresh_ttl: {multiply: 4}
  - name: bearer
    when: token.binding == "none"
    refresh_ttl: {cap: 30m}
"""


@pytest.fixture(scope="module")
def claims_policies(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("claims")
    (directory / "claims.yaml").write_text(CLAIMS_POLICY)
    return load_policies(directory)


def decide_with(policies: Any, tok: str) -> Any:
    verified = verifier().verify(tok, NOW)
    return policies.decide({"token": token_context(verified.claims)}, now=datetime.fromtimestamp(NOW, timezone.utc))


def test_mfa_from_amr_and_binding_from_cnf(claims_policies: Any) -> None:
    strong = decide_with(claims_policies, token(amr=["pwd", "otp", "mfa"], cnf={"jkt": "k"}))
    assert strong.matched == ["dpop-bound", "mfa-from-amr"]
    assert (strong.access_ttl, strong.refresh_ttl) == (1800, 14400)
    weak = decide_with(claims_policies, token(amr=["pwd"]))
    assert weak.matched == ["bearer"]
    assert (weak.access_ttl, weak.refresh_ttl) == (600, 1800)
    mtls = decide_with(claims_policies, token(cnf={"x5t#S256": "t"}))
    assert mtls.matched == [] and mtls.refresh_ttl == 3600


@pytest.mark.parametrize("bad", [
    lambda: token(OTHER_EC_KEY, amr=["mfa"], cnf={"jkt": "k"}),  # forged signature
    lambda: token(amr=["mfa"], exp=NOW - 3600),  # expired
    lambda: token(amr=["mfa"], iss="https://evil.example"),  # unknown issuer
    lambda: token(amr="mfa"),  # a claim of the wrong type
])
def test_invalid_token_never_reaches_the_decision(claims_policies: Any, bad: Any) -> None:
    with pytest.raises(TokenInvalid):
        decide_with(claims_policies, bad())


# ---------------------------------------------------------------- minting

@pytest.fixture(scope="module")
def policies() -> Any:
    return load_policies(Path(__file__).resolve().parents[1] / "policies")


def decision(policies: Any, **context: Any) -> Any:
    return policies.decide(context, now=datetime.fromtimestamp(NOW, timezone.utc))


def test_apply_decision_sets_times_and_audit(policies: Any) -> None:
    d = decision(policies, device={"trust": "managed"}, location={"ip": "10.0.0.1"})
    base = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": 1, "jti": "old"}
    out = apply_decision(base, d, NOW, decision_id="d-1")
    assert base == {"iss": ISS, "aud": AUD, "sub": "alice", "exp": 1, "jti": "old"}  # not modified
    assert (out["iat"], out["nbf"], out["exp"]) == (NOW, NOW, NOW + d.access_ttl)
    assert out["jti"] != "old" and len(out["jti"]) >= 22
    assert out["ttl"] == {"policy": "workforce", "digest": d.policy_digest, "decision_id": "d-1"}
    refresh = apply_decision(base, d.to_dict(), NOW, "refresh")  # the JSON form works too
    assert refresh["exp"] == NOW + d.refresh_ttl and "session_exp" not in refresh


def test_apply_decision_enforces_the_session_cap_itself(policies: Any) -> None:
    d = decision(policies, device={"trust": "managed"}, location={"ip": "10.0.0.1"})
    assert d.refresh_ttl == 7 * 86400 and d.max_session == 30 * 86400
    # No user.auth_time went into the decision, but the token says the user signed in 29.5 days ago.
    auth_time = NOW - 29 * 86400 - 43200
    out = apply_decision({"sub": "alice", "auth_time": auth_time}, d, NOW, "refresh")
    assert out["exp"] == auth_time + 30 * 86400 == out["session_exp"]
    out = apply_decision({"sub": "alice"}, d, NOW, "refresh", session_exp=NOW + 100)
    assert out["exp"] == NOW + 100
    with pytest.raises(IssuanceDenied) as info:
        apply_decision({"sub": "alice", "auth_time": NOW - 31 * 86400}, d, NOW, "access")
    assert info.value.end_session
    assert session_end({}, d) is None


def test_apply_decision_refuses(policies: Any) -> None:
    denied = decision(policies, user={"risk": 0.95})
    with pytest.raises(IssuanceDenied, match="risk is too high"):
        apply_decision({"sub": "alice"}, denied, NOW)
    step_up = decision(policies, resource={"sensitivity": "restricted"})
    with pytest.raises(IssuanceDenied) as info:
        apply_decision({"sub": "alice"}, step_up, NOW)
    assert info.value.step_up and info.value.reasons
    assert apply_decision({"sub": "alice"}, step_up, NOW, step_up_satisfied=True)["exp"] == NOW + 300
    with pytest.raises(IssuanceDenied, match="no refresh token"):
        apply_decision({"sub": "alice"}, step_up, NOW, "refresh", step_up_satisfied=True)
    with pytest.raises(ValueError):
        apply_decision({"sub": "alice"}, step_up, NOW, "id", step_up_satisfied=True)


def test_decided_expires_at_is_honoured(policies: Any) -> None:
    data = decision(policies).to_dict()
    data["expires_at"] = {"access": NOW + 60, "session": "2025-03-04T10:30:00Z"}
    assert apply_decision({"sub": "a"}, data, NOW)["exp"] == NOW + 60
    assert apply_decision({"sub": "a"}, data, NOW, "refresh")["exp"] == NOW + 1800


def test_sign_round_trip_and_refusals() -> None:
    out = sign(claims(), EC_KEY, "ES256", kid="k1", typ=ACCESS_TOKEN_TYPE)
    assert verifier().verify(out, NOW, token_type="at+jwt").kid == "k1"
    pem = EC_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    assert verifier().verify(sign(claims(), pem, "ES256", kid="k1"), NOW).subject == "alice"
    with pytest.raises(ValueError, match="refusing"):
        sign(claims(), b"secret", "HS256")
    with pytest.raises(ValueError, match="does not fit"):
        sign(claims(), EC_KEY, "RS256")
    with pytest.raises(ValueError, match="does not fit"):
        sign(claims(), EC_KEY.public_key(), "ES256")
    with pytest.raises(ValueError, match="numeric exp"):
        sign({"sub": "alice"}, EC_KEY, "ES256")
    ed = ed25519.Ed25519PrivateKey.generate()
    assert jwt.get_unverified_header(sign(claims(), ed, "EdDSA"))["alg"] == "EdDSA"


# ---------------------------------------------------------------- sender constraint

def dpop_proof(key: Any, method: str, url: str, iat: int = NOW, jti: str = "p1", access_token: str | None = None,
               alg: str = "ES256", jwk: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"jti": jti, "htm": method, "htu": url, "iat": iat}
    if access_token is not None:
        body["ath"] = _b64(hashlib.sha256(access_token.encode()).digest())
    return jwt.encode(body, key, algorithm=alg, headers={"typ": "dpop+jwt", "jwk": jwk or public_jwk(key)})


def test_check_sender() -> None:
    thumb = jwk_thumbprint(public_jwk(OTHER_EC_KEY))
    bound = verifier().verify(token(cnf=cnf_claim(dpop_jkt=thumb)), NOW)
    assert check_sender(bound, dpop_jkt=thumb) == "dpop"
    for presented in (None, "x" * len(thumb)):
        with pytest.raises(TokenInvalid) as info:
            check_sender(bound, dpop_jkt=presented)
        assert info.value.reason == "sender"
    assert check_sender({"cnf": {"x5t#S256": "t"}}, certificate_thumbprint="t") == "mtls"
    with pytest.raises(TokenInvalid, match="client certificate"):
        check_sender({"cnf": {"x5t#S256": "t"}}, certificate_thumbprint="u")
    assert check_sender({}) == "none"
    with pytest.raises(TokenInvalid, match="must be sender-constrained"):
        check_sender({}, required=True)
    with pytest.raises(ValueError):
        cnf_claim(dpop_jkt="a", certificate_thumbprint="b")


def test_dpop_proof() -> None:
    key = OTHER_EC_KEY
    url = "https://as.example/token"
    assert verify_dpop_proof(dpop_proof(key, "POST", url + "?x=1"), method="post", url=url, now=NOW) \
        == jwk_thumbprint(public_jwk(key))
    seen: set[str] = set()

    def replay(proof_id: str, expires: int) -> bool:
        hit = proof_id in seen
        seen.add(proof_id)
        return hit

    proof = dpop_proof(key, "POST", url, jti="once")
    verify_dpop_proof(proof, method="POST", url=url, now=NOW, seen=replay)
    bad = [
        (proof, {"seen": replay}, "already used"),
        (dpop_proof(key, "GET", url), {}, "another HTTP method"),
        (dpop_proof(key, "POST", "https://evil.example/token"), {}, "another URL"),
        (dpop_proof(key, "POST", url, iat=NOW - 3600), {}, "too old"),
        (dpop_proof(key, "POST", url, access_token="a"), {"access_token": "b"}, "ath"),
        (dpop_proof(key, "POST", url), {"access_token": "b"}, "ath"),
        (dpop_proof(key, "POST", url, jwk=public_jwk(EC_KEY)), {}, "bad signature"),
        (dpop_proof(key, "POST", url, jwk=json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))), {}, "public key"),
        (token(), {}, "typ dpop\\+jwt"),
        ("x.y", {}, "malformed"),
    ]
    for tok, kw, message in bad:
        with pytest.raises(TokenInvalid, match=message) as info:
            verify_dpop_proof(tok, method="POST", url=url, now=NOW, **kw)
        assert info.value.error == "invalid_dpop_proof"


# ---------------------------------------------------------------- refresh families

class Chain:
    """A refresh chain over the bundled policy, driven at explicit instants."""

    def __init__(self, policies: Any, grace: int = 10, public: bool = True, cnf: dict[str, str] | None = None):
        self.policies, self.store = policies, MemoryRefreshStore()
        self.chain = RefreshChain(self.store, reuse_grace=grace)
        self.verifier = TokenVerifier([IssuerConfig(ISS, ISS, (verify_key(EC_KEY),), ("ES256",))],
                                      revocations=self.store)
        self.cnf = cnf
        d = self.decide(NOW, {"client": {"type": "public" if public else "confidential"}}, auth=NOW)
        self.issued = self.chain.start({"iss": ISS, "aud": ISS, "sub": "alice"}, d, NOW, client_id="cli",
                                       public_client=public, cnf=cnf)
        self.family = self.issued.family

    def decide(self, at: int, context: dict[str, Any] | None = None, auth: int | None = NOW) -> Any:
        # auth=None leaves user.auth_time out: then only the SDK, not the evaluator, enforces the cap.
        base = {"device": {"trust": "managed"}, "location": {"ip": "10.0.0.1"},
                "user": {"auth_time": auth} if auth is not None else {}}
        for key, value in (context or {}).items():
            base[key] = {**base.get(key, {}), **value}
        return self.policies.decide(base, now=datetime.fromtimestamp(at, timezone.utc))

    def token(self, issued: Any = None) -> str:
        return sign((issued or self.issued).refresh_claims, EC_KEY, "ES256")

    def refresh(self, tok: str, at: int, context: dict[str, Any] | None = None, auth: int | None = NOW,
                **proof: Any) -> Any:
        redemption = self.chain.redeem(self.verifier.verify(tok, at), at, client_id="cli", **proof)
        decision = self.decide(at, {**(context or {}), "grant": {"type": "refresh_token"}}, auth)
        return self.chain.rotate(redemption, {"iss": ISS, "aud": ISS, "sub": "alice"}, decision, at)


def test_rotation_and_reuse_revokes_the_family(policies: Any) -> None:
    c = Chain(policies)
    assert c.issued.rotated and c.issued.refresh_claims["sid"] == c.family
    first = c.token()
    second = c.refresh(first, NOW + 60)
    assert second.rotated and second.refresh_claims["jti"] != c.issued.refresh_claims["jti"]
    third = c.refresh(c.token(second), NOW + 120)
    with pytest.raises(TokenInvalid) as info:
        c.refresh(first, NOW + 180)  # replay of a consumed token outside the grace window
    assert info.value.reason == "reuse"
    assert c.store.is_revoked(c.family)
    with pytest.raises(TokenInvalid, match="token family revoked"):
        c.refresh(c.token(third), NOW + 200)
    access = third.access_claims({"iss": ISS, "aud": ISS, "sub": "alice"})
    with pytest.raises(TokenInvalid, match="revoked"):
        c.verifier.verify(sign(access, EC_KEY, "ES256"), NOW + 200)


def test_grace_retry_supersedes_the_lost_successor(policies: Any) -> None:
    c = Chain(policies, grace=10)
    first = c.token()
    lost = c.refresh(first, NOW + 60)  # the client never received this answer
    retried = c.refresh(first, NOW + 65)  # within the grace window: allowed once more
    assert retried.refresh_claims["jti"] != lost.refresh_claims["jti"]
    c.refresh(c.token(retried), NOW + 70)
    with pytest.raises(TokenInvalid) as info:
        c.refresh(c.token(lost), NOW + 75)  # the superseded successor surfacing later is reuse
    assert info.value.reason == "reuse" and c.store.is_revoked(c.family)


def test_grace_does_not_cover_a_chain_that_moved_on(policies: Any) -> None:
    c = Chain(policies, grace=10)
    first = c.token()
    second = c.refresh(first, NOW + 60)
    c.refresh(c.token(second), NOW + 61)
    with pytest.raises(TokenInvalid, match="reuse"):
        c.refresh(first, NOW + 62)


def test_non_rotating_tokens_only_tighten(policies: Any) -> None:
    c = Chain(policies, public=False)
    assert not c.issued.rotated
    tok = c.token()
    before = c.store.token(c.issued.refresh_claims["jti"]).expires_at
    same = c.refresh(tok, NOW + 3600)
    assert same.refresh_claims is None and not same.rotated
    assert c.store.token(c.issued.refresh_claims["jti"]).expires_at == before  # never extended
    c.refresh(tok, NOW + 7200, {"user": {"risk": 0.6}})  # riskier: 14d x 0.4 (below the 7d idle cap)
    assert c.store.token(c.issued.refresh_claims["jti"]).expires_at == NOW + 7200 + 483840
    c.refresh(tok, NOW + 7300, {"resource": {"sensitivity": "restricted"}, "user": {"mfa": True},
                                "device": {"trust": "known"}})
    with pytest.raises(TokenInvalid, match="refresh token expired"):
        c.refresh(tok, NOW + 7301)  # the policy granted no refresh token: this one ended


def test_riskier_refresh_never_outlives_the_presented_token(policies: Any) -> None:
    c = Chain(policies)
    first_exp = c.issued.refresh_claims["exp"]
    assert first_exp == NOW + 7 * 86400
    risky = c.refresh(c.token(), NOW + 86400, {"user": {"risk": 0.55}})
    # 14d x 0.45 = 6.3d from a day later would end after the first token; a stricter decision may not.
    assert risky.refresh_claims["exp"] == first_exp
    calm = c.refresh(c.token(risky), NOW + 2 * 86400, {"user": {"risk": 0.55}})
    assert calm.refresh_claims["exp"] == NOW + 2 * 86400 + 544320  # same decision again: the window slides


def test_session_cap_and_deny_end_the_family(policies: Any) -> None:
    c = Chain(policies)
    assert c.issued.session_exp == NOW + 30 * 86400
    tok, at = c.token(), NOW
    for _ in range(4):
        at += 7 * 86400 - 3600  # just before each token expires, on weekday office hours
        issued = c.refresh(tok, at, auth=None)
        assert issued.refresh_claims["exp"] <= NOW + 30 * 86400
        tok = c.token(issued)
    assert issued.refresh_claims["exp"] == NOW + 30 * 86400
    with pytest.raises(TokenInvalid, match="expired"):
        c.refresh(tok, NOW + 30 * 86400)
    d = Chain(policies)
    with pytest.raises(IssuanceDenied):
        d.refresh(d.token(), NOW + 60, {"user": {"risk": 0.95}})
    assert d.store.is_revoked(d.family)


def test_step_up_on_refresh_does_not_revoke(policies: Any) -> None:
    c = Chain(policies)
    with pytest.raises(IssuanceDenied) as info:
        c.refresh(c.token(), NOW + 4 * 86400)  # stale-authentication: more than 72 h since sign-in
    assert info.value.step_up and not c.store.is_revoked(c.family)


def test_bound_family_requires_the_key_and_binds_access_tokens(policies: Any) -> None:
    thumb = jwk_thumbprint(public_jwk(OTHER_EC_KEY))
    c = Chain(policies, public=False, cnf={"jkt": thumb})
    assert not c.issued.rotated
    access = c.issued.access_claims({"iss": ISS, "aud": ISS, "sub": "alice"})
    assert access["cnf"] == {"jkt": thumb} and access["sid"] == c.family
    first = c.token()
    with pytest.raises(TokenInvalid, match="proof of possession"):
        c.refresh(first, NOW + 60)
    with pytest.raises(TokenInvalid, match="does not match"):
        c.refresh(first, NOW + 60, dpop_jkt="someone-else")
    assert not c.store.is_revoked(c.family)  # a thief without the key cannot end the session
    assert c.refresh(first, NOW + 60, dpop_jkt=thumb).cnf == {"jkt": thumb}


def test_wrong_client_and_unknown_tokens(policies: Any) -> None:
    c = Chain(policies)
    verified = c.verifier.verify(c.token(), NOW)
    with pytest.raises(TokenInvalid, match="another client"):
        c.chain.redeem(verified, NOW, client_id="web")
    stray = sign({**c.issued.refresh_claims, "jti": "unknown"}, EC_KEY, "ES256")
    with pytest.raises(TokenInvalid, match="unknown refresh token"):
        c.chain.redeem(c.verifier.verify(stray, NOW), NOW, client_id="cli")
    with pytest.raises(ValueError):
        RefreshChain(MemoryRefreshStore(), reuse_grace=3600)


def test_sender_constrained_decision_requires_cnf(policies: Any) -> None:
    data = Chain(policies).decide(NOW).to_dict()
    data["refresh"]["sender_constrained"] = True
    chain = RefreshChain(MemoryRefreshStore())
    with pytest.raises(IssuanceDenied, match=r"^the policy requires a sender-constrained token \(DPoP or mTLS\)$"):
        chain.start({"sub": "alice"}, data, NOW, client_id="cli")
    assert chain.start({"sub": "alice"}, data, NOW, client_id="cli", cnf={"jkt": "t"}).family


# ---------------------------------------------------------------- refresh rules, one at a time
# The decisions below are JSON (what POST /v1/decide returns) changed field by field, so each rule
# of the chain is driven on its own, without the evaluator shaping the numbers first.

DAY = 86400
BASE = {"iss": ISS, "aud": ISS, "sub": "alice"}


def decided(policies: Any, **changes: Any) -> dict[str, Any]:
    """The bundled policy's decision for a managed device (access 1 h, refresh 7 d, idle 7 d, session 30 d,
    no rotation, grace 10 s) without absolute instants; ``refresh={...}`` changes refresh settings."""
    data = decision(policies, device={"trust": "managed"}, location={"ip": "10.0.0.1"}).to_dict()
    data["refresh"] = {**data["refresh"], **changes.pop("refresh", {})}
    data["expires_at"] = {}
    return {**data, **changes}


class Session:
    """One family in a memory store, signed in at NOW, refreshed with JSON decisions at explicit instants."""

    def __init__(self, policies: Any, *, grace: int = 0, public: bool = False, cnf: dict[str, str] | None = None,
                 auth_time: int = NOW, **changes: Any):
        self.policies, self.store = policies, MemoryRefreshStore()
        self.chain = RefreshChain(self.store, reuse_grace=grace)
        self.issued = self.chain.start(BASE, decided(policies, **changes), NOW, client_id="cli", auth_time=auth_time,
                                       public_client=public, cnf=cnf)
        self.family = self.issued.family

    def redeem(self, issued: Any, at: int, **proof: Any) -> Any:
        verified = VerifiedToken(issued.refresh_claims, ISS, "ES256", None, REFRESH_TOKEN_TYPE)
        return self.chain.redeem(verified, at, client_id="cli", **proof)

    def refresh(self, issued: Any, at: int, proof: dict[str, str] | None = None, decision_id: str | None = None,
                **changes: Any) -> Any:
        return self.chain.rotate(self.redeem(issued, at, **(proof or {})), BASE, decided(self.policies, **changes), at,
                                 decision_id=decision_id)

    def record(self, issued: Any) -> RefreshRecord | None:
        return self.store.token(issued.refresh_claims["jti"])

    def fam(self) -> Family:
        family = self.store.family(self.family)
        assert family is not None
        return family


def refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(TokenInvalid) as info:
        call(*args, **kwargs)
    return info.value.reason, info.value.description


def test_sign_in_opens_a_family_with_what_the_decision_decided(policies: Any) -> None:
    store, cnf = MemoryRefreshStore(), {"jkt": "thumb"}
    issued = RefreshChain(store).start({**BASE, "auth_time": NOW - 3600}, decided(policies, refresh_ttl=14 * DAY),
                                       NOW + 0.5, client_id="web", cnf=cnf, decision_id="d-1")
    end = NOW - 3600 + 30 * DAY  # auth_time + max_session
    assert len(issued.family) == 24  # sid: 18 random bytes, URL-safe
    assert store.family(issued.family) == Family(issued.family, "alice", "web", NOW - 3600, end, NOW, cnf=cnf)
    refresh = issued.refresh_claims
    assert {k: refresh[k] for k in ("sid", "client_id", "auth_time", "cnf", "iat", "exp", "session_exp")} == {
        "sid": issued.family, "client_id": "web", "auth_time": NOW - 3600, "cnf": cnf, "iat": NOW,
        "exp": NOW + 7 * DAY, "session_exp": end}  # 14 d held to the 7 d idle timeout
    assert refresh["ttl"]["decision_id"] == "d-1"
    # the record remembers the decided lifetime (after the idle timeout), never the token
    assert store.token(refresh["jti"]) == RefreshRecord(refresh["jti"], issued.family, NOW, NOW + 7 * DAY, 7 * DAY,
                                                        rotation=False, grace=10)
    assert (issued.session_exp, issued.rotated, issued.cnf) == (end, False, cnf)
    access = issued.access_claims({"sub": "alice"})  # no auth_time in these claims: the session end still holds
    assert (access["sid"], access["cnf"], access["iat"], access["exp"], access["session_exp"]) == (
        issued.family, cnf, NOW, NOW + 3600, end)
    assert access["ttl"]["decision_id"] == "d-1"
    no_idle = RefreshChain(store).start(BASE, decided(policies, refresh_ttl=14 * DAY, refresh={"idle_timeout": None}),
                                        NOW, client_id="web")
    assert store.token(no_idle.refresh_claims["jti"]).ttl == 14 * DAY  # type: ignore[union-attr]


def test_auth_time_comes_from_the_argument_then_the_claims_then_now(policies: Any) -> None:
    chain, d = RefreshChain(MemoryRefreshStore()), decided(policies)
    assert chain.start({**BASE, "auth_time": NOW - 60}, d, NOW, client_id="c", auth_time=NOW - 120
                       ).refresh_claims["auth_time"] == NOW - 120
    assert chain.start({**BASE, "auth_time": NOW - 60}, d, NOW, client_id="c").refresh_claims["auth_time"] == NOW - 60
    assert chain.start(BASE, d, NOW + 0.5, client_id="c").refresh_claims["auth_time"] == NOW
    with pytest.raises(ValueError, match="^claims need a string sub$"):
        chain.start({"iss": ISS}, d, NOW, client_id="c")


def test_the_session_ends_at_the_earliest_of_max_session_and_the_decided_instant(policies: Any) -> None:
    store = MemoryRefreshStore()
    decided_end = RefreshChain(store).start(BASE, decided(policies, expires_at={"session": NOW + 3600}), NOW,
                                            client_id="c")
    assert decided_end.session_exp == store.family(decided_end.family).session_exp == NOW + 3600  # type: ignore
    unbounded = RefreshChain(store).start(BASE, decided(policies, refresh={"max_session": None}), NOW, client_id="c")
    assert unbounded.session_exp is None and "session_exp" not in unbounded.refresh_claims


@pytest.mark.parametrize("rotation, public, cnf, rotated", [
    (False, None, None, False),  # a confidential client, by default
    (True, False, None, True),
    (False, True, None, True),  # a public client with bearer tokens always rotates (RFC 9700 §4.14.2)
    (False, True, {"jkt": "t"}, False),  # ... unless its tokens are bound to a key
])
def test_who_rotates_from_sign_in(policies: Any, rotation: bool, public: bool | None, cnf: Any, rotated: bool) -> None:
    kw = {} if public is None else {"public_client": public}
    store = MemoryRefreshStore()
    issued = RefreshChain(store).start(BASE, decided(policies, refresh={"rotation": rotation}), NOW, client_id="c",
                                       cnf=cnf, **kw)
    assert issued.rotated is rotated
    assert store.family(issued.family).public_client is bool(public)  # type: ignore[union-attr]


def test_sign_in_under_a_step_up_decision_needs_the_step_up_done(policies: Any) -> None:
    chain, d = RefreshChain(MemoryRefreshStore()), decided(policies, step_up=True, step_up_reasons=["restricted"])
    with pytest.raises(IssuanceDenied) as info:
        chain.start(BASE, d, NOW, client_id="c")
    assert info.value.step_up
    issued = chain.start(BASE, d, NOW, client_id="c", step_up_satisfied=True)
    assert issued.refresh_claims["exp"] == NOW + 7 * DAY
    assert issued.access_claims(BASE)["exp"] == NOW + 3600  # the step-up is not asked twice


def test_a_sign_in_granting_no_refresh_token_opens_no_family(policies: Any) -> None:
    store, cnf = MemoryRefreshStore(), {"jkt": "t"}
    issued = RefreshChain(store).start({**BASE, "auth_time": NOW - 3600}, decided(policies, refresh_ttl=0), NOW + 0.5,
                                       client_id="c", cnf=cnf, decision_id="d-2")
    assert (issued.family, issued.refresh_claims, issued.session_exp, issued.cnf) == (
        None, None, NOW - 3600 + 30 * DAY, cnf)
    assert issued.rotated is False
    access = issued.access_claims({"sub": "alice"})
    assert (access["iat"], access["exp"], access["session_exp"], access["cnf"], access["ttl"]["decision_id"]) == (
        NOW, NOW + 3600, NOW - 3600 + 30 * DAY, cnf, "d-2")
    assert "sid" not in access
    one_second = RefreshChain(store).start(BASE, decided(policies, refresh_ttl=1), NOW, client_id="c")
    assert one_second.family and one_second.refresh_claims["exp"] == NOW + 1


def test_each_refusal_at_redemption_says_why(policies: Any) -> None:
    s = Session(policies)
    claims = s.issued.refresh_claims

    def redeem(changed: dict[str, Any], at: int, client_id: str = "cli") -> Any:
        verified = VerifiedToken({**claims, **changed}, ISS, "ES256", None, REFRESH_TOKEN_TYPE)
        return s.chain.redeem(verified, at, client_id=client_id)

    unknown = ("revoked", "unknown refresh token")
    assert refusal(redeem, {"jti": "unknown"}, NOW) == unknown
    assert refusal(redeem, {"sid": "another-family"}, NOW) == unknown
    s.store.add_token(replace(s.record(s.issued), jti="orphan", family="gone"))  # type: ignore[type-var]
    assert refusal(redeem, {"jti": "orphan", "sid": "gone"}, NOW) == unknown  # its family is no longer stored
    assert refusal(redeem, {}, NOW, "web") == ("client", "refresh token was issued to another client")
    assert refusal(redeem, {}, NOW + 7 * DAY) == ("expired", "refresh token expired")  # server-side, from its instant
    s.store.tighten_session(s.family, NOW + DAY)  # the session's end moved earlier (another replica, say)
    assert redeem({}, NOW + DAY - 1).retry is False
    assert refusal(redeem, {}, NOW + DAY) == ("expired", "session expired; sign in again")
    assert (s.fam().revoked_at, s.fam().revoked_reason) == (NOW + DAY, "session reached its absolute limit")
    assert refusal(redeem, {}, NOW) == ("revoked", "token family revoked")


def test_reuse_outside_the_grace_window_is_refused_at_redemption_and_revokes_the_family(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True, "reuse_grace": 10})
    first = s.issued
    lost = s.refresh(first, NOW + 60)  # the client never received this answer
    fresh = s.redeem(lost, NOW + 61)
    assert fresh.retry is False and fresh.verified.claims == lost.refresh_claims
    retry = s.redeem(first, NOW + 70)  # the grace window's last second
    assert retry.retry is True and retry.verified.claims == first.refresh_claims
    assert refusal(s.redeem, first, NOW + 71) == ("reuse", "refresh token reuse detected; token family revoked")
    assert (s.fam().revoked_at, s.fam().revoked_reason) == (NOW + 71, "refresh token reuse")
    # a consumed token whose successor was already used is reuse even inside the grace window,
    # refused when presented, before any decision is asked for
    moved_on = Session(policies, refresh={"rotation": True, "reuse_grace": 10})
    moved_on.refresh(moved_on.refresh(moved_on.issued, NOW + 60), NOW + 61)
    assert refusal(moved_on.redeem, moved_on.issued, NOW + 62)[0] == "reuse"


def test_after_a_grace_retry_the_presented_token_and_the_lost_successor_are_both_spent(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True, "reuse_grace": 10})
    first = s.issued
    lost = s.refresh(first, NOW + 60)
    retried = s.refresh(first, NOW + 65)
    assert s.record(first).successor == retried.refresh_claims["jti"]  # type: ignore[union-attr]
    assert (s.record(lost).successor, s.record(lost).used_at) == (SUPERSEDED, NOW + 65)  # type: ignore[union-attr]
    assert refusal(s.redeem, first, NOW + 71)[0] == "reuse"  # the grace counts from the first use


def test_two_refreshes_racing_with_one_token_one_wins_the_other_is_reuse(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True, "reuse_grace": 0})
    a, b = s.redeem(s.issued, NOW + 60), s.redeem(s.issued, NOW + 60)  # both checked before either rotates
    d = decided(policies, refresh={"rotation": True, "reuse_grace": 0})
    s.chain.rotate(a, BASE, d, NOW + 60)
    assert refusal(s.chain.rotate, b, BASE, d, NOW + 61) == (
        "reuse", "refresh token reuse detected; token family revoked")
    assert (s.fam().revoked_at, s.fam().revoked_reason) == (NOW + 61, "refresh token reuse")


def test_a_denied_refresh_ends_the_family(policies: Any) -> None:
    s = Session(policies)
    with pytest.raises(IssuanceDenied) as info:
        s.refresh(s.issued, NOW + 60, allow=False, deny_reason="risk is too high")
    assert info.value.end_session
    assert (s.fam().revoked_at, s.fam().revoked_reason) == (NOW + 60, "denied by policy")


def test_a_refresh_that_requires_a_binding_needs_a_bound_family(policies: Any) -> None:
    s = Session(policies)
    with pytest.raises(IssuanceDenied) as info:
        s.refresh(s.issued, NOW + 60, refresh={"sender_constrained": True})
    assert info.value.description == "the policy requires a sender-constrained token (DPoP or mTLS); sign in again"
    assert not s.store.is_revoked(s.family)  # the client may sign in again with a key
    cnf = {"x5t#S256": "thumb"}
    bound = Session(policies, cnf=cnf, refresh={"rotation": True})
    assert refusal(bound.redeem, bound.issued, NOW + 60)[0] == "sender"
    issued = bound.refresh(bound.issued, NOW + 60, {"certificate_thumbprint": "thumb"},
                           refresh={"rotation": True, "sender_constrained": True})
    assert issued.refresh_claims["cnf"] == issued.access_claims(BASE)["cnf"] == cnf


def test_a_session_end_only_moves_earlier_across_refreshes(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True})  # the session ends at NOW + 30 d
    shorter = s.refresh(s.issued, NOW + 60, decision_id="d-3", refresh={"rotation": True, "max_session": DAY})
    assert shorter.session_exp == s.fam().session_exp == NOW + DAY
    claims = shorter.refresh_claims
    assert (claims["exp"], claims["session_exp"], claims["client_id"], claims["auth_time"]) == (
        NOW + DAY, NOW + DAY, "cli", NOW)
    access = shorter.access_claims({"sub": "alice"})
    assert (access["session_exp"], access["ttl"]["decision_id"], claims["ttl"]["decision_id"]) == (
        NOW + DAY, "d-3", "d-3")
    longer = s.refresh(shorter, NOW + 120, refresh={"rotation": True})  # 30 d again: the earlier end stays
    assert longer.session_exp == s.fam().session_exp == longer.refresh_claims["exp"] == NOW + DAY
    instant = s.refresh(longer, NOW + 180, refresh={"rotation": True, "max_session": None},
                        expires_at={"session": NOW + 3600})
    assert instant.session_exp == s.fam().session_exp == NOW + 3600


def test_a_session_end_the_claims_carry_holds_for_the_whole_family(policies: Any) -> None:
    # An upstream session end in the sign-in claims (an IdP's session_exp) caps the family, not only
    # the first token: a later refresh whose claims and decision do not repeat it never outlives it.
    store = MemoryRefreshStore()
    chain = RefreshChain(store)
    d = decided(policies, refresh={"rotation": True})
    issued = chain.start({**BASE, "session_exp": NOW + 3600}, d, NOW, client_id="c")
    assert issued.session_exp == store.family(issued.family).session_exp == NOW + 3600  # type: ignore[union-attr]
    verified = VerifiedToken(issued.refresh_claims, ISS, "ES256", None, REFRESH_TOKEN_TYPE)
    redemption = chain.redeem(verified, NOW + 60, client_id="c")
    assert redemption.context()["token"]["session_exp"] == NOW + 3600
    later = chain.rotate(redemption, BASE, d, NOW + 60)
    assert later.session_exp == later.refresh_claims["exp"] == NOW + 3600
    # and one a refresh's claims carry tightens the family too
    verified = VerifiedToken(later.refresh_claims, ISS, "ES256", None, REFRESH_TOKEN_TYPE)
    sooner = chain.rotate(chain.redeem(verified, NOW + 120, client_id="c"), {**BASE, "session_exp": NOW + 600}, d,
                          NOW + 120)
    assert sooner.session_exp == store.family(issued.family).session_exp == NOW + 600  # type: ignore[union-attr]


def test_a_token_that_is_not_rotated_is_held_to_a_tightened_session_end(policies: Any) -> None:
    s = Session(policies)  # no rotation; the token lives 7 d, the session 30 d
    same = s.refresh(s.issued, NOW + 60, refresh={"max_session": DAY})
    assert same.refresh_claims is None and same.rotated is False
    assert s.record(s.issued).expires_at == NOW + DAY  # type: ignore[union-attr]
    endless = Session(policies, refresh={"max_session": None})  # no session end: the decided lifetime alone
    endless.refresh(endless.issued, NOW + 60, refresh_ttl=DAY, refresh={"max_session": None})
    assert endless.record(endless.issued).expires_at == NOW + 60 + DAY  # type: ignore[union-attr]


def test_a_refresh_at_the_session_s_end_ends_the_family(policies: Any) -> None:
    s = Session(policies)
    with pytest.raises(IssuanceDenied) as info:  # the new decision's session limit is reached at this instant
        s.refresh(s.issued, NOW + 2 * DAY, refresh={"max_session": 2 * DAY})
    assert (info.value.description, info.value.end_session) == (
        "the session has reached its absolute limit; sign in again", True)
    assert (s.fam().revoked_at, s.fam().revoked_reason) == (NOW + 2 * DAY, "session reached its absolute limit")


def test_a_refresh_decision_granting_no_refresh_token_ends_the_presented_one(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True})
    none = s.refresh(s.issued, NOW + 60, refresh_ttl=0)
    assert none.refresh_claims is None and none.rotated is False
    assert refusal(s.redeem, s.issued, NOW + 60) == ("expired", "refresh token expired")
    one = Session(policies, refresh={"rotation": True})
    assert one.refresh(one.issued, NOW + 60, refresh_ttl=1).refresh_claims["exp"] == NOW + 61


def test_a_lifetime_that_only_ends_with_the_session_is_not_stricter(policies: Any) -> None:
    # Signed in 20 days ago: the session ends in 10 days, the first token lives 7 of them. Six days
    # later the evaluator cuts the 7-day lifetime to the 4 days left: that is not a stricter decision,
    # so the new token lives to the session's end, past the presented token's.
    s = Session(policies, auth_time=NOW - 20 * DAY, refresh={"rotation": True})
    assert s.issued.refresh_claims["exp"] == NOW + 7 * DAY
    assert s.refresh(s.issued, NOW + 6 * DAY, refresh_ttl=4 * DAY).refresh_claims["exp"] == NOW + 10 * DAY


def test_once_a_family_rotates_every_later_token_is_single_use_too(policies: Any) -> None:
    s = Session(policies, refresh={"rotation": True})  # a confidential client
    second = s.refresh(s.issued, NOW + 60, refresh={"rotation": False})
    third = s.refresh(second, NOW + 120, refresh={"rotation": False})
    assert second.rotated and third.rotated
    assert s.record(second).successor == third.refresh_claims["jti"]  # type: ignore[union-attr]
    t = Session(policies)  # not rotating from sign-in: a later decision may turn it on
    assert t.refresh(t.issued, NOW + 60, refresh={"rotation": True}).rotated
    bound = Session(policies, public=True, cnf={"jkt": "t"})  # a public client bound to a key need not rotate
    assert bound.refresh(bound.issued, NOW + 60, {"dpop_jkt": "t"}).rotated is False


@pytest.mark.parametrize("decided_grace, chain_grace, kept", [
    (None, 30, 30),  # a decision from a service that does not send refresh.reuse_grace: the chain's
    (5, 30, 5), (0, 30, 0), (3600, 0, 300)])
def test_the_reuse_grace_is_the_decision_s_else_the_chain_s_at_most_300_seconds(
        policies: Any, decided_grace: int | None, chain_grace: int, kept: int) -> None:
    d = decided(policies)
    if decided_grace is None:
        del d["refresh"]["reuse_grace"]
    else:
        d["refresh"]["reuse_grace"] = decided_grace
    store = MemoryRefreshStore()
    issued = RefreshChain(store, reuse_grace=chain_grace).start(BASE, d, NOW, client_id="c")
    assert store.token(issued.refresh_claims["jti"]).grace == kept  # type: ignore[union-attr]


def test_the_chain_s_own_grace_is_none_by_default_and_at_most_300_seconds() -> None:
    assert RefreshChain(MemoryRefreshStore()).reuse_grace == 0
    assert RefreshChain(MemoryRefreshStore(), reuse_grace=300).reuse_grace == 300
    for bad in (-1, 301):
        with pytest.raises(ValueError, match="reuse_grace must be between 0 and 300 seconds"):
            RefreshChain(MemoryRefreshStore(), reuse_grace=bad)


def test_the_refresh_context_carries_the_session_s_sign_in_and_its_current_end(policies: Any) -> None:
    s = Session(policies, auth_time=NOW - 3600)
    token = token_context(s.issued.refresh_claims)
    assert token["session_exp"] == NOW - 3600 + 30 * DAY
    assert s.redeem(s.issued, NOW + 60).context() == {
        "user": {"auth_time": NOW - 3600}, "token": token, "grant": {"type": "refresh_token"}}
    s.store.tighten_session(s.family, NOW + DAY)  # moved earlier since the token was minted: the family's counts
    assert s.redeem(s.issued, NOW + 60).context()["token"] == {**token, "session_exp": NOW + DAY}
    # a token minted with an earlier end than its family's (by an older issuer, say) keeps its own
    older = replace(s.issued, refresh_claims={**s.issued.refresh_claims, "session_exp": NOW + 600})
    assert s.redeem(older, NOW + 60).context()["token"]["session_exp"] == NOW + 600
    endless = Session(policies, refresh={"max_session": None})
    assert "session_exp" not in endless.redeem(endless.issued, NOW + 60).context()["token"]
    endless.store.tighten_session(endless.family, NOW + DAY)  # a session given an end after the token was minted
    assert endless.redeem(endless.issued, NOW + 60).context()["token"]["session_exp"] == NOW + DAY


def test_the_memory_store_only_tightens_and_keeps_the_first_revocation() -> None:
    store = MemoryRefreshStore()
    family = Family("f", "alice", "c", NOW, None, NOW)
    store.create_family(family)
    with pytest.raises(ValueError, match="^family id already exists$"):
        store.create_family(family)
    for end, kept in ((NOW + 100, NOW + 100), (NOW + 200, NOW + 100), (NOW + 50, NOW + 50)):
        store.tighten_session("f", end)
        assert store.family("f").session_exp == kept  # type: ignore[union-attr]
    store.add_token(RefreshRecord("t", "f", NOW, NOW + 100, 100, rotation=True))
    for expiry, kept in ((NOW + 200, NOW + 100), (NOW + 50, NOW + 50)):
        store.tighten_token("t", expiry)
        assert store.token("t").expires_at == kept  # type: ignore[union-attr]
    clone = store.copy()  # an independent store with the same state
    assert clone.consume("t", NOW + 10, "u") and not clone.consume("t", NOW + 11, "v")
    assert store.token("t").successor is None and clone.token("t").successor == "u"  # type: ignore[union-attr]
    store.revoke_family("unknown", NOW, "nothing to revoke")
    store.revoke_family("f", NOW + 1, "refresh token reuse")
    store.revoke_family("f", NOW + 2, "denied by policy")
    assert (store.family("f").revoked_at, store.family("f").revoked_reason) == (  # type: ignore[union-attr]
        NOW + 1, "refresh token reuse")
    assert not clone.is_revoked("f") and clone.family("f") == replace(family, session_exp=NOW + 50)


def test_verification_is_fast_enough() -> None:
    v, tok = verifier(), token()
    start = time.perf_counter()
    for _ in range(200):
        v.verify(tok, NOW)
    assert (time.perf_counter() - start) / 200 < 0.005
