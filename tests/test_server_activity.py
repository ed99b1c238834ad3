"""The activity endpoints and the decide path with a state store: events in, activity.* in the
decision and its trace, detector responses applied and undone, SETs pushed, failure never opening."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from ttlpolicy.activity.security_events import CAEP, RISC
from ttlpolicy.server import Settings, create_app
from ttlpolicy.state import StateStore, StoreUnavailable
from ttlpolicy.state.store import Batch
from webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "activity" / "policies"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
IDP_KEY = ec.generate_private_key(ec.SECP256R1())
IDP = "https://idp.example.com"
AUD = "https://ttlpolicy.example.com"
DETECTOR = {"name": "refresh-burst", "events": ["token.refreshed"], "per": "subject",
            "threshold": {"count": 5, "within": "10m"}, "respond": ["disable_refresh"], "for": "1h"}


def now_iso(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def make_client(tmp_path: Path, state: str, receiver_url: str | None = None, **activity: Any) -> TestClient:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(IDP_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    settings: dict[str, Any] = {
        "policies": str(POLICIES), "decision_log": {"sink": "off"}, "reload": {"watch": False}, "state": state,
        "activity": {"detectors": [DETECTOR], "security_events": {"transmitters": [
            {"issuer": IDP, "audience": AUD, "public_keys": [str(pem)], "algorithms": ["ES256"]}]}, **activity}}
    if receiver_url:
        settings["webhooks"] = {"endpoints": [{"name": "soc", "url": receiver_url, "secret": SECRET}],
                                "retry_delays": [0.05], "dead_letter": str(tmp_path / "dead.jsonl")}
    return TestClient(create_app(Settings.model_validate(settings)), raise_server_exceptions=False)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """The state store's URL (the service opens it)."""
    return f"sqlite:///{tmp_path}/state.db"


def decide(client: TestClient, **context: Any) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"context": {"user": {"id": "alice"}, "client": {"id": "web"},
                                                           **context}, "explain": False})
    assert response.status_code == 200, response.text
    return response.json()


def refreshes(n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"r-{start + i}", "type": "token.refreshed", "subject": "alice", "client": "web",
             "time": now_iso(-60 + i), **extra} for i in range(n)]


def test_events_are_validated_bounded_and_idempotent(tmp_path: Path, store: str) -> None:
    with make_client(tmp_path, store, max_events=3) as client:
        bad = client.post("/v1/events", json={"events": [
            {"id": "a", "type": "token.stolen", "subject": "alice"},
            {"type": "auth.failed", "client": "web", "time": "yesterday", "ip": "999.1.1.1"},
            {"id": "b", "type": "logout"}]})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        paths = sorted(e["path"] for e in bad.json()["errors"])
        assert paths == ["events[0].type", "events[1].id", "events[1].ip", "events[1].time", "events[2]"]
        too_many = client.post("/v1/events", json={"events": refreshes(4)})
        assert too_many.status_code == 400 and too_many.json()["errors"][0]["code"] == "too-many-items"
        twice = client.post("/v1/events", json={"events": [refreshes(1)[0], refreshes(1)[0]]})
        assert twice.status_code == 400 and twice.json()["errors"][0]["code"] == "duplicate-id"
        assert client.post("/v1/events", content=b"{", headers={"content-type": "application/json"}
                           ).json()["code"] == "invalid-json"
        assert client.post("/v1/events", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
        first = client.post("/v1/events", json={"events": refreshes(2)})
        assert first.json() == {"accepted": 2, "duplicates": 0, "detections": []}
        again = client.post("/v1/events", json={"events": refreshes(3)})
        assert again.json()["accepted"] == 1 and again.json()["duplicates"] == 2
        assert decide(client)["activity"]["values"]["refreshes_1h"] == 3


def test_activity_in_the_decision_and_forged_activity_refused(tmp_path: Path, store: str) -> None:
    with make_client(tmp_path, store) as client:
        first = decide(client, location={"country": "DE"})
        assert first["activity"]["available"] is True
        assert first["activity"]["values"]["new_country"] is True  # never seen before
        assert "country-never-seen" in first["matched"] and first["step_up"]
        second = decide(client, location={"country": "DE"})
        assert second["activity"]["values"]["new_country"] is False
        assert second["activity"]["values"]["idle_seconds"] <= 5
        assert "calm-regular-user" in second["matched"] and second["access_ttl"] == 5400
        forged = client.post("/v1/decide", json={"context": {"activity": {"refreshes_1h": 0}}})
        assert forged.status_code == 422
        assert forged.json()["errors"][0] == {"path": "activity", "code": "context-forbidden-attribute",
                                              "message": "activity.* is computed by the service from its state store"}


def test_detector_disables_refresh_posts_a_webhook_and_is_undone(tmp_path: Path, store: str) -> None:
    with Receiver(SECRET) as receiver, make_client(tmp_path, store, receiver.url) as client:
        assert decide(client, location={"country": "DE"})["refresh_ttl"] > 0
        fired = client.post("/v1/events", json={"events": refreshes(6)}).json()
        [detection] = fired["detections"]
        assert detection["detector"] == "refresh-burst" and detection["key"] == "alice"
        assert detection["evidence"]["count"] == 6 and len(detection["actions"]) == 1
        after = decide(client, location={"country": "DE"})
        assert after["refresh_ttl"] == 0 and after["activity"]["actions"] == detection["actions"]
        step = after["trace"][-1]
        assert step["step"] == "automatic" and step["target"] == "refresh_ttl" and step["result"] == 0
        assert detection["actions"][0] in step["source"]
        listed = client.get("/v1/actions", params={"subject": "alice", "active": "true"}).json()["actions"]
        assert [a["id"] for a in listed] == detection["actions"] and listed[0]["evidence"]["count"] == 6
        undone = client.delete(f"/v1/actions/{detection['actions'][0]}")
        assert undone.status_code == 200 and undone.json()["undone_at"] is not None
        assert decide(client, location={"country": "DE"})["refresh_ttl"] > 0
        assert client.delete("/v1/actions/act_nope").status_code == 404
        deadline = time.monotonic() + 10
        while len(receiver.delivered()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        metrics = client.get("/metrics").text
    kinds = [a.body["type"] for a in receiver.delivered() if a.body]
    assert kinds == ["action.applied", "detector.fired", "action.undone"]
    assert all(a.verified for a in receiver.attempts)
    assert 'ttlpolicy_detector_firings_total{detector="refresh-burst"} 1.0' in metrics
    assert 'ttlpolicy_automatic_actions_total{action="disable_refresh",cause="detector"} 1.0' in metrics
    assert 'ttlpolicy_events_total{type="token.refreshed"} 6.0' in metrics
    assert 'ttlpolicy_tokens_created_total{client="web",policy="adaptive"}' in metrics


def make_set(event: str, jti: str, key: Any = IDP_KEY, aud: str = AUD, sub: str = "alice") -> bytes:
    return jwt.encode({"iss": IDP, "aud": aud, "iat": int(time.time()), "jti": jti,
                       "sub_id": {"format": "iss_sub", "iss": IDP, "sub": sub}, "events": {event: {}}},
                      key, algorithm="ES256", headers={"typ": "secevent+jwt"}).encode()


def push(client: TestClient, body: bytes) -> Any:
    return client.post("/v1/security-events", content=body, headers={"content-type": "application/secevent+jwt"})


def test_security_events_map_to_actions_and_refusals_apply_nothing(tmp_path: Path, store: str) -> None:
    with make_client(tmp_path, store) as client:
        refused = [push(client, make_set(RISC + "credential-compromise", "j1", key=ec.generate_private_key(ec.SECP256R1()))),
                   push(client, make_set(RISC + "credential-compromise", "j2", aud="https://other.example")),
                   push(client, make_set(CAEP + "token-claims-change", "j3"))]
        assert [(r.status_code, r.json()["err"]) for r in refused] == [
            (400, "invalid_key"), (400, "invalid_audience"), (400, "invalid_request")]
        assert "unknown event type" in refused[2].json()["description"]
        assert client.get("/v1/actions").json()["actions"] == []  # nothing applied
        assert decide(client)["refresh_ttl"] > 0
        accepted = push(client, make_set(RISC + "credential-compromise", "j4"))
        assert accepted.status_code == 202
        replayed = push(client, make_set(RISC + "credential-compromise", "j4"))
        assert replayed.status_code == 400 and replayed.json()["description"] == "this SET (jti) was already received"
        kinds = sorted(a["kind"] for a in client.get("/v1/actions").json()["actions"])
        assert kinds == ["revoke_subject", "step_up"]  # the default response to a credential compromise
        after = decide(client)
        assert after["step_up"] and any("automatic response" in r for r in after["step_up_reasons"])
        assert push(client, b"not a jwt").json()["err"] == "invalid_request"
        wrong_type = client.post("/v1/security-events", content=make_set(RISC + "account-disabled", "j5"),
                                 headers={"content-type": "application/json"})
        assert wrong_type.status_code == 415


class _DownStore(StateStore):
    """A store that never answers (Redis down, disk gone)."""

    display_url, backend = "down://", "down"

    def batch(self) -> Batch:
        class _Batch:
            def __getattr__(self, name: str) -> Any:
                if name == "execute":
                    def fail() -> Any:
                        raise StoreUnavailable("connection refused")
                    return fail
                return lambda *args, **kwargs: None
        return _Batch()  # type: ignore[return-value]

    def ping(self) -> None:
        raise StoreUnavailable("connection refused")

    def close(self) -> None:
        pass


def test_a_store_that_cannot_answer_never_opens_anything(tmp_path: Path, store: str) -> None:
    client = make_client(tmp_path, store)
    runtime = client.app.state.service.state.runtime  # type: ignore[attr-defined]
    real, runtime.store = runtime.store, _DownStore()
    try:
        with client:
            decision = decide(client, location={"country": "DE"})
            assert decision["activity"] == {"available": False, "reason": "connection refused"}
            # Every activity rule failed safe: tightening applied, loosening not.
            assert decision["access_ttl"] == 300 and decision["refresh_ttl"] == 0 and decision["step_up"]
            assert "calm-regular-user" in [e["rule"] for e in decision["errors"]]
            events = client.post("/v1/events", json={"events": refreshes(1)})
            assert events.status_code == 503 and events.headers["retry-after"] == "5"
            assert events.json()["code"] == "state-unavailable"
            assert push(client, make_set(RISC + "account-disabled", "k1")).status_code == 503
            assert client.get("/readyz").json()["state"]["status"] == "degraded"
            assert "ttlpolicy_activity_unavailable_total 1.0" in client.get("/metrics").text
    finally:
        real.close()


def test_activity_can_be_switched_off_for_decisions(tmp_path: Path, store: str) -> None:
    with make_client(tmp_path, store, enabled=False) as client:
        decision = decide(client, location={"country": "DE"})
        assert "activity" not in decision and decision["access_ttl"] == 300  # the rules fail safe
        assert client.post("/v1/events", json={"events": refreshes(1)}).json()["accepted"] == 1


def test_revoke_family_and_emergency_responses_go_through_the_state_layer_and_are_undone(
        tmp_path: Path, store: str) -> None:
    detector = {**DETECTOR, "respond": ["revoke_family", "emergency"], "emergency": {"access_ttl": "2m", "refresh_ttl": "0s"}}
    with Receiver(SECRET) as receiver, make_client(tmp_path, store, receiver.url, detectors=[detector]) as client:
        issued_at = int(time.time()) - 30
        fired = client.post("/v1/events", json={"events": refreshes(6, session="fam-9")}).json()
        [detection] = fired["detections"]
        actions = client.get("/v1/actions").json()["actions"]
        by_kind = {a["kind"]: a for a in actions}
        assert set(by_kind) == {"revoke_family", "emergency"}
        assert len(by_kind["revoke_family"]["refs"]) == 1 and by_kind["emergency"]["refs"][0].startswith("em_")
        # The family is revoked for every replica: the token check says so.
        check = client.post("/v1/tokens/check", json={"sid": "fam-9", "sub": "alice", "iat": issued_at}).json()
        assert check["active"] is False
        # The emergency ceiling holds alice's next decision (and only alice's).
        held = decide(client, location={"country": "DE"})
        assert held["access_ttl"] <= 120 and held["refresh_ttl"] == 0
        other = client.post("/v1/decide", json={"context": {"user": {"id": "bob"}, "client": {"id": "web"}}}).json()
        assert other["access_ttl"] > 120
        # Undo both: the revocation is lifted, the emergency ended.
        for action in actions:
            assert client.delete(f"/v1/actions/{action['id']}").status_code == 200
        check = client.post("/v1/tokens/check", json={"sid": "fam-9", "sub": "alice", "iat": issued_at}).json()
        assert check["active"] is True
        decide(client, location={"country": "DE"})
        assert decide(client, location={"country": "DE"})["access_ttl"] > 120
        deadline = time.monotonic() + 10
        while len(receiver.delivered()) < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
    kinds = [a.body["type"] for a in receiver.delivered() if a.body]
    assert kinds[:5] == ["revocation.created", "action.applied", "emergency.started", "action.applied",
                         "detector.fired"]
    assert sorted(kinds[5:]) == ["action.undone", "action.undone", "emergency.ended"]
    assert detection["actions"] == [a["id"] for a in sorted(actions, key=lambda a: a["kind"] != "revoke_family")]


def test_a_compromised_credential_revokes_the_subject(tmp_path: Path, store: str) -> None:
    with make_client(tmp_path, store) as client:
        issued_at = int(time.time()) - 60
        assert push(client, make_set(RISC + "credential-compromise", "c1", sub="carol")).status_code == 202
        kinds = sorted(a["kind"] for a in client.get("/v1/actions", params={"subject": "carol"}).json()["actions"])
        assert kinds == ["revoke_subject", "step_up"]
        assert client.post("/v1/tokens/check", json={"sub": "carol", "iat": issued_at}).json()["active"] is False
        assert client.post("/v1/tokens/check", json={"sub": "dave", "iat": issued_at}).json()["active"] is True


def test_state_layer_events_are_announced_once(tmp_path: Path, store: str) -> None:
    with Receiver(SECRET) as receiver, make_client(tmp_path, store, receiver.url) as client:
        assert client.post("/v1/revocations", json={"kind": "subject", "value": "erin", "reason": "INC-7"}
                           ).status_code == 201
        started = client.post("/v1/emergencies", json={"scope": 'user.id == "erin"', "reason": "INC-7",
                                                        "duration": "1s", "access_ttl": "1m"})
        assert started.status_code == 201, started.text
        client.post("/v1/events", json={"events": [{"id": "reuse-1", "type": "refresh.failed", "subject": "erin",
                                                    "session": "fam-3", "reason": "reuse"}]})
        deadline = time.monotonic() + 10  # the emergency ends by itself after 1 s; the next tick says so
        while len(receiver.delivered()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.2)  # a later tick must not announce it again
    kinds = [a.body["type"] for a in receiver.delivered() if a.body]
    assert kinds == ["revocation.created", "emergency.started", "refresh.reuse_detected", "emergency.ended"]
