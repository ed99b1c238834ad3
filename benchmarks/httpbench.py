"""HTTP: ``POST /v1/decide`` under ``wrk`` on loopback, ttlpolicy against a trivial endpoint.

Each configuration starts a fresh server process (``ttlpolicy serve`` or uvicorn serving
benchmarks/http/trivial_app.py with the same settings), waits until it answers, runs a warm-up,
then one measured ``wrk`` run (64 connections, one wrk thread so that the server keeps the other
core). ttlpolicy runs as in production: Prometheus metrics on, the decision log written to a
file, and optionally API-key credentials. Server RSS is read from /proc after the warm-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
API_KEY = "bench-" + hashlib.sha256(b"ttlpolicy benchmarks").hexdigest()[:32]  # loopback-only, throwaway


@dataclass
class HttpResult:
    label: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    errors: int
    requests: int
    note: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (uvicorn workers), in MiB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return total / 1024


def _wait_ready(port: int, body: bytes, headers: dict[str, str], proc: subprocess.Popen[bytes],
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/decide", data=body,
                                             headers={"Content-Type": "application/json", **headers})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not answer within 60 s")


def _wrk(port: int, bodies: Path, seconds: float, connections: int, key: str | None) -> dict[str, Any]:
    env = dict(os.environ, WRK_BODIES=str(bodies), WRK_API_KEY=key or "")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "-s", str(HERE / "http" / "decide.lua"), f"http://127.0.0.1:{port}/v1/decide"],
                         capture_output=True, text=True, env=env, timeout=seconds + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    return json.loads(lines[-1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_http(contexts: list[tuple[dict[str, Any], str]], seconds: float, warmup: float,
             workers_list: tuple[int, ...] = (1, 2), connections: int = 64,
             log: Any = sys.stderr) -> tuple[list[HttpResult], list[str]]:
    """All configurations; returns results and notes (e.g. why something did not run)."""
    notes: list[str] = []
    if shutil.which("wrk") is None:
        return [], ["wrk is not installed (apt-get install -y wrk); HTTP benchmarks skipped"]
    ttlpolicy = shutil.which("ttlpolicy", path=os.path.dirname(sys.executable)) or shutil.which("ttlpolicy")
    if ttlpolicy is None or not (ROOT / "src" / "ttlpolicy" / "server" / "app.py").exists():
        notes.append("`ttlpolicy serve` not available; only the trivial endpoint was measured")
    results: list[HttpResult] = []
    with tempfile.TemporaryDirectory(prefix="ttlpolicy-bench-") as tmp:
        tmpdir = Path(tmp)
        bodies = tmpdir / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"context": c, "now": n}) + "\n" for c, n in contexts))
        first_body = json.dumps({"context": contexts[0][0], "now": contexts[0][1]}).encode()
        configs: list[tuple[str, list[str], str | None, Path | None]] = []
        for workers in workers_list:
            configs.append((f"trivial Starlette endpoint", [
                sys.executable, "-m", "uvicorn", "trivial_app:app", "--app-dir", str(HERE / "http"),
                "--workers", str(workers), "--no-access-log", "--no-server-header", "--log-level", "warning",
                "--loop", "auto", "--http", "auto"], None, None))
            if ttlpolicy is None:
                continue
            for auth in (False, True):
                config = tmpdir / f"serve-{workers}-{auth}.yaml"
                decision_log = tmpdir / f"decisions-{workers}-{auth}.jsonl"
                settings: dict[str, Any] = {
                    "policies": str(ROOT / "policies"), "workers": workers, "log_level": "warning",
                    "access_log": False, "reload": {"watch": False},
                    "decision_log": {"sink": "file", "path": str(decision_log)},
                }
                if auth:
                    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
                    settings["auth"] = {"api_keys": [{"name": "bench", "hash": f"sha256:{digest}",
                                                      "scopes": ["decide"]}]}
                config.write_text(json.dumps(settings))
                label = "ttlpolicy serve, metrics + decision log" + (" + API key" if auth else "")
                configs.append((label, [ttlpolicy, "serve", "--config", str(config)],
                                API_KEY if auth else None, decision_log))
        for label, command, key, decision_log in configs:
            workers = int(command[command.index("--workers") + 1]) if "--workers" in command else \
                json.loads(Path(command[-1]).read_text())["workers"]
            port = _free_port()
            command = [*command, "--port", str(port)]
            print(f"    {label}, {workers} worker(s)", file=log, flush=True)
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                _wait_ready(port, first_body, headers, proc)
                _wrk(port, bodies, warmup, connections, key)
                rss = _rss_mb(proc.pid)
                summary = _wrk(port, bodies, seconds, connections, key)
            except Exception as exc:  # noqa: BLE001 - report the configuration as failed, go on
                _stop(proc)
                err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
                notes.append(f"{label} ({workers} worker(s)) failed: {exc} {err}".strip())
                continue
            _stop(proc)
            errors = sum(summary[k] for k in summary if k.startswith("errors_"))
            note = ""
            if decision_log is not None:
                lines = decision_log.read_text().count("\n") if decision_log.exists() else 0
                note = f"{lines} decision-log records"
            results.append(HttpResult(label, workers, summary["rps"], summary["p50_us"] / 1000,
                                      summary["p99_us"] / 1000, rss, errors, summary["requests"], note))
    return results, notes
