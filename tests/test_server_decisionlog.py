"""The decision log: JSON lines, masking, no credentials, never blocking a decision."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path

from server_fixtures.helpers import FINANCE, client, iter_lines

from ttlpolicy.server.auth import hash_key
from ttlpolicy.server.config import DecisionLogSettings
from ttlpolicy.server.decisionlog import DecisionLog, Masker

KEY = "log-test-key-abcdef123456"


def test_log_lines_are_masked_json_without_credentials(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = {"sink": "file", "path": str(path), "salt": "pepper",
           "mask": {"user.id": "hash", "location.ip": "drop", "user.groups": "hash"}}
    auth = {"api_keys": [{"name": "issuer-a", "hash": hash_key(KEY), "scopes": ["decide"]}]}
    context = {**FINANCE, "user": {**FINANCE["user"], "groups": ["a", "b"]}}
    with client(decision_log=log, auth=auth) as test_client:
        headers = {"Authorization": f"Bearer {KEY}"}
        first = test_client.post("/v1/decide", json={"context": context}, headers=headers).json()
        batch = test_client.post("/v1/decide/batch", headers={"X-API-Key": KEY},
                                 json={"requests": [{"context": context}, {"context": {"tier": "x"}}]}).json()
    text = path.read_text()
    assert KEY not in text and hash_key(KEY) not in text and "Bearer" not in text
    lines = list(iter_lines(path))
    assert len(lines) == 2  # the refused context of the batch is not a decision
    entry = lines[0]
    assert entry["decision_id"] == first["decision_id"]
    assert lines[1]["decision_id"] == batch["results"][0]["decision"]["decision_id"]
    assert entry["caller"] == {"kind": "api_key", "id": "issuer-a"}
    assert entry["policy"] == first["policy"]
    assert entry["result"] == {k: first[k] for k in ("allow", "access_ttl", "refresh_ttl", "step_up", "deny_reason")}
    assert entry["matched"] == first["matched"] and entry["latency_ms"] >= 0
    assert entry["time"].endswith("Z")
    expected = hmac.new(b"pepper", b"u-1", hashlib.sha256).hexdigest()[:16]
    assert entry["context"]["user"]["id"] == expected == lines[1]["context"]["user"]["id"]  # joinable
    assert isinstance(entry["context"]["user"]["groups"], str) and len(entry["context"]["user"]["groups"]) == 16
    assert "ip" not in entry["context"]["location"]
    assert entry["context"]["tier"] == "finance" and entry["context"]["user"]["mfa"] is True


def test_masking_leaves_the_request_context_untouched() -> None:
    context = {"user": {"id": "u"}, "location": {"ip": "10.0.0.1"}}
    masked = Masker({"user.id": "hash", "location.ip": "drop", "nothing.here": "drop"}, "s", 8).apply(context)
    assert context == {"user": {"id": "u"}, "location": {"ip": "10.0.0.1"}}
    assert masked["location"] == {} and len(masked["user"]["id"]) == 8


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    dropped: list[int] = []
    settings = DecisionLogSettings(sink="file", path=tmp_path / "log.jsonl", queue_size=2)
    log = DecisionLog(settings, lambda: dropped.append(1))  # not started: nothing drains the queue
    record = ("id", 0.0, {"kind": "anonymous", "id": "anonymous"}, "p", "d", {}, {
        "allow": True, "access_ttl": 1, "refresh_ttl": 0, "step_up": False, "deny_reason": None,
        "matched": []}, 0.001)
    for _ in range(5):
        log.submit(record)
    assert len(dropped) == 3
    log.start()
    log.stop()
    assert [json.loads(line)["decision_id"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [
        "id", "id"]


def test_dropped_records_are_a_metric(tmp_path: Path) -> None:
    log = {"sink": "file", "path": str(tmp_path / "l.jsonl"), "queue_size": 1}
    with client(decision_log=log) as test_client:
        service = test_client.app.state.service
        gate = threading.Event()
        original = service.decision_log._write_all
        service.decision_log._write_all = lambda data: (gate.wait(5), original(data))  # a stuck disk
        for _ in range(6):
            assert test_client.post("/v1/decide", json={"context": {}}).status_code == 200
        metrics = test_client.get("/metrics").text
        gate.set()
    dropped = [line for line in metrics.splitlines() if line.startswith("ttlpolicy_decision_log_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) >= 3
