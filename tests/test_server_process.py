"""Against real `ttlpolicy serve` processes: serving, hot reload under load, multi-worker metrics."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
from server_fixtures.helpers import EXTRA_POLICY, FINANCE, POLICIES, ServerProcess, metric_total, wait_for


def test_real_server_decides_reloads_on_sighup_and_stops_cleanly(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    with ServerProcess("--policies", str(directory), "--no-watch") as server:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            response = http.post("/v1/decide", json={"context": FINANCE})
            assert response.status_code == 200 and response.json()["tier"] == "finance"
            assert http.post("/v1/decide", content=b"{", headers={"content-type": "application/json"}
                             ).headers["content-type"] == "application/problem+json"
            first = http.get("/readyz").json()
            assert first["status"] == "ready"
            (directory / "extra.yaml").write_text(EXTRA_POLICY)
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: http.get("/readyz").json()["digest"] != first["digest"], 10)
    assert server.proc.returncode == 0
    assert "ttlpolicy: warning[auth-disabled]: no credentials configured" in server.stderr
    assert "loopback only" in server.stderr


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")  # not *.yaml: never loaded half-written
    temporary.write_text(text)
    os.replace(temporary, path)  # what git-sync and editors' safe-write do: never a half-written file


def test_hot_reload_under_concurrent_requests(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    extra = directory / "extra.yaml"
    env = {"TTLPOLICY_RELOAD__DEBOUNCE_MS": "50"}
    with ServerProcess("--policies", str(directory), env=env) as server:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            first = http.get("/readyz").json()["digest"]
        stop = threading.Event()
        seen: list[tuple[int, str | None, str | None]] = []
        lock = threading.Lock()

        def hammer() -> None:
            with httpx.Client(base_url=server.url, timeout=5) as http:
                while not stop.is_set():
                    response = http.post("/v1/decide", json={"context": {"resource": {"sensitivity": "confidential"}}})
                    body = response.json()
                    with lock:
                        seen.append((response.status_code, body.get("policy_set", {}).get("digest"),
                                     body.get("policy", {}).get("digest")))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            with httpx.Client(base_url=server.url, timeout=5) as http:
                wait_for(lambda: len(seen) > 20, 10)
                _write_atomically(extra, "name: [oops\n")
                degraded = wait_for(lambda: (r := http.get("/readyz").json())["status"] == "degraded" and r, 10)
                assert degraded["digest"] == first and degraded["error"]["problems"]
                count = len(seen)
                wait_for(lambda: len(seen) > count + 20, 10)  # still answering while degraded
                _write_atomically(extra, EXTRA_POLICY)
                ready = wait_for(lambda: (r := http.get("/readyz").json())["status"] == "ready"
                                 and r["digest"] != first and r, 10)
                second = ready["digest"]
                count = len(seen)
                wait_for(lambda: len(seen) > count + 20, 10)
                metrics = http.get("/metrics").text
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
    assert {status for status, _, _ in seen} == {200}
    assert {digest for _, digest, _ in seen} == {first, second}
    pairs = {(set_digest, policy_digest) for _, set_digest, policy_digest in seen}
    assert len(pairs) == 2  # each set digest always came with the same policy digest: no mixed sets
    assert seen[-1][1] == second
    assert metric_total(metrics, "ttlpolicy_reloads_total") >= 2
    assert 'ttlpolicy_reloads_total{result="failure"}' in metrics


def test_two_workers_aggregate_metrics(tmp_path: Path) -> None:
    decisions = 30
    # A temporary directory of its own, so the multiprocess metrics directory it must remove
    # is told apart from those of other servers running on the machine.
    with ServerProcess("--workers", "2", env={"TMPDIR": str(tmp_path)}, startup_timeout=30) as server:
        # No keep-alive: a new connection each time, so both workers get requests.
        with httpx.Client(base_url=server.url, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for _ in range(decisions):
                assert http.post("/v1/decide", json={"context": {}}).status_code == 200
        # Each worker copies its counts into the shared files within FLUSH_EVERY (0.25 s), and
        # before it answers a scrape: wait until the other worker's are in, then every scrape agrees.
        deadline = time.monotonic() + 15
        while metric_total(httpx.get(server.url + "/metrics", timeout=5).text, "ttlpolicy_decisions_total") \
                != decisions and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(4):
            text = httpx.get(server.url + "/metrics", timeout=5).text
            assert metric_total(text, "ttlpolicy_decisions_total") == decisions
            assert metric_total(text, "ttlpolicy_decision_duration_seconds_count") == decisions
            assert "ttlpolicy_seconds_since_last_successful_load " in text
            assert "# TYPE ttlpolicy_active_tokens gauge" in text  # read from the store, by any worker
        assert [d.name for d in tmp_path.iterdir() if d.name.startswith("ttlpolicy-metrics-")]
    assert server.proc.returncode == 0
    assert not [d.name for d in tmp_path.iterdir() if d.name.startswith("ttlpolicy-metrics-")]
