"""`subject_token` in decide requests: verified claims drive the decision, and nothing else can set them."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from jsonschema import Draft202012Validator
from server_fixtures.helpers import (POLICIES, REPO, client, ec_key, hand_made_token, iter_lines, metric_total,
                                     public_pem, rsa_key, serve_command)
from starlette.testclient import TestClient

from ttlpolicy.server import ConfigError, Settings, create_app, load_settings
from ttlpolicy.tokens import public_jwk

ISS = "https://id.example.com"
# Tokens are verified at the real time, so they are minted around it; decisions use AT.
NOW = int(time.time())
AT = "2025-03-04T10:00:00Z"
PROBLEM = "application/problem+json"
RSA_KEY, EC_KEY, OTHER_EC_KEY = rsa_key(), ec_key(), ec_key()

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
"""

# Relative key paths: they resolve against this file's directory, not the working directory.
CONFIG = f"""
policies: policies
reload: {{watch: false}}
decision_log: {{sink: off}}
subject_tokens:
  issuers:
    - issuer: {ISS}
      audience: [ttlpolicy, api]
      public_keys: [keys/idp-rsa.pem]
      jwks_file: keys/idp-jwks.json
      algorithms: [RS256, ES256]
      leeway: 0
"""


def claims(**extra: Any) -> dict[str, Any]:
    # valid for hours: NOW is when this module was imported, and a loaded suite takes many minutes
    return {"iss": ISS, "aud": "ttlpolicy", "sub": "alice", "jti": "jti-1", "iat": NOW - 60, "exp": NOW + 4 * 3600,
            **extra}


def es256(key: Any = EC_KEY, **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm="ES256", headers={"kid": "ec-1"})


def rs256(**extra: Any) -> str:
    return jwt.encode(claims(**extra), RSA_KEY, algorithm="RS256")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subject")
    (root / "policies").mkdir()
    (root / "policies" / "claims.yaml").write_text(CLAIMS_POLICY)
    (root / "keys").mkdir()
    (root / "keys" / "idp-rsa.pem").write_bytes(public_pem(RSA_KEY))
    (root / "keys" / "idp-jwks.json").write_text(json.dumps({"keys": [public_jwk(EC_KEY, kid="ec-1",
                                                                                   alg="ES256")]}))
    (root / "serve.yaml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def api(setup: Path) -> Iterator[TestClient]:
    settings = load_settings(setup / "serve.yaml", environ={})
    settings = settings.model_copy(update={"policies": setup / "policies"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def decide(api: TestClient, token: str, **body: Any) -> Any:
    return api.post("/v1/decide", json={"context": {}, "now": AT, "subject_token": token, **body})


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code and body["type"].endswith("/" + code) and body["status"] == status
    return body


# -- claims drive the decision -------------------------------------------------------------------

def test_verified_claims_drive_the_decision(api: TestClient) -> None:
    strong = decide(api, es256(amr=["pwd", "otp", "mfa"], cnf={"jkt": "thumbprint"})).json()
    assert strong["matched"] == ["dpop-bound", "mfa-from-amr"]
    assert (strong["access_ttl"], strong["refresh_ttl"]) == (1800, 14400)  # MFA lengthens, DPoP binding too
    weak = decide(api, rs256(amr=["pwd"], aud=["api", "other"])).json()  # RSA from PEM, an audience list
    assert weak["matched"] == [] and (weak["access_ttl"], weak["refresh_ttl"]) == (600, 3600)
    plain = api.post("/v1/decide", json={"context": {}, "now": AT}).json()  # no token: policy defaults
    assert plain["matched"] == []


def test_the_token_is_verified_at_the_real_time_whatever_now_says(api: TestClient) -> None:
    live = es256(amr=["mfa"])
    assert decide(api, live).json()["matched"] == ["mfa-from-amr"]  # a past `now` for the policy
    assert decide(api, live, now="2031-01-01T00:00:00Z").status_code == 200  # a what-if in the future
    expired = es256(amr=["mfa"], iat=NOW - 7200, exp=NOW - 3600)
    back_dated = datetime.fromtimestamp(NOW - 5400, timezone.utc).isoformat()  # when it was still valid
    body = assert_problem(decide(api, expired, now=back_dated), 422, "invalid-subject-token")
    assert body["reason"] == "expired"


# -- invalid tokens are 422 problems that say why ------------------------------------------------

INVALID = [
    ("expired", lambda: es256(amr=["mfa"], exp=NOW - 1, iat=NOW - 600), "expired"),
    ("wrong issuer", lambda: es256(amr=["mfa"], iss="https://evil.example"), "unknown_issuer"),
    ("wrong audience", lambda: es256(amr=["mfa"], aud="someone-else"), "audience"),
    ("bad signature", lambda: es256(OTHER_EC_KEY, amr=["mfa"], cnf={"jkt": "x"}), "signature"),
    ("alg none", lambda: hand_made_token({"alg": "none", "typ": "JWT"}, claims(amr=["mfa"]), None), "algorithm"),
    ("HS256 keyed with the public key", lambda: hand_made_token({"alg": "HS256", "typ": "JWT"},
                                                                claims(amr=["mfa"]), public_pem(RSA_KEY)),
     "algorithm"),
    ("not a JWT", lambda: "not-a-jwt", "malformed"),
    ("amr of the wrong type", lambda: es256(amr="mfa"), "claim_type"),
]


@pytest.mark.parametrize("token_factory, reason", [(f, r) for _, f, r in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_subject_token_is_422_with_the_reason(api: TestClient, token_factory: Any, reason: str) -> None:
    token = token_factory()
    before = metric_total(api.get("/metrics").text, "ttlpolicy_subject_token_failures_total")
    response = decide(api, token)
    body = assert_problem(response, 422, "invalid-subject-token")
    assert body["reason"] == reason and body["detail"] and body["policy"] == "claims"
    assert "www-authenticate" not in response.headers  # the caller's own credentials are fine
    assert not [part for part in (token, *token.split(".")) if len(part) > 16 and part in response.text]
    metrics = api.get("/metrics").text
    assert metric_total(metrics, "ttlpolicy_subject_token_failures_total") == before + 1
    assert f'ttlpolicy_subject_token_failures_total{{reason="{reason}"}}' in metrics


@pytest.mark.parametrize("value, code", [(123, "invalid-field"), ("", "invalid-field"), (None, "invalid-field"),
                                         ("a" * 9000, "too-long")])
def test_subject_token_of_the_wrong_shape_is_400(api: TestClient, value: Any, code: str) -> None:
    body = assert_problem(decide(api, value), 400, "invalid-request")
    assert body["errors"] == [{"path": "subject_token", "code": code, "message": body["errors"][0]["message"]}]
    assert "aaaa" not in body["detail"]


def test_subject_token_without_configured_issuers() -> None:
    with client(policies=POLICIES) as plain:
        body = assert_problem(plain.post("/v1/decide", json={"context": {}, "subject_token": es256()}),
                              422, "subject-token-not-configured")
        assert "subject_tokens" in body["detail"]


# -- the caller cannot forge token.* -------------------------------------------------------------

@pytest.mark.parametrize("with_token", [False, True])
def test_context_token_sent_by_the_caller_is_refused(api: TestClient, with_token: bool) -> None:
    forged = {"token": {"amr": ["mfa"], "binding": "dpop"}, "user": {"risk": 2}}
    body = {"context": forged, "now": AT, **({"subject_token": es256()} if with_token else {})}
    problem = assert_problem(api.post("/v1/decide", json=body), 422, "invalid-context")
    errors = {(e["path"], e["code"]): e["message"] for e in problem["errors"]}
    assert errors[("token", "context-forbidden-attribute")] == "token.* comes only from a verified subject_token"
    assert ("user.risk", "context-value") in errors  # every other offending field is still listed


# -- batch -----------------------------------------------------------------------------------------

def test_batch_answers_each_subject_token_on_its_own(api: TestClient) -> None:
    requests = [{"context": {}, "now": AT, "subject_token": es256(amr=["mfa"])},
                {"context": {}, "now": AT, "subject_token": es256(amr=["mfa"], aud="nope")},
                {"context": {"token": {"amr": ["mfa"]}}, "now": AT},
                {"context": {}, "now": AT}]
    results = api.post("/v1/decide/batch", json={"requests": requests}).json()["results"]
    assert [r["status"] for r in results] == [200, 422, 422, 200]
    assert results[0]["decision"]["matched"] == ["mfa-from-amr"] and results[0]["decision"]["access_ttl"] == 1800
    assert results[1]["problem"]["code"] == "invalid-subject-token" and results[1]["problem"]["reason"] == "audience"
    assert results[2]["problem"]["code"] == "invalid-context"
    assert results[3]["decision"]["access_ttl"] == 600


# -- decision log --------------------------------------------------------------------------------

def test_decision_log_records_the_subject_not_the_token(setup: Path) -> None:
    log = setup / "decisions.jsonl"
    settings = load_settings(setup / "serve.yaml", environ={}, flags={
        "policies": str(setup / "policies"), "decision_log.sink": "file", "decision_log.path": str(log),
        "decision_log.salt": "pepper", "decision_log.mask": {"token.sub": "hash"}})
    token = es256(amr=["mfa"], cnf={"jkt": "thumbprint"})
    with TestClient(create_app(settings)) as test_client:
        assert decide(test_client, token).status_code == 200
        assert test_client.post("/v1/decide", json={"context": {}, "now": AT}).status_code == 200
    text = log.read_text()
    assert token not in text and token.split(".")[2] not in text and "alice" not in text
    first, second = list(iter_lines(log))
    hashed = hmac.new(b"pepper", b"alice", hashlib.sha256).hexdigest()[:16]
    assert first["subject_token"] == {"iss": ISS, "sub": hashed, "jti": "jti-1"}  # token.sub's rule covers it
    assert first["context"]["token"]["sub"] == hashed and first["context"]["token"]["binding"] == "dpop"
    assert "subject_token" not in second


# -- configuration -------------------------------------------------------------------------------

def test_key_paths_resolve_against_the_config_file(setup: Path) -> None:
    settings = load_settings(setup / "serve.yaml", environ={})
    issuer = settings.subject_tokens.issuers[0]
    assert issuer.public_keys == (setup / "keys" / "idp-rsa.pem",) and issuer.audience == ("ttlpolicy", "api")
    assert settings.subject_tokens.verifier is not None and settings.subject_tokens.verifier.issuers == [ISS]
    worker = Settings.model_validate_json(settings.model_dump_json())  # how --workers > 1 hands them over
    assert worker.subject_tokens.verifier is not None and worker.subject_tokens.issuers == settings.subject_tokens.issuers
    single = load_settings(environ={"TTLPOLICY_SUBJECT_TOKENS__ISSUERS": json.dumps([
        {"issuer": ISS, "audience": "api", "jwks_file": str(setup / "keys" / "idp-jwks.json")}])})
    assert single.subject_tokens.issuers[0].audience == ("api",)


@pytest.mark.parametrize("issuer, message", [
    ({"public_keys": ["keys/missing.pem"]}, "cannot read"),
    ({"public_keys": ["serve.yaml"]}, "not a PEM public key"),
    ({"jwks_file": "keys/idp-jwks.json", "algorithms": ["RS256"]}, "no key can verify"),
    ({"jwks_file": "keys/idp-jwks.json", "algorithms": ["HS256"]}, "unsupported algorithms"),
    ({}, "public_keys"),
    ({"jwks_file": "keys/idp-jwks.json", "audience": []}, "audience"),
    ({"jwks_file": "keys/idp-jwks.json", "leeway": 3600}, "leeway"),
    ({"jwks_file": "keys/idp-jwks.json", "surprise": 1}, "surprise"),
])
def test_bad_subject_token_settings_are_config_errors(setup: Path, issuer: dict[str, Any], message: str) -> None:
    config = setup / "bad.yaml"
    config.write_text(json.dumps({"subject_tokens": {"issuers": [{"issuer": ISS, "audience": "api", **issuer}]}}))
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_serve_exits_2_on_an_unreadable_subject_token_key(setup: Path) -> None:
    config = setup / "broken.yaml"
    config.write_text(f"subject_tokens: {{issuers: [{{issuer: {ISS}, audience: api, public_keys: [nope.pem]}}]}}\n")
    result = subprocess.run(serve_command("--config", str(config), "--port", "1"), cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "subject_tokens.issuers.0" in result.stderr and "nope.pem" in result.stderr


# -- OpenAPI -------------------------------------------------------------------------------------

def test_openapi_documents_subject_tokens_and_their_problems(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    request = document["components"]["schemas"]["DecideRequest"]
    assert request["properties"]["subject_token"]["maxLength"] == 8192
    declared = document["paths"]["/v1/decide"]["post"]["responses"]["422"]
    assert "invalid-subject-token" in declared["description"]
    schema = {**declared["content"][PROBLEM]["schema"], "components": document["components"]}
    for response in (decide(api, es256(aud="x")), decide(api, "x.y.z"),
                     api.post("/v1/decide", json={"context": {"token": {}}})):
        assert response.status_code == 422
        assert not list(Draft202012Validator(schema).iter_errors(response.json()))
    Draft202012Validator({**request, "components": document["components"]}).validate(
        {"context": {}, "subject_token": es256()})


# -- a heavy batch does not stall the event loop (issue 14, defect 7) -----------------------------

def test_a_batch_verifies_its_tokens_off_the_event_loop_so_probes_are_answered(setup: Path) -> None:
    """Verification is held inside the worker until /healthz has been answered: had it run on the
    event loop, the probe could not be served meanwhile and the hold would time out."""
    import asyncio
    import threading

    import httpx

    settings = load_settings(setup / "serve.yaml", environ={}).model_copy(update={"policies": setup / "policies"})
    app = create_app(settings)
    service = app.state.service
    real_verify = service.subject_tokens.verify
    release, verifying = threading.Event(), threading.Event()
    seen: list[tuple[bool, bool]] = []  # (ran on a thread without an event loop, released in time)

    def held_verify(token: str, now: Any = None, **kw: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        verifying.set()
        seen.append((not on_loop, release.wait(timeout=5) if not seen else True))  # hold the first one
        return real_verify(token, now, **kw)

    service.subject_tokens = type("Held", (), {"verify": staticmethod(held_verify)})()
    tokens = [es256(amr=["mfa"], jti=f"j{i}") for i in range(20)]

    async def scenario() -> tuple[Any, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            batch = asyncio.create_task(http.post("/v1/decide/batch", json={"requests": [
                {"context": {}, "now": AT, "subject_token": t} for t in tokens]}))
            while not verifying.is_set():
                await asyncio.sleep(0.01)
            health = await http.get("/healthz")
            release.set()
            return health, await batch

    health, batch = asyncio.run(scenario())
    assert health.status_code == 200
    assert batch.status_code == 200
    assert [r["status"] for r in batch.json()["results"]] == [200] * len(tokens)
    assert len(seen) == len(tokens)  # each distinct token verified once
    assert all(off_loop and released for off_loop, released in seen), seen


def test_a_token_repeated_in_a_batch_is_verified_once(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    service = api.app.state.service  # type: ignore[attr-defined]
    calls: list[str] = []
    real = service.subject_tokens.verify
    monkeypatch.setattr(service, "subject_tokens", type("Counting", (), {"verify": staticmethod(
        lambda token, now=None, **kw: calls.append(token) or real(token, now, **kw))})())
    token = es256(amr=["mfa"])
    response = api.post("/v1/decide/batch", json={"requests": [{"context": {}, "now": AT, "subject_token": token}] * 50})
    assert [r["decision"]["matched"] for r in response.json()["results"]] == [["mfa-from-amr"]] * 50
    assert calls == [token]


def test_a_token_seen_again_is_not_verified_again_until_it_expires(api: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = api.app.state.service.subject_tokens  # type: ignore[attr-defined]
    calls: list[str] = []
    real = cache.verifier.verify
    monkeypatch.setattr(cache.verifier, "verify", lambda token, now=None, **kw: calls.append(token) or real(token, now, **kw))
    token = es256(amr=["mfa"], jti="seen-again")
    for _ in range(3):
        assert decide(api, token).json()["matched"] == ["mfa-from-amr"]
    assert calls == [token]
    expired = es256(jti="expired-soon", exp=NOW - 1)  # leeway 0: refused, and refused again in full
    for _ in range(2):
        assert_problem(decide(api, expired), 422, "invalid-subject-token")
    assert calls == [token, expired, expired]
