"""Revocation: every kind, bulk "issued before", idempotency, lifting and its audit, listing,
the check endpoint, subject tokens and the SDK's TokenVerifier, refresh families on the store."""

from __future__ import annotations


import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from server_fixtures.helpers import POLICIES, ec_key, metric_total, public_pem
from starlette.testclient import TestClient

from ttlpolicy.server import Settings, create_app
from ttlpolicy.server.auth import hash_key
from ttlpolicy.state import open_store
from ttlpolicy.state.revocation import Revocations, TokenFacts
from ttlpolicy.state.runtime import StateRuntime

ISS = "https://id.example.com"
KEY = ec_key()
NOW = int(time.time())
KEYS = {"soc": ("soc-key", ["revoke"]), "issuer": ("issuer-key", ["decide"]), "root": ("root-key", ["admin"])}


def token(**extra: Any) -> str:
    claims = {"iss": ISS, "aud": "ttlpolicy", "sub": "alice", "jti": "jti-1", "sid": "fam-1", "client_id": "web",
              "tenant": "acme", "iat": NOW - 60, "exp": NOW + 4 * 3600, **extra}  # hours: NOW is the import
    return jwt.encode(claims, KEY, algorithm="ES256")


def auth(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name][0]}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "idp.pem").write_bytes(public_pem(KEY))
    settings = Settings.model_validate({
        "policies": POLICIES, "decision_log": {"sink": "off"}, "reload": {"watch": False},
        "state": {"url": f"sqlite://{tmp_path}/state.db"},
        "auth": {"api_keys": [{"name": n, "hash": hash_key(k), "scopes": s} for n, (k, s) in KEYS.items()]},
        "subject_tokens": {"issuers": [{"issuer": ISS, "audience": "ttlpolicy", "public_keys": [str(tmp_path / "idp.pem")],
                                        "algorithms": ["ES256"]}]}})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def check(api: TestClient, **body: Any) -> Any:
    response = api.post("/v1/tokens/check", json=body, headers=auth("issuer"))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("kind, value", [("token", "jti-1"), ("family", "fam-1"), ("subject", "alice"),
                                         ("client", "web"), ("tenant", "acme"), ("all", None)])
def test_each_kind_revokes_the_token(api: TestClient, kind: str, value: str | None) -> None:
    assert check(api, token=token())["active"] is True
    body = {"kind": kind, "reason": "INC-42"} | ({"value": value} if value else {})
    response = api.post("/v1/revocations", json=body, headers=auth("soc"))
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["created"] is True and entry["created_by"] == "api_key:soc" and entry["status"] == "active"
    answer = check(api, token=token())
    assert answer["active"] is False and answer["reason"] == "revoked"
    assert answer["revocation"] == {"id": entry["id"], "kind": kind, "reason": "INC-42"}
    # Another user's token (another jti, family, client, tenant) is untouched, unless everything was revoked.
    other = token(sub="bob", jti="jti-2", sid="fam-2", client_id="cli", tenant="other")
    assert check(api, token=other)["active"] is (kind != "all")


def test_issued_before_spares_newer_tokens(api: TestClient) -> None:
    cutoff = NOW - 30
    body = {"kind": "subject", "value": "alice", "reason": "password reset",
            "issued_before": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff))}
    assert api.post("/v1/revocations", json=body, headers=auth("soc")).status_code == 201
    assert check(api, token=token(iat=cutoff - 1))["active"] is False
    assert check(api, token=token(iat=cutoff))["active"] is False  # at the moment itself: revoked (fail safe)
    assert check(api, token=token(iat=cutoff + 5))["active"] is True
    # The check by claims, without a token: unknown issue time counts as revoked.
    assert check(api, sub="alice")["active"] is False
    assert check(api, sub="alice", iat=cutoff + 5)["active"] is True


def test_bulk_is_all_or_nothing_and_idempotent(api: TestClient) -> None:
    items = [{"kind": "token", "value": f"jti-{i}", "reason": "breach"} for i in range(50)]
    bad = api.post("/v1/revocations", json={"revocations": [*items, {"kind": "user", "value": "x", "reason": "r"}]},
                   headers=auth("soc"))
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{"path": "revocations[50].kind", "code": "invalid-field",
                                     "message": "expected one of token, family, subject, client, tenant, all"}]
    assert api.get("/v1/revocations", headers=auth("soc")).json()["revocations"] == []  # nothing stored half-way
    first = api.post("/v1/revocations", json={"revocations": items}, headers=auth("soc"))
    assert first.status_code == 201 and all(e["created"] for e in first.json()["revocations"])
    again = api.post("/v1/revocations", json={"revocations": items}, headers=auth("soc"))
    assert again.status_code == 200 and not any(e["created"] for e in again.json()["revocations"])
    assert [e["id"] for e in again.json()["revocations"]] == [e["id"] for e in first.json()["revocations"]]
    huge = api.post("/v1/revocations", json={"revocations": items * 21}, headers=auth("soc"))
    assert huge.status_code == 400 and huge.json()["errors"][0]["code"] == "too-many-items"


def test_revoking_the_same_selector_again_is_one_entry(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """"Revoke alice" run twice (a retry, two responders) keeps one entry; when the second reaches
    further (issued later) the entry is extended, never shortened; after a lift it is new again."""
    caplog.set_level(logging.INFO, logger="ttlpolicy.audit")
    body = {"kind": "subject", "value": "alice", "reason": "INC-8"}
    first = api.post("/v1/revocations", json=body, headers=auth("soc"))
    time.sleep(0.01)
    again = api.post("/v1/revocations", json=body | {"reason": "INC-8 (retry)"}, headers=auth("root"))
    assert first.status_code == 201 and again.status_code == 200
    one, two = first.json(), again.json()
    assert two["created"] is False and two["id"] == one["id"]
    assert two["reason"] == "INC-8" and two["created_by"] == "api_key:soc"  # the entry's own story stays
    from ttlpolicy.state.timefmt import to_epoch

    assert to_epoch(two["issued_before"]) > to_epoch(one["issued_before"])  # ... and it reaches the later moment
    an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3600))
    earlier = api.post("/v1/revocations", json=body | {"issued_before": an_hour_ago}, headers=auth("soc")).json()
    assert earlier["created"] is False and earlier["issued_before"] == two["issued_before"]  # never shortened
    listed = api.get("/v1/revocations", params={"status": "all"}, headers=auth("soc")).json()["revocations"]
    assert [(e["id"], e["issued_before"]) for e in listed] == [(one["id"], two["issued_before"])]
    assert any("extended subject alice" in r.getMessage() and "api_key:root" in r.getMessage()
               for r in caplog.records if r.name == "ttlpolicy.audit")
    in_one_request = api.post("/v1/revocations", json={"revocations": [body, body | {"reason": "twice"}]},
                              headers=auth("soc")).json()["revocations"]
    assert {e["id"] for e in in_one_request} == {one["id"]} and not any(e["created"] for e in in_one_request)
    api.delete(f"/v1/revocations/{one['id']}", headers=auth("root"))
    renewed = api.post("/v1/revocations", json=body, headers=auth("soc"))
    assert renewed.status_code == 201 and renewed.json()["id"] != one["id"]  # the lifted one stays as it was
    statuses = sorted(e["status"] for e in api.get("/v1/revocations", params={"status": "all"},
                                                   headers=auth("soc")).json()["revocations"])
    assert statuses == ["active", "lifted"]


def test_listing_is_filtered_and_paginated(api: TestClient) -> None:
    items = [{"kind": "subject", "value": f"user-{i:02d}", "reason": "r"} for i in range(25)]
    api.post("/v1/revocations", json={"revocations": items}, headers=auth("soc"))
    api.post("/v1/revocations", json={"kind": "client", "value": "web", "reason": "r"}, headers=auth("soc"))
    seen, cursor = [], None
    while True:
        params = {"kind": "subject", "limit": "10"} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/revocations", params=params, headers=auth("soc")).json()
        seen += [e["value"] for e in page["revocations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"user-{i:02d}" for i in range(25)] and len(seen) == 25
    one = api.get("/v1/revocations", params={"kind": "client", "value": "web"}, headers=auth("soc")).json()
    assert [e["value"] for e in one["revocations"]] == ["web"]
    for params in ({"kind": "user"}, {"limit": "0"}, {"status": "maybe"}, {"cursor": "%%%"}, {"sort": "x"}):
        response = api.get("/v1/revocations", params=params, headers=auth("soc"))
        assert response.status_code == 400, params


def test_lifting_is_audited_and_idempotent(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ttlpolicy.audit")
    created = api.post("/v1/revocations", json={"kind": "subject", "value": "alice", "reason": "INC-7"},
                       headers=auth("soc")).json()
    assert check(api, token=token())["active"] is False
    lifted = api.delete(f"/v1/revocations/{created['id']}", params={"reason": "false alarm"}, headers=auth("root"))
    assert lifted.status_code == 200
    assert lifted.json() | {} == lifted.json() and lifted.json()["status"] == "lifted"
    assert lifted.json()["lifted_by"] == "api_key:root" and lifted.json()["lift_reason"] == "false alarm"
    assert check(api, token=token())["active"] is True
    assert api.delete(f"/v1/revocations/{created['id']}", headers=auth("root")).json()["lifted_by"] == "api_key:root"
    assert api.delete("/v1/revocations/rev_nope", headers=auth("root")).status_code == 404
    history = api.get("/v1/revocations", params={"status": "lifted"}, headers=auth("soc")).json()["revocations"]
    assert [e["id"] for e in history] == [created["id"]]
    messages = [r.getMessage() for r in caplog.records if r.name == "ttlpolicy.audit"]
    assert any("revoked subject alice" in m and "api_key:soc" in m for m in messages)
    assert any("lifted subject alice" in m and "api_key:root" in m and "false alarm" in m for m in messages)


def test_scopes(api: TestClient) -> None:
    body = {"kind": "subject", "value": "alice", "reason": "r"}
    assert api.post("/v1/revocations", json=body, headers=auth("issuer")).status_code == 403
    assert api.post("/v1/revocations", json=body).status_code == 401
    assert api.post("/v1/revocations", json=body, headers=auth("root")).status_code == 201
    assert api.get("/v1/revocations", headers=auth("issuer")).status_code == 403
    assert api.post("/v1/tokens/check", json={"sub": "x"}, headers=auth("soc")).status_code == 200


@pytest.mark.parametrize("body, path", [
    ({"kind": "subject", "reason": "r"}, "value"),
    ({"kind": "subject", "value": "a"}, "reason"),
    ({"kind": "all", "value": "a", "reason": "r"}, "value"),
    ({"kind": "token", "value": "a", "reason": "r", "issued_before": "2026-01-01T00:00:00Z"}, "issued_before"),
    ({"kind": "subject", "value": "a", "reason": "r", "issued_before": "2999-01-01T00:00:00Z"}, "issued_before"),
    ({"kind": "subject", "value": "a", "reason": "r", "issued_before": "yesterday"}, "issued_before"),
    ({"kind": "token", "value": "a", "reason": "r", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"kind": "subject", "value": "a" * 600, "reason": "r"}, "value"),
    ({"kind": "subject", "value": "a", "reason": "r", "colour": "red"}, "colour"),
])
def test_bad_revocations_are_422_at_the_field(api: TestClient, body: dict[str, Any], path: str) -> None:
    response = api.post("/v1/revocations", json=body, headers=auth("soc"))
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["path"] == path


def test_check_endpoint_shapes(api: TestClient) -> None:
    form = api.post("/v1/tokens/check", content=f"token={token()}&token_type_hint=access_token",
                    headers={**auth("issuer"), "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 200
    assert form.json() | {"exp": 0, "iat": 0} == {"active": True, "iss": ISS, "sub": "alice", "client_id": "web",
                                                  "jti": "jti-1", "sid": "fam-1", "exp": 0, "iat": 0}
    assert check(api, token=token(iat=NOW - 900, exp=NOW - 120))["active"] is False  # expired: not active, reason given
    assert check(api, token="not-a-jwt") == {"active": False, "reason": "malformed"}
    for body in ({}, {"sub": ""}, {"iat": "never", "sub": "a"}, {"who": "x"}):
        assert api.post("/v1/tokens/check", json=body, headers=auth("issuer")).status_code == 400, body
    assert api.post("/v1/tokens/check", content=b"x", headers={**auth("issuer"), "content-type": "text/plain"}
                    ).status_code == 415


def test_subject_tokens_are_refused_after_revocation(api: TestClient) -> None:
    request = {"context": {"tier": "standard"}, "subject_token": token()}
    assert api.post("/v1/decide", json=request, headers=auth("issuer")).status_code == 200
    api.post("/v1/revocations", json={"kind": "family", "value": "fam-1", "reason": "reuse"}, headers=auth("soc"))
    refused = api.post("/v1/decide", json=request, headers=auth("issuer"))
    assert refused.status_code == 422 and refused.json()["reason"] == "revoked"
    assert metric_total(api.get("/metrics").text, "ttlpolicy_subject_token_failures_total") >= 1
    assert metric_total(api.get("/metrics").text, "ttlpolicy_token_checks_total") == 0


def test_the_sdk_token_verifier_consults_the_runtime(tmp_path: Path) -> None:
    from ttlpolicy.tokens import IssuerConfig, TokenInvalid, TokenVerifier, verify_key

    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"))
    verifier = TokenVerifier([IssuerConfig(ISS, ("ttlpolicy",), (verify_key(KEY.public_key()),))],
                             revocations=runtime)
    assert verifier.verify(token()).claims["sub"] == "alice"
    runtime.revocations.revoke("client", "web", reason="compromised client", by="test", now=time.time())
    with pytest.raises(TokenInvalid) as info:
        verifier.verify(token())
    assert info.value.reason == "revoked"
    runtime.close()


def test_revocations_expire_with_the_tokens_they_cover(tmp_path: Path) -> None:
    with open_store(f"sqlite://{tmp_path}/s.db") as store:
        registry = Revocations(store, retention=3600)
        now = 1_800_000_000.0
        revocation, _ = registry.revoke("token", "j", reason="r", by="t", now=now, expires_at=now + 60)
        assert revocation.expires_at == now + 60
        assert registry.check(TokenFacts(jti="j"), now + 59) is not None
        assert registry.check(TokenFacts(jti="j"), now + 60) is None
        subject, _ = registry.revoke("subject", "s", reason="r", by="t", now=now)
        assert subject.expires_at == now + 3600  # kept as long as any token issued before it can live


def _refresh_worker(url: str, jti: str, queue: Any) -> None:
    from ttlpolicy.state.refreshstore import StateRefreshStore

    with open_store(url) as store:
        queue.put(StateRefreshStore(store).consume(jti, 100, "successor-b"))


def test_refresh_family_reuse_is_seen_by_another_process(tmp_path: Path) -> None:
    """One process redeems a refresh token; a replay in another process is reuse and revokes the
    family, which the first process then sees too."""
    from ttlpolicy.state.refreshstore import StateRefreshStore
    from ttlpolicy.tokens.refresh import Family, RefreshRecord

    url = f"sqlite://{tmp_path}/s.db"
    runtime = StateRuntime(open_store(url))
    store = StateRefreshStore(runtime.store, runtime.revocations)
    store.create_family(Family("fam-9", "alice", "web", NOW, NOW + 86400, NOW))
    store.add_token(RefreshRecord("r-1", "fam-9", NOW, NOW + 3600, 3600, True))
    assert store.consume("r-1", NOW + 1, "successor-a") is True
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    other = context.Process(target=_refresh_worker, args=(url, "r-1", queue))
    other.start()
    other.join(30)
    assert queue.get(timeout=5) is False  # the claim is taken: the replay is reuse
    store.revoke_family("fam-9", NOW + 2, "refresh token reuse")
    with open_store(url) as elsewhere:
        seen = StateRefreshStore(elsewhere)
        assert seen.is_revoked("fam-9")
        family = seen.family("fam-9")
        assert family is not None and family.revoked_reason == "refresh token reuse"
        other_runtime = StateRuntime(elsewhere)
        other_runtime.poll()
        assert other_runtime.is_revoked("fam-9")
    runtime.close()


def test_the_refresh_chain_runs_on_the_state_store(tmp_path: Path) -> None:
    """RefreshChain's own reuse detection, with its families in the state store."""
    from ttlpolicy import load_policies
    from ttlpolicy.state.refreshstore import StateRefreshStore
    from ttlpolicy.tokens import RefreshChain, TokenInvalid

    policies = load_policies(POLICIES)
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"))
    chain = RefreshChain(StateRefreshStore(runtime.store, runtime.revocations), reuse_grace=0)
    from datetime import datetime, timezone

    decision = policies.decide({"tier": "standard", "device": {"trust": "managed"}, "client": {"type": "public"}},
                               now=datetime.fromtimestamp(NOW, timezone.utc))
    issued = chain.start({"iss": ISS, "sub": "alice", "aud": "api"}, decision, NOW, client_id="web", auth_time=NOW)
    assert issued.refresh_claims is not None and issued.family is not None
    from ttlpolicy.tokens.verify import VerifiedToken

    first = VerifiedToken(claims=issued.refresh_claims, issuer=ISS, algorithm="ES256", kid=None, token_type=None)
    redemption = chain.redeem(first, NOW + 10, client_id="web")
    chain.rotate(redemption, {"iss": ISS, "sub": "alice", "aud": "api"}, decision, NOW + 10)
    with pytest.raises(TokenInvalid) as info:
        chain.redeem(first, NOW + 60, client_id="web")  # the consumed token again, after the grace: reuse
    assert info.value.reason == "reuse"
    runtime.poll()
    assert runtime.is_revoked(issued.family)
    # A token of the family issued before the reuse was detected (the real clock: NOW is when this
    # module was imported, so NOW + 5 would pass or fail with the suite's speed).
    assert runtime.revoked(TokenFacts(family=issued.family, issued_at=NOW)) is not None
    runtime.close()

