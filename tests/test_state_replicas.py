"""Real server processes on a real redis-server: state shared between replicas, and a store that
dies under load and comes back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_server import RedisServer
from server_fixtures.helpers import ServerProcess, wait_for

POLICY = """\
apiVersion: ttlpolicy/v1
name: svc
defaults: {access_ttl: 1h, refresh_ttl: 30d}
rate_limits:
  - name: per-user
    key: user.id
    rate: 6 per 1m
    on_exceed: {deny: too many requests}
"""
DEGRADED = {"TTLPOLICY_STATE__DEGRADED": '{"access_ttl": "2m", "refresh_ttl": "10m"}'}


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "svc.yaml").write_text(POLICY)
    return root


def server(policies: Path, url: str, **env: str) -> ServerProcess:
    return ServerProcess("--policies", str(policies), "--no-watch",
                         env={"TTLPOLICY_STATE__URL": url, "TTLPOLICY_STATE__POLL_INTERVAL": "0.1", **env})


def decide(base: str, user: str = "alice") -> Any:
    return httpx.post(base + "/v1/decide", json={"context": {"user": {"id": user}}}, timeout=5)


def test_two_replicas_share_counts_revocations_and_emergencies(redis_url: str, policies: Path) -> None:
    with server(policies, redis_url) as a, server(policies, redis_url) as b:
        assert httpx.get(a.url + "/readyz").json()["state"]["backend"] == "redis"
        # Six allowed in total, spread over both replicas; the seventh is refused on either.
        answers = [decide(replica.url).json() for replica in (a, b, a, b, a, b)]
        assert all(answer["allow"] for answer in answers)
        assert not decide(a.url).json()["allow"] and not decide(b.url).json()["allow"]
        assert decide(b.url, "bob").json()["allow"]

        check = {"sub": "carol", "iat": int(time.time()) - 5}
        assert httpx.post(b.url + "/v1/tokens/check", json=check).json()["active"] is True
        made = time.monotonic()
        assert httpx.post(a.url + "/v1/revocations", json={"kind": "subject", "value": "carol",
                                                           "reason": "INC-9"}).status_code == 201
        wait_for(lambda: httpx.post(b.url + "/v1/tokens/check", json=check).json()["active"] is False, timeout=1.0,
                 interval=0.02)
        assert time.monotonic() - made < 1.0

        made = time.monotonic()
        started = httpx.post(a.url + "/v1/emergencies", json={"scope": "true", "reason": "INC-9", "duration": "1h",
                                                              "access_ttl": "5m"})
        assert started.status_code == 201
        wait_for(lambda: decide(b.url, "dave").json()["access_ttl"] == 300, timeout=1.0, interval=0.02)
        assert time.monotonic() - made < 1.0


def test_the_store_dies_under_load_and_comes_back(tmp_path: Path, policies: Path) -> None:
    redis = RedisServer(tmp_path / "redis", persistent=True).start()
    try:
        with server(policies, redis.url + "?timeout=0.2", **DEGRADED) as svc:
            revoked = {"sub": "mallory", "iat": int(time.time()) - 5}
            assert httpx.post(svc.url + "/v1/revocations", json={"kind": "subject", "value": "mallory",
                                                                 "reason": "INC-1"}).status_code == 201
            assert httpx.get(svc.url + "/readyz").json()["state"] | {"reason": None, "since": None} == {
                "status": "ok", "reason": None, "since": None, "backend": "redis", "store": redis.url + "?timeout=0.2"}
            results: list[tuple[str, Any]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=5) as client:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        decision = client.post(svc.url + "/v1/decide",
                                               json={"context": {"user": {"id": f"u{i}"}}}).json()
                        results.append(("decide", decision))
                        check = client.post(svc.url + "/v1/tokens/check", json=revoked)
                        results.append(("check", (check.status_code, check.json())))

            workers = [threading.Thread(target=load) for _ in range(2)]
            for worker in workers:
                worker.start()
            time.sleep(0.3)
            redis.stop()
            ready = wait_for(lambda: (r := httpx.get(svc.url + "/readyz").json())["status"] == "degraded" and r,
                             timeout=5)
            assert ready["state"]["status"] == "degraded" and ready["state"]["reason"]
            during = len(results)
            time.sleep(0.5)
            degraded_decisions = [r for kind, r in results[during:] if kind == "decide"]
            redis.start()  # same port, same append-only file
            wait_for(lambda: httpx.get(svc.url + "/readyz").json()["status"] == "ready", timeout=5)
            time.sleep(0.3)
            stop.set()
            for worker in workers:
                worker.join(10)

            checks = [r for kind, r in results if kind == "check"]
            assert checks and all(body.get("active") is not True for _, body in checks)  # never "active"
            assert degraded_decisions, "no decision was made while the store was down"
            for decision in degraded_decisions:
                assert decision["state"] == "degraded"
                assert decision["access_ttl"] <= 120 and decision["refresh_ttl"] <= 600
                assert any(s["step"] == "degraded" for s in decision["trace"])
            for _, decision in ((k, r) for k, r in results if k == "decide"):
                if decision.get("state") == "degraded":
                    assert decision["access_ttl"] <= 120 and decision["refresh_ttl"] <= 600
            # Recovered without a restart: full lifetimes again, the revocation still there.
            fresh = decide(svc.url, "after-recovery").json()
            assert fresh["access_ttl"] == 3600 and "state" not in fresh
            assert httpx.post(svc.url + "/v1/tokens/check", json=revoked).json()["active"] is False
            metrics = httpx.get(svc.url + "/metrics").text
            assert "ttlpolicy_state_degraded_decisions_total" in metrics
    finally:
        redis.stop()


def test_a_store_that_lost_its_data_gets_revocations_and_emergencies_back(tmp_path: Path) -> None:
    """Redis restarted without persistence: the processes that still hold the state put it back."""
    from ttlpolicy import load_policies
    from ttlpolicy.state import open_store
    from ttlpolicy.state.revocation import TokenFacts
    from ttlpolicy.state.runtime import StateRuntime
    from server_fixtures.helpers import POLICIES

    redis = RedisServer(tmp_path / "redis").start()  # no persistence
    try:
        runtime = StateRuntime(open_store(redis.url))
        now = time.time()
        runtime.revocations.revoke("subject", "mallory", reason="INC-1", by="t", now=now)
        policies = load_policies(POLICIES)
        runtime.emergencies.start(runtime.emergencies.prepare(
            {"scope": "true", "reason": "INC-1", "duration": "1h", "access_ttl": "1m"}, policies, "t", now), now)
        redis.stop()
        redis.start()  # empty
        assert runtime.poll()
        assert runtime.revoked(TokenFacts(subject="mallory")) is not None
        other = StateRuntime(open_store(redis.url))
        assert other.poll()
        assert other.revoked(TokenFacts(subject="mallory")) is not None  # written back for everyone
        assert [e.reason for e in other.emergencies.live(time.time())] == ["INC-1"]
        runtime.close()
        other.close()
    finally:
        redis.stop()
