"""Caller credentials: API keys and JWTs, RFC 6750 challenges, scopes, and the JWT cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from server_fixtures.helpers import b64url, client, ec_key, hand_made_token, public_pem, rsa_key
from starlette.testclient import TestClient

from ttlpolicy.server.auth import AuthError, Authenticator, hash_key
from ttlpolicy.server.config import AuthSettings, ConfigError

ISSUER, AUDIENCE = "https://idp.example.com", "ttlpolicy"
DECIDE_KEY, ADMIN_KEY = "decide-key-0123456789", "admin-key-9876543210"
RSA, EC, OTHER_RSA = rsa_key(), ec_key(), rsa_key()


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    (directory / "rsa.pem").write_bytes(public_pem(RSA))
    (directory / "ec.pem").write_bytes(public_pem(EC))
    return directory


def auth_settings(keys_dir: Path, **jwt_extra: Any) -> dict[str, Any]:
    return {"api_keys": [{"name": "issuer-a", "hash": hash_key(DECIDE_KEY), "scopes": ["decide"]},
                         {"name": "ops", "hash": hash_key(ADMIN_KEY), "scopes": ["admin"]}],
            "jwt": {"issuer": ISSUER, "audience": AUDIENCE,
                    "public_keys": [str(keys_dir / "rsa.pem"), str(keys_dir / "ec.pem")], **jwt_extra}}


@pytest.fixture(scope="module")
def api(keys_dir: Path) -> Iterator[TestClient]:
    with client(auth=auth_settings(keys_dir)) as test_client:
        yield test_client


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {"iss": ISSUER, "aud": AUDIENCE, "sub": "issuer-service", "exp": now + 300, "nbf": now - 10,
           "iat": now, "scope": "decide"}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def token(key: Any = RSA, algorithm: str = "RS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm)


def decide(api: TestClient, headers: dict[str, str]) -> Any:
    return api.post("/v1/decide", json={"context": {}}, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def assert_401(response: Any, error: str | None, description: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"
    challenge = response.headers["www-authenticate"]
    if error is None:
        assert challenge == 'Bearer realm="ttlpolicy"'
    else:
        assert challenge == f'Bearer realm="ttlpolicy", error="{error}", error_description="{description}"'


# -- 401 and 403 ------------------------------------------------------------------------------------

def test_missing_credentials_has_no_error_code(api: TestClient) -> None:
    assert_401(decide(api, {}), None)
    assert_401(decide(api, {"Authorization": "Basic dXNlcjpwYXNz"}), None)  # unsupported scheme


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b"])
def test_malformed_bearer_is_invalid_token(api: TestClient, header: str) -> None:
    assert_401(decide(api, {"Authorization": header}), "invalid_token", "malformed bearer token")


def test_wrong_api_key(api: TestClient) -> None:
    assert_401(decide(api, bearer("not-a-key")), "invalid_token", "unknown API key")
    assert_401(decide(api, {"X-API-Key": "not-a-key"}), "invalid_token", "unknown API key")


def test_malformed_jwt(api: TestClient) -> None:
    assert_401(decide(api, bearer("abc.def.ghi")), "invalid_token", "malformed token")


# Instants as offsets from the moment the test runs (a value computed at import could be
# minutes stale by the time a loaded machine reaches the test).
@pytest.mark.parametrize("overrides, description", [
    ({"exp": -120}, "token expired"),
    ({"iss": "https://evil.example.com"}, "token is from an unknown issuer"),
    ({"aud": "someone-else"}, "token is not for this audience"),
    ({"nbf": 600}, "token not yet valid"),
    ({"exp": None}, "token lacks the required claim 'exp'"),
    ({"iss": None}, "token has no iss claim"),
    # NumericDates are numbers inside the calendar: never a string, never beyond the year 9000
    ({"exp": "+300"}, "claim 'exp' must be a NumericDate (seconds since the epoch, before "
                                           "the year 9000)"),
    ({"exp": 1e300}, "claim 'exp' must be a NumericDate (seconds since the epoch, before the year 9000)"),
    ({"iat": "yesterday"}, "claim 'iat' must be a NumericDate (seconds since the epoch, before the year 9000)"),
])
def test_bad_claims(api: TestClient, overrides: dict[str, Any], description: str) -> None:
    now = int(time.time())
    relative = {"exp": lambda v: now + v, "nbf": lambda v: now + v}
    for claim, value in overrides.items():
        if claim in relative and type(value) is int:
            overrides = {**overrides, claim: relative[claim](value)}
        elif value == "+300":  # the right instant, as a string
            overrides = {**overrides, claim: str(now + 300)}
    assert_401(decide(api, bearer(token(**overrides))), "invalid_token", description)


def test_expiry_within_leeway_is_accepted(api: TestClient) -> None:
    assert decide(api, bearer(token(exp=int(time.time()) - 5))).status_code == 200


def test_alg_none_is_refused(api: TestClient) -> None:
    unsigned = hand_made_token({"alg": "none", "typ": "JWT"}, claims(), None)
    assert_401(decide(api, bearer(unsigned)), "invalid_token", "token algorithm 'none' is not allowed")


def test_hs256_signed_with_the_rsa_public_key_is_refused(api: TestClient) -> None:
    forged = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims(scope="decide admin"), public_pem(RSA))
    assert_401(decide(api, bearer(forged)), "invalid_token", "token algorithm 'HS256' is not allowed")


@pytest.mark.parametrize("exp", ["1e400", "-1e400", "1" + "0" * 5000, "NaN"])
def test_numeric_claims_beyond_float_are_401_not_500(api: TestClient, exp: str) -> None:
    # JSON parsers read 1e400 as infinity; PyJWT's own exp check raised OverflowError on it (a 500).
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = json.dumps(claims(exp=12345)).replace("12345", exp)
    signing_input = f"{header}.{b64url(body.encode())}"
    signature = RSA.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    response = decide(api, bearer(f"{signing_input}.{b64url(signature)}"))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_token_signed_by_an_unknown_key_is_refused(api: TestClient) -> None:
    assert_401(decide(api, bearer(token(OTHER_RSA))), "invalid_token", "bad signature")


def test_insufficient_scope_is_403(api: TestClient) -> None:
    for headers in (bearer(ADMIN_KEY), bearer(token(scope="profile"))):
        response = decide(api, headers)
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "insufficient-scope"
        assert response.headers["www-authenticate"] == (
            'Bearer realm="ttlpolicy", error="insufficient_scope", error_description="requires scope decide", '
            'scope="decide"')
    assert api.post("/v1/reload", headers=bearer(DECIDE_KEY)).status_code == 403


# -- accepted credentials ------------------------------------------------------------------------------

def test_valid_api_key_in_both_headers(api: TestClient) -> None:
    assert decide(api, bearer(DECIDE_KEY)).status_code == 200
    assert decide(api, {"X-API-Key": DECIDE_KEY}).status_code == 200
    assert api.post("/v1/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200


@pytest.mark.parametrize("key, algorithm", [(RSA, "RS256"), (EC, "ES256")])
def test_valid_jwt(api: TestClient, key: Any, algorithm: str) -> None:
    assert decide(api, bearer(token(key, algorithm))).status_code == 200


def test_scp_claim_list_is_read(api: TestClient) -> None:
    assert decide(api, bearer(token(scope=None, scp=["decide"]))).status_code == 200


def test_unauthenticated_endpoints_stay_open(api: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert api.get(path).status_code == 200
    assert_401(api.get("/v1/policies"), None)
    assert api.get("/v1/policies", headers=bearer(DECIDE_KEY)).status_code == 200
    assert api.get("/v1/policies/machine", headers=bearer(ADMIN_KEY)).status_code == 200


def test_metrics_auth_is_optional(keys_dir: Path) -> None:
    settings = {**auth_settings(keys_dir), "metrics_require_auth": True}
    with client(auth=settings) as test_client:
        assert_401(test_client.get("/metrics"), None)
        assert test_client.get("/metrics", headers=bearer(DECIDE_KEY)).status_code == 200


def test_auth_comes_before_reading_the_body(api: TestClient) -> None:
    response = api.post("/v1/decide", content=b"not json", headers={"content-type": "text/plain"})
    assert response.status_code == 401


# -- the authenticator itself ----------------------------------------------------------------------

def test_jwt_is_cached_until_expiry(keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(AuthSettings.model_validate(auth_settings(keys_dir)))
    exp = int(time.time()) + 60
    value = token(exp=exp)
    first = auth.authenticate(f"Bearer {value}", None)
    calls: list[int] = []
    later = claims(exp=exp + 3600)

    def counting_decode(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        return dict(later)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert auth.authenticate(f"Bearer {value}", None) == first
    assert calls == []  # served from the cache
    monkeypatch.setattr(time, "time", lambda: exp + 31.0)  # past exp + leeway: verified again
    auth.authenticate(f"Bearer {value}", None)
    assert calls


def test_jwt_cache_is_bounded(keys_dir: Path) -> None:
    auth = Authenticator(AuthSettings.model_validate(auth_settings(keys_dir, cache_size=2)))
    for i in range(5):
        auth.authenticate(f"Bearer {token(sub=f's{i}')}", None)
    assert len(auth._jwt._cache) == 2  # type: ignore[union-attr]


def test_identity_from_sub_or_client_id(keys_dir: Path) -> None:
    auth = Authenticator(AuthSettings.model_validate(auth_settings(keys_dir)))
    assert auth.authenticate(f"Bearer {token(sub='alice')}", None).id == "alice"
    assert auth.authenticate(f"Bearer {token(sub=None, client_id='svc')}", None).id == "svc"
    assert auth.authenticate(None, DECIDE_KEY).id == "issuer-a"


def test_jwks_file_with_kid(tmp_path: Path) -> None:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key()))
    oct_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}, oct_key]}))
    auth = Authenticator(AuthSettings.model_validate(
        {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(tmp_path / "jwks.json")}}))
    signed = jwt.encode(claims(), RSA, algorithm="RS256", headers={"kid": "k1"})
    assert auth.authenticate(f"Bearer {signed}", None).scopes == frozenset({"decide"})
    forged = hand_made_token({"alg": "HS256", "kid": "hmac"}, claims(), b"secret")
    with pytest.raises(AuthError):
        auth.authenticate(f"Bearer {forged}", None)


def test_an_unknown_kid_is_refused_when_the_keys_have_ids(tmp_path: Path) -> None:
    # The caller verifier used to try every key when the kid matched none; the one verifier
    # refuses it, as it always did for subject tokens.
    jwks = {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key())), "kid": "k1"},
                     {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_RSA.public_key())), "kid": "k2"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    auth = Authenticator(AuthSettings.model_validate(
        {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(tmp_path / "jwks.json")}}))
    assert auth.authenticate(f"Bearer {jwt.encode(claims(), RSA, 'RS256', headers={'kid': 'k1'})}", None)
    for kid in ("k3", "", "K1"):
        with pytest.raises(AuthError) as err:
            auth.authenticate(f"Bearer {jwt.encode(claims(), RSA, 'RS256', headers={'kid': kid})}", None)
        assert err.value.description == "no trusted key for this token (unknown kid or algorithm)"
    with pytest.raises(AuthError, match="bad signature"):  # the kid picks the key; the signature must fit it
        auth.authenticate(f"Bearer {jwt.encode(claims(), RSA, 'RS256', headers={'kid': 'k2'})}", None)


def test_callers_and_subject_tokens_share_one_verifier(keys_dir: Path) -> None:
    from ttlpolicy.tokens import TokenVerifier

    auth = Authenticator(AuthSettings.model_validate(auth_settings(keys_dir)))
    assert isinstance(auth._jwt._verifier, TokenVerifier)  # type: ignore[union-attr]


def test_hmac_algorithms_cannot_be_configured(keys_dir: Path) -> None:
    with pytest.raises(ValueError, match="unsupported algorithms"):
        AuthSettings.model_validate(auth_settings(keys_dir, algorithms=["RS256", "HS256"]))


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    settings = AuthSettings.model_validate({"jwt": {"issuer": ISSUER, "audience": AUDIENCE,
                                                    "public_keys": [str(tmp_path / "missing.pem")]}})
    with pytest.raises(ConfigError, match="cannot read"):
        Authenticator(settings)


def test_api_keys_are_stored_as_hashes_only() -> None:
    with pytest.raises(ValueError, match="sha256"):
        AuthSettings.model_validate({"api_keys": [{"name": "x", "hash": DECIDE_KEY}]})
