"""The recording of decided requests off the decide path: a policy that reads no ``activity.*``
costs no store round trip per decision (actions in force come from memory), its requests are still recorded
(in the background, and on shutdown), a policy that reads activity sees every request before it,
and what cannot be recorded is counted, never lost silently."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from ttlpolicy.activity.responses import ActionStore
from ttlpolicy.activity.tracker import ActivityTracker, Request
from ttlpolicy.server import Settings, activity_api, create_app
from ttlpolicy.state import StoreUnavailable, open_store

ROOT = Path(__file__).resolve().parent.parent
PLAIN = """apiVersion: ttlpolicy/v1
name: plain
description: Reads no activity.
defaults: {access_ttl: 1h, refresh_ttl: 1d}
limits:
  access_ttl: {min: 1m, max: 4h}
  refresh_ttl: {min: 0s, max: 14d}
rules:
  - name: batch-jobs
    description: Short tokens for the batch client.
    when: client.id == "batch"
    access_ttl: {cap: 5m}
"""


class _CountingBatch:
    def __init__(self, batch: Any, executed: list[tuple[str, list[str]]]):
        self._batch, self._executed, self._ops = batch, executed, []  # type: list[str]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._batch, name)

        def queue(*args: Any, **kw: Any) -> Any:
            self._ops.append(name)
            return method(*args, **kw)
        return queue

    def execute(self) -> list[Any]:
        self._executed.append((threading.current_thread().name, list(self._ops)))
        return self._batch.execute()


class _CountingStore:
    """The real store, noting each batch's thread and operations."""

    def __init__(self, store: Any):
        self._store, self.executed = store, []  # type: list[tuple[str, list[str]]]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def close(self) -> None:
        self.executed.append(("closed", []))
        self._store.close()

    def batch(self, atomic: bool = False) -> _CountingBatch:
        return _CountingBatch(self._store.batch(atomic), self.executed)

    def decide_path(self, since: int) -> list[list[str]]:
        """The batches of the threads serving requests (not the writer's, not the state poller's)."""
        return [ops for thread, ops in self.executed[since:] if not thread.startswith("ttlpolicy-")]


DETECTOR = {"name": "refresh-burst", "events": ["token.refreshed"], "per": "subject",
            "threshold": {"count": 2, "within": "10m"}, "respond": ["disable_refresh"], "for": "1h"}


def make_client(tmp_path: Path) -> tuple[TestClient, _CountingStore, str]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "adaptive.yaml").write_text((ROOT / "examples/activity/policies/adaptive.yaml").read_text())
    (policies / "plain.yaml").write_text(PLAIN)
    url = f"sqlite:///{tmp_path}/state.db"
    settings = {"policies": str(policies), "decision_log": {"sink": "off"}, "reload": {"watch": False},
                "state": url, "activity": {"detectors": [DETECTOR]}}
    client = TestClient(create_app(Settings.model_validate(settings)), raise_server_exceptions=False)
    runtime = client.app.state.service.state.runtime  # type: ignore[attr-defined]
    counting = _CountingStore(runtime.store)
    runtime.store = counting
    return client, counting, url


def refuse_batches(monkeypatch: pytest.MonkeyPatch, counting: _CountingStore) -> Any:
    """Make every batch of ``counting`` fail as an unreachable store does; returns the real ``batch``."""
    real_batch = counting.batch

    def refusing(atomic: bool = False) -> Any:
        batch = real_batch(atomic)
        batch.execute = lambda: (_ for _ in ()).throw(StoreUnavailable("connection refused"))
        return batch
    monkeypatch.setattr(counting, "batch", refusing)
    return real_batch


def decide(client: TestClient, policy: str, country: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"policy": policy, "explain": False, "context": {
        "user": {"id": "alice"}, "client": {"id": "web"}, "location": {"country": country}}})
    assert response.status_code == 200, response.text
    return response.json()


def countries(url: str) -> set[str]:
    store = open_store(url)
    try:
        return set(store.map_get_all("act:s:alice:countries"))
    finally:
        store.close()


def test_a_policy_without_activity_writes_nothing_on_the_decide_path_and_is_recorded_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "WRITE_EVERY", 3600.0)  # the writer waits: only shutdown records
    client, counting, url = make_client(tmp_path)
    with client:
        since = len(counting.executed)
        for country in ("DE", "FR", "BR"):
            assert "activity" not in decide(client, "plain", country)
        on_path = counting.decide_path(since)
        assert on_path == []  # no store round trip on the decide path: actions in force are in memory
        assert countries(url) == set()  # still waiting for the writer
    assert countries(url) == {"DE", "FR", "BR"}  # written on shutdown, in one transaction
    written = [i for i, (thread, ops) in enumerate(counting.executed) if ops and set(ops) <= {"put", "map_put"}]
    assert len(written) == 1  # one transaction for the three decisions
    assert written[0] < counting.executed.index(("closed", []))  # before the store was closed


def test_the_writer_thread_records_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "WRITE_EVERY", 0.01)
    client, counting, url = make_client(tmp_path)
    with client:
        decide(client, "plain", "DE")
        for _ in range(500):
            if "DE" in countries(url):
                break
            threading.Event().wait(0.01)
        assert countries(url) == {"DE"}
        assert any(thread == "ttlpolicy-activity-writer" for thread, _ in counting.executed)


def test_a_policy_reading_activity_sees_the_requests_still_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "WRITE_EVERY", 3600.0)
    client, counting, url = make_client(tmp_path)
    with client:
        decide(client, "plain", "DE")
        decide(client, "plain", "FR")
        seen = decide(client, "adaptive", "DE")
        assert seen["activity"]["values"]["new_country"] is False  # the plain decision's DE, not yet written
        assert seen["activity"]["values"]["countries_24h"] == 2
        assert "country-never-seen" not in seen["matched"]
        assert countries(url) == {"DE", "FR"}  # the waiting ones went in the same transaction


def test_what_cannot_be_recorded_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "WRITE_EVERY", 3600.0)
    monkeypatch.setattr(activity_api, "MAX_PENDING", 2)
    client, counting, url = make_client(tmp_path)
    with client:
        for country in ("DE", "FR", "BR"):
            decide(client, "plain", country)
        metrics = client.get("/metrics").text
        assert 'ttlpolicy_activity_unrecorded_total{reason="queue_full"} 1.0' in metrics
        api = client.app.state.service.activity  # type: ignore[attr-defined]
        refuse_batches(monkeypatch, counting)
        assert api.write_pending() == 0
        metrics = client.get("/metrics").text
        assert 'ttlpolicy_activity_unrecorded_total{reason="store_unavailable"} 2.0' in metrics
        assert client.get("/readyz").json()["state"]["status"] == "degraded"
    assert countries(url) == set()


def test_actions_in_force_apply_without_a_round_trip_and_follow_take_and_undo(tmp_path: Path) -> None:
    client, counting, url = make_client(tmp_path)
    with client:
        assert decide(client, "plain", "DE")["refresh_ttl"] == 86400
        now = time.time()
        events = [{"id": f"r-{i}", "type": "token.refreshed", "subject": "alice", "client": "web",
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 10 + i))} for i in range(2)]
        fired = client.post("/v1/events", json={"events": events}).json()["detections"]
        action_id = fired[0]["actions"][0]
        since = len(counting.executed)
        after = decide(client, "plain", "DE")  # the service that took the action applies it at once
        assert after["refresh_ttl"] == 0 and after["activity"]["actions"] == [action_id]
        assert counting.decide_path(since) == []
        assert client.delete(f"/v1/actions/{action_id}").status_code == 200
        assert decide(client, "plain", "DE")["refresh_ttl"] == 86400
        # An action taken by another replica applies here once the version poll sees it.
        api = client.app.state.service.activity  # type: ignore[attr-defined]
        other = open_store(url)
        try:
            taken = ActionStore(other).take("step_up", "subject", "alice", "detector elsewhere", {}, time.time(), 600)
        finally:
            other.close()
        api.refresh_actions()
        elsewhere = decide(client, "plain", "DE")
        assert elsewhere["step_up"] and elsewhere["activity"]["actions"] == [taken.id]


def test_a_batch_of_recordings_keeps_each_fields_newest_time_whatever_the_order(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        now = time.time()
        requests = [Request("alice", "web", "DE", "203.0.113.9", now), Request("alice", None, "DE", None, now - 50),
                    Request("alice", "web", "FR", None, now - 20), Request(None, "web", "BR", None, now + 1)]
        batch = store.batch()
        assert ActivityTracker(store).queue_requests(batch, reversed(requests)) == 4  # last, DE, FR, the IP
        batch.execute()
        assert store.map_get_all("act:s:alice:countries") == {"DE": repr(now), "FR": repr(now - 20)}
        assert store.get("act:s:alice:last") == repr(now)
        assert store.map_get_all("act:s:alice:ips") == {"203.0.113.9": repr(now)}
    finally:
        store.close()


def test_active_tokens_are_written_once_per_client_and_expiry_second_and_kept_while_the_store_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, counting, url = make_client(tmp_path)
    with client:
        api = client.app.state.service.activity  # type: ignore[attr-defined]
        monkeypatch.setattr(api, "flush_tokens", lambda: None)  # the flusher thread leaves them to this test
        flush = type(api).flush_tokens
        for _ in range(30):
            decide(client, "plain", "DE")  # 1h access tokens for client "web"
        real_batch = refuse_batches(monkeypatch, counting)
        flush(api)  # refused: kept for the next flush, not lost
        monkeypatch.setattr(counting, "batch", real_batch)
        since = len(counting.executed)
        flush(api)
        written = [ops for _, ops in counting.executed[since:] if "window_add" in ops]
        assert len(written) == 1
        seconds = {round(time.time() + 3600 + d) for d in (0, 1, 2)}
        assert 1 <= written[0].count("window_add") <= len(seconds)  # not one per decision
        assert api.token_counts() == {"web": (30, 0)}
        assert "ttlpolicy_active_tokens_uncounted_total 0.0" in client.get("/metrics").text


def test_active_tokens_beyond_the_bound_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity_api, "MAX_TOKENS", 2)
    client, counting, url = make_client(tmp_path)
    with client:
        api = client.app.state.service.activity  # type: ignore[attr-defined]
        monkeypatch.setattr(api, "flush_tokens", lambda: None)
        for _ in range(3):
            decide(client, "plain", "DE")
        assert "ttlpolicy_active_tokens_uncounted_total 1.0" in client.get("/metrics").text
        type(api).flush_tokens(api)
        assert api.token_counts() == {"web": (2, 0)}


def _limited_client(tmp_path: Path, when: str, state: str | None = None) -> tuple[TestClient, _CountingStore]:
    """The activity-reading policy with a rate limit of 2 per minute per user (``when`` its condition)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (ROOT / "examples/activity/policies/adaptive.yaml").read_text()
    text += ("\nrate_limits:\n  - name: per-user\n    description: Two a minute.\n"
             f"    when: {when}\n    key: [user.id]\n    rate: 2 per 1m\n    on_exceed: {{deny: slow down}}\n")
    (policies / "adaptive.yaml").write_text(text)
    settings = {"policies": str(policies), "decision_log": {"sink": "off"}, "reload": {"watch": False},
                "state": state or f"sqlite:///{tmp_path}/state.db"}
    client = TestClient(create_app(Settings.model_validate(settings)), raise_server_exceptions=False)
    runtime = client.app.state.service.state.runtime  # type: ignore[attr-defined]
    counting = _CountingStore(runtime.store)
    runtime.store = counting
    return client, counting


@pytest.mark.parametrize(("when", "backend"), [('grant.type != "client_credentials"', "sqlite"),
                                               ('grant.type != "client_credentials"', "redis"),
                                               ("activity.refreshes_1h >= 0", "sqlite")])
def test_activity_and_rate_limit_share_one_round_trip_unless_the_limit_reads_activity(
        tmp_path: Path, when: str, backend: str, request: pytest.FixtureRequest) -> None:
    client, counting = _limited_client(tmp_path, when, request.getfixturevalue("redis_url") if backend == "redis" else None)
    with client:
        answers, trips = [], []
        for country in ("DE", "DE", "FR"):
            since = len(counting.executed)
            out = decide(client, "adaptive", country)
            answers.append((out["allow"], [r["counts"] for r in out["rate_limits"]]))
            trips.append(counting.decide_path(since))
        assert out["activity"]["values"]["countries_24h"] == 1  # the activity is read as before
        assert answers == [(True, [[1]]), (True, [[2]]), (False, [[2]])]  # and the limit still holds
        if when.startswith("activity."):  # its condition needs the activity first: two round trips
            assert [len(t) for t in trips] == [2, 2, 2] and all("window_hit" in t[1] for t in trips)
        else:
            assert [len(t) for t in trips] == [1, 1, 1]
            assert all({"window_hit", "window_count", "map_put"} <= set(t[0]) for t in trips)


def test_a_shared_round_trip_that_fails_never_opens_the_rate_limit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client, counting = _limited_client(tmp_path, '"true"')
    with client:
        refuse_batches(monkeypatch, counting)
        out = decide(client, "adaptive", "DE")
        assert out["state"] == "degraded" and out["activity"]["available"] is False
        assert out["access_ttl"] <= 600 and "rate_limits" not in out  # the degraded ceiling holds instead


def test_a_full_queue_is_counted_per_request_and_logged_once_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(activity_api, "WRITE_EVERY", 3600.0)
    monkeypatch.setattr(activity_api, "MAX_PENDING", 1)
    client, counting, url = make_client(tmp_path)
    with client, caplog.at_level("WARNING", logger="ttlpolicy.server"):
        for country in ("DE", "FR", "BR", "IT", "ES"):
            decide(client, "plain", country)
        assert 'ttlpolicy_activity_unrecorded_total{reason="queue_full"} 4.0' in client.get("/metrics").text
        lines = [r.getMessage() for r in caplog.records if "not recorded in the activity" in r.getMessage()]
        assert lines == ["1 decided request(s) not recorded in the activity (queue full)"]  # not one per request
