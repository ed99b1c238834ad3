"""HTTP: ``POST /v1/decide`` under ``wrk`` on loopback, ttlpolicy against a trivial endpoint.

Each configuration starts a fresh server process (``ttlpolicy serve`` or uvicorn serving
benchmarks/http/trivial_app.py with the same settings), waits until it answers, runs a warm-up,
then one measured ``wrk`` run (64 connections, one wrk thread so that the server keeps the other
core). ttlpolicy runs as in production: Prometheus metrics on, the decision log written to a
file, activity tracking on (its default) in a fresh SQLite state store, and optionally API-key
credentials; and both once more with activity off, to show what its per-decision store round trip
costs.
Server RSS is read from /proc after the warm-up.
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
HTTP_PACKAGES = ("ttlpolicy", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "prometheus-client")
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
            for auth, activity in ((False, True), (True, True), (False, False), (True, False)):
                config = tmpdir / f"serve-{workers}-{auth}-{activity}.yaml"
                decision_log = tmpdir / f"decisions-{workers}-{auth}-{activity}.jsonl"
                settings: dict[str, Any] = {
                    "policies": str(ROOT / "policies"), "workers": workers, "log_level": "warning",
                    "access_log": False, "reload": {"watch": False},
                    "decision_log": {"sink": "file", "path": str(decision_log)},
                    # a fresh store per run: the default one ($XDG_STATE_HOME) keeps other runs' activity
                    "state": {"url": f"sqlite:///{tmpdir}/state-{workers}-{auth}-{activity}.db"},
                    "activity": {"enabled": activity},
                }
                if auth:
                    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
                    settings["auth"] = {"api_keys": [{"name": "bench", "hash": f"sha256:{digest}",
                                                      "scopes": ["decide"]}]}
                config.write_text(json.dumps(settings))
                label = ("ttlpolicy serve, metrics + decision log" + (" + API key" if auth else "")
                         + ("" if activity else ", activity off"))
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


TARGET_HTTP_SHARE, TARGET_HTTP_SHARE_AUTH, TARGET_P99_RATIO = 0.70, 0.65, 2.0  # p99: × the trivial endpoint's


def http_markdown(http: list[HttpResult], notes: list[str], seconds: float, decision_us: float | None = None
                  ) -> list[str]:
    """The HTTP section of the results: the table, the targets (issue 12) and what limits them."""
    md = ["## HTTP: `POST /v1/decide`", "",
          f"wrk, 1 thread, 64 connections, {seconds:g} s after a warm-up, on loopback; 200 different workforce "
          "request bodies in rotation. Same uvicorn settings for both servers (uvloop, httptools, no access log). "
          "ttlpolicy: metrics on, decision log to a file, activity tracking on (its default) in a fresh SQLite "
          "state store, unless the row says otherwise.", "",
          "| server | workers | requests/s | share of trivial | p50 ms | p99 ms | p99 × trivial | RSS MiB | errors | note |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    trivial = {r.workers: r for r in http if r.label.startswith("trivial")}
    for r in http:
        base = trivial.get(r.workers)
        share = f"{r.rps / base.rps:.0%}" if base and base is not r else "—"
        p99 = f"{r.p99_ms / base.p99_ms:.1f}" if base and base is not r else "—"
        md.append(f"| {r.label} | {r.workers} | {r.rps:,.0f} | {share} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {p99} | "
                  f"{r.rss_mb:.0f} | {r.errors} | {r.note} |")
    md += [""] + [f"- {n}" for n in notes] + [""]
    md += ["**HTTP targets** (1 worker)", "", "| target | measured | met |", "|---|---|---|"]
    for r in http:
        base = trivial.get(r.workers)
        if r.workers != 1 or r.label.startswith("trivial") or base is None:
            continue
        goal = TARGET_HTTP_SHARE_AUTH if "API key" in r.label else TARGET_HTTP_SHARE
        share, ratio = r.rps / base.rps, r.p99_ms / base.p99_ms
        md.append(f"| {r.label}: ≥ {goal:.0%} of trivial req/s | {share:.0%} | {'met' if share >= goal else 'NOT met'} |")
        md.append(f"| {r.label}: p99 ≤ {TARGET_P99_RATIO:g}× the trivial endpoint's | {r.p99_ms:.2f} ms = "
                  f"{ratio:.1f}× | {'met' if ratio <= TARGET_P99_RATIO else 'NOT met'} |")
    md.append("")
    base1 = trivial.get(1)
    served = [r for r in http if r.workers == 1 and not r.label.startswith("trivial")]
    if base1 is not None and served:
        per_request = 1e6 / base1.rps
        md += [f"Server time per request (1 worker): the trivial endpoint {per_request:,.0f} µs "
               f"({base1.rps:,.0f} req/s); 70 % of its rate leaves {per_request / 0.7 - per_request:,.0f} µs per "
               "request for everything ttlpolicy adds. ttlpolicy adds: "
               + "; ".join(f"{1e6 / r.rps - per_request:,.0f} µs ({r.label.removeprefix('ttlpolicy serve, ')})"
                           for r in served)
               + (f". The in-process decision with `to_dict` is {decision_us:,.0f} µs of it in this run."
                  if decision_us is not None else "."), ""]
    return md


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/httpbench.py``: the HTTP part alone, written to RESULTS-http.md."""
    import argparse

    from contexts import workforce_contexts
    from machine import describe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS-http.md")
    args = parser.parse_args(argv)
    info = describe(HTTP_PACKAGES, (("wrk", "-v"),))
    started = time.perf_counter()
    http, notes = run_http(workforce_contexts(200, seed=9), seconds=args.seconds, warmup=3,
                           workers_list=tuple(int(w) for w in args.workers.split(",")))
    md = ["# ttlpolicy HTTP benchmark results", "",
          f"Written by `benchmarks/httpbench.py` on {info['date']}; how to read them: [README.md](README.md).", "",
          f"- CPU: {info['cpu']}, {info['cores']} cores; memory {info['memory']}; {info['python']} on {info['os']}",
          f"- load average (1/5/15 min) at start: {info['load']} (a shared machine: compare the ratios)",
          f"- packages: {info['packages']}", f"- load generator: {info['tools']}", ""]
    md += http_markdown(http, notes, args.seconds)
    md += [f"Total run time {time.perf_counter() - started:.0f} s; load average at the end: "
           f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    args.output.write_text("\n".join(md))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
