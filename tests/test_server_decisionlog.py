"""The decision log: JSON lines, masking, no credentials, never blocking a decision."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path
from typing import Any

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
    log = DecisionLog(settings, lambda n: dropped.append(1))  # not started: nothing drains the queue
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
        service.decision_log._write_all = lambda data: (gate.wait(5), original(data))[1]  # a stuck disk
        for _ in range(6):
            assert test_client.post("/v1/decide", json={"context": {}}).status_code == 200
        metrics = test_client.get("/metrics").text
        gate.set()
    dropped = [line for line in metrics.splitlines() if line.startswith("ttlpolicy_decision_log_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) >= 3


# -- a failing log is counted, reported, and (if asked) stops decisions (issue 14, defect 5) ------

def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    from server_fixtures.helpers import wait_for

    return wait_for(predicate, timeout)


def test_a_full_disk_counts_every_lost_line_and_degrades_readiness() -> None:
    from server_fixtures.helpers import metric_total

    log = {"sink": "file", "path": "/dev/full", "queue_size": 2}  # every write: ENOSPC
    with client(decision_log=log) as test_client:
        service = test_client.app.state.service  # type: ignore[attr-defined]
        for _ in range(5):
            assert test_client.post("/v1/decide", json={"context": FINANCE}).status_code == 200
            wait_until(lambda: not service.decision_log._pending)  # each line reaches the failing writer
        ready = wait_until(lambda: (r := test_client.get("/readyz").json())["decision_log"]["status"] == "failing"
                           and r)
        assert ready["status"] == "degraded"
        assert "No space left on device" in ready["decision_log"]["error"]
        assert ready["decision_log"]["lost"] == 3  # two are held for a retry (queue_size 2)
        assert metric_total(test_client.get("/metrics").text, "ttlpolicy_decision_log_dropped_total") == 3
    assert service.decision_log.lost == 5  # at shutdown the held lines are lost too, and counted


def test_refuse_mode_stops_deciding_while_the_log_fails() -> None:
    log = {"sink": "file", "path": "/dev/full", "on_failure": "refuse"}
    with client(decision_log=log) as test_client:
        assert test_client.post("/v1/decide", json={"context": FINANCE}).status_code == 200
        ready = wait_until(lambda: (r := test_client.get("/readyz")).status_code == 503 and r)
        assert ready.json()["status"] == "unavailable"
        for path, body in (("/v1/decide", {"context": FINANCE}), ("/v1/decide/batch", {"requests": []})):
            refused = test_client.post(path, json=body)
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "decision-log-unavailable" and refused.headers["retry-after"]


def test_rotation_by_rename_reopens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    with client(decision_log={"sink": "file", "path": str(path)}) as test_client:
        first = test_client.post("/v1/decide", json={"context": FINANCE}).json()["decision_id"]
        wait_until(lambda: path.exists() and path.read_text().count("\n") == 1)
        path.rename(tmp_path / "decisions.jsonl.1")  # logrotate's default
        second = test_client.post("/v1/decide", json={"context": FINANCE}).json()["decision_id"]
        wait_until(lambda: path.exists() and path.read_text().count("\n") == 1)
    assert [e["decision_id"] for e in iter_lines(tmp_path / "decisions.jsonl.1")] == [first]
    assert [e["decision_id"] for e in iter_lines(path)] == [second]


def test_a_removed_directory_is_reported_and_its_lines_kept_until_it_returns(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "logs" / "decisions.jsonl"
    with client(decision_log={"sink": "file", "path": str(path)}) as test_client:
        test_client.post("/v1/decide", json={"context": FINANCE})
        wait_until(lambda: path.exists() and path.read_text())
        shutil.rmtree(path.parent)
        kept = test_client.post("/v1/decide", json={"context": FINANCE}).json()["decision_id"]
        ready = wait_until(lambda: (r := test_client.get("/readyz").json())["decision_log"]["status"] == "failing"
                           and r)
        assert "does not exist" in ready["decision_log"]["error"] and ready["status"] == "degraded"
        path.parent.mkdir()
        wait_until(lambda: test_client.get("/readyz").json()["decision_log"]["status"] == "ok")
        assert [e["decision_id"] for e in iter_lines(path)] == [kept]
        assert test_client.get("/readyz").json()["decision_log"]["lost"] == 0


def test_reopen_on_request_and_sighup(tmp_path: Path) -> None:
    import asyncio
    import os
    import signal

    from ttlpolicy.server.reload import install_sighup

    path = tmp_path / "d.jsonl"
    log = DecisionLog(DecisionLogSettings(sink="file", path=path), lambda n: None)
    log.start()
    try:
        before = log._fd
        log.reopen()
        wait_until(lambda: log._fd != before)  # a new descriptor (opened before the old one closes)
    finally:
        log.stop()

    calls: list[str] = []

    class Holder:
        async def try_reload(self, why: str) -> None:
            calls.append(why)

    async def scenario() -> None:
        undo = install_sighup(Holder(), set(), also=lambda: calls.append("reopen"))  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(calls) == 2:
                break
        undo()

    asyncio.run(scenario())
    assert sorted(calls) == ["SIGHUP", "reopen"]


def test_an_unwritable_log_path_stops_serve_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    from server_fixtures.helpers import REPO, free_port

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", "serve", "--port", str(free_port()),
                             "--no-watch"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "TTLPOLICY_DECISION_LOG__SINK": "file",
                                 "TTLPOLICY_DECISION_LOG__PATH": str(blocker / "d.jsonl")})
    assert result.returncode == 2, result.stderr
    assert "decision_log.path" in result.stderr
