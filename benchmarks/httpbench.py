"""HTTP: ``POST /v1/decide`` under ``wrk`` on loopback, ttlpolicy against a trivial endpoint.

For each worker count, every configuration's server process is started at once (``ttlpolicy
serve``, or uvicorn serving benchmarks/http/trivial_app.py with the same settings) and warmed up;
then ``wrk`` (64 connections, one wrk thread so that the server keeps the other core) loads them
one after the other, round-robin, ``--rounds`` times. On a shared machine the load of the
neighbours changes from minute to minute; round-robin rounds expose every configuration to the
same neighbours, and each share is the median over rounds of the ratio to the trivial endpoint
*of the same round*. ttlpolicy runs as in production: Prometheus metrics on, the decision log
written to a file, activity tracking on (its default) in a fresh SQLite state store, and
optionally API-key credentials; and both once more with activity off.

Besides requests/s and latency, the server's CPU time per request (user + system, all its
processes and threads, from /proc, over the measured runs) is reported: it is what the server
itself spends, and moves far less with the neighbours than requests/s does. Server RSS is read
from /proc after the warm-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
    cpu_us: float | None = None  # server CPU time (all processes and threads) per request
    share: float | None = None  # median over rounds of requests/s ÷ the trivial endpoint's, same round
    p99_ratio: float | None = None  # median over rounds of p99 ÷ the trivial endpoint's, same round


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_tree(pid: int) -> Iterator[int]:
    """``pid`` and all its descendants (uvicorn workers), children of any of their threads."""
    pids = [pid]
    while pids:
        current = pids.pop()
        yield current
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                pids += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue


def _rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants, in MiB."""
    total = 0
    for current in _process_tree(pid):
        try:
            total += sum(int(line.split()[1]) for line in Path(f"/proc/{current}/status").read_text().splitlines()
                         if line.startswith("VmRSS:"))
        except (OSError, ValueError):
            continue
    return total / 1024


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads and all its descendants."""
    total = 0
    for current in _process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


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
             workers_list: tuple[int, ...] = (1, 2), connections: int = 64, rounds: int = 3,
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
        for workers in workers_list:
            configs: list[tuple[str, list[str], str | None, Path | None]] = [("trivial Starlette endpoint", [
                sys.executable, "-m", "uvicorn", "trivial_app:app", "--app-dir", str(HERE / "http"),
                "--workers", str(workers), "--no-access-log", "--no-server-header", "--log-level", "warning",
                "--loop", "auto", "--http", "auto"], None, None)]
            if ttlpolicy is not None:
                configs += [_serve_config(tmpdir, ttlpolicy, workers, auth, activity)
                            for auth, activity in ((False, True), (True, True), (False, False), (True, False))]
            results += _run_side_by_side(configs, workers, bodies, first_body, seconds, warmup, connections,
                                         rounds, notes, log)
    return results, notes


def _serve_config(tmpdir: Path, ttlpolicy: str, workers: int, auth: bool, activity: bool
                  ) -> tuple[str, list[str], str | None, Path | None]:
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
        settings["auth"] = {"api_keys": [{"name": "bench", "hash": f"sha256:{digest}", "scopes": ["decide"]}]}
    config.write_text(json.dumps(settings))
    label = ("ttlpolicy serve, metrics + decision log" + (" + API key" if auth else "")
             + ("" if activity else ", activity off"))
    return label, [ttlpolicy, "serve", "--config", str(config)], API_KEY if auth else None, decision_log


def _run_side_by_side(configs: list[tuple[str, list[str], str | None, Path | None]], workers: int, bodies: Path,
                      first_body: bytes, seconds: float, warmup: float, connections: int, rounds: int,
                      notes: list[str], log: Any) -> list[HttpResult]:
    """Start every configuration's server, warm each up, then measure them round-robin."""
    running: list[tuple[str, subprocess.Popen[bytes], int, str | None, Path | None, float]] = []
    try:
        for label, command, key, decision_log in configs:
            port = _free_port()
            proc = subprocess.Popen([*command, "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            try:
                _wait_ready(port, first_body, {"Authorization": f"Bearer {key}"} if key else {}, proc)
                _wrk(port, bodies, warmup, connections, key)
            except Exception as exc:  # noqa: BLE001 - report the configuration as failed, go on
                _stop(proc)
                err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
                notes.append(f"{label} ({workers} worker(s)) failed: {exc} {err}".strip())
                continue
            running.append((label, proc, port, key, decision_log, _rss_mb(proc.pid)))
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in running}
        for round_ in range(rounds):
            for label, proc, port, key, _, _ in running:
                print(f"    {label}, {workers} worker(s), round {round_ + 1}/{rounds}", file=log, flush=True)
                before = _cpu_seconds(proc.pid)
                try:
                    summary = _wrk(port, bodies, seconds, connections, key)
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"{label} ({workers} worker(s)), round {round_ + 1}: {exc}")
                    continue
                summary["cpu_s"] = _cpu_seconds(proc.pid) - before
                runs[label].append(summary)
    finally:
        for _, proc, *_ in running:
            _stop(proc)
    trivial = runs.get(configs[0][0], []) if configs else []
    results = []
    for label, proc, _, _, decision_log, rss in running:
        done = runs[label]
        if not done:
            continue
        requests = sum(r["requests"] for r in done)
        errors = sum(r[k] for r in done for k in r if k.startswith("errors_"))
        note = ""
        if decision_log is not None:
            lines = decision_log.read_text().count("\n") if decision_log.exists() else 0
            note = f"{lines} decision-log records"
        share = p99_ratio = None
        if done is not trivial and len(trivial) == len(done):
            share = statistics.median(r["rps"] / t["rps"] for r, t in zip(done, trivial))
            p99_ratio = statistics.median(r["p99_us"] / t["p99_us"] for r, t in zip(done, trivial))
        results.append(HttpResult(label, workers, statistics.median(r["rps"] for r in done),
                                  statistics.median(r["p50_us"] for r in done) / 1000,
                                  statistics.median(r["p99_us"] for r in done) / 1000, rss, errors, requests, note,
                                  cpu_us=sum(r["cpu_s"] for r in done) / requests * 1e6 if requests else None,
                                  share=share, p99_ratio=p99_ratio))
    return results


TARGET_HTTP_SHARE, TARGET_HTTP_SHARE_AUTH, TARGET_P99_RATIO = 0.70, 0.65, 2.0  # p99: × the trivial endpoint's


def _share(r: HttpResult, base: HttpResult) -> float:
    return r.share if r.share is not None else r.rps / base.rps


def _p99_ratio(r: HttpResult, base: HttpResult) -> float:
    return r.p99_ratio if r.p99_ratio is not None else r.p99_ms / base.p99_ms


def http_markdown(http: list[HttpResult], notes: list[str], seconds: float, decision_us: float | None = None,
                  rounds: int = 1) -> list[str]:
    """The HTTP section of the results: the table, the targets (issue 12) and what limits them."""
    how = (f"{rounds} rounds of {seconds:g} s per server, round-robin (every server started and warmed up "
           "first); requests/s, p50 and p99 are medians over the rounds, *share* and *p99 × trivial* the medians "
           "of the ratios to the trivial endpoint of the same round" if rounds > 1 else f"{seconds:g} s after a warm-up")
    md = ["## HTTP: `POST /v1/decide`", "",
          f"wrk, 1 thread, 64 connections, on loopback, {how}; 200 different workforce "
          "request bodies in rotation. Same uvicorn settings for both servers (uvloop, httptools, no access log). "
          "ttlpolicy: metrics on, decision log to a file, activity tracking on (its default) in a fresh SQLite "
          "state store, unless the row says otherwise. *CPU µs/req*: the server's CPU time (user + system, every "
          "process and thread) per request over the measured runs; *CPU share*: the trivial endpoint's CPU per "
          "request ÷ this one's, the share of its rate a CPU-bound server would reach without neighbours.", "",
          "| server | workers | requests/s | share of trivial | CPU µs/req | CPU share | p50 ms | p99 ms | "
          "p99 × trivial | RSS MiB | errors | note |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    trivial = {r.workers: r for r in http if r.label.startswith("trivial")}
    for r in http:
        base = trivial.get(r.workers)
        share = f"{_share(r, base):.0%}" if base and base is not r else "—"
        p99 = f"{_p99_ratio(r, base):.1f}" if base and base is not r else "—"
        cpu = f"{r.cpu_us:,.0f}" if r.cpu_us is not None else "—"
        cpu_share = (f"{base.cpu_us / r.cpu_us:.0%}" if base and base is not r and base.cpu_us and r.cpu_us
                     else "—")
        md.append(f"| {r.label} | {r.workers} | {r.rps:,.0f} | {share} | {cpu} | {cpu_share} | {r.p50_ms:.2f} | "
                  f"{r.p99_ms:.2f} | {p99} | {r.rss_mb:.0f} | {r.errors} | {r.note} |")
    md += [""] + [f"- {n}" for n in notes] + [""]
    md += ["**HTTP targets** (1 worker)", "", "| target | measured | met |", "|---|---|---|"]
    for r in http:
        base = trivial.get(r.workers)
        if r.workers != 1 or r.label.startswith("trivial") or base is None:
            continue
        goal = TARGET_HTTP_SHARE_AUTH if "API key" in r.label else TARGET_HTTP_SHARE
        share, ratio = _share(r, base), _p99_ratio(r, base)
        md.append(f"| {r.label}: ≥ {goal:.0%} of trivial req/s | {share:.0%} | {'met' if share >= goal else 'NOT met'} |")
        md.append(f"| {r.label}: p99 ≤ {TARGET_P99_RATIO:g}× the trivial endpoint's | {r.p99_ms:.2f} ms = "
                  f"{ratio:.1f}× | {'met' if ratio <= TARGET_P99_RATIO else 'NOT met'} |")
    md.append("")
    base1 = trivial.get(1)
    served = [r for r in http if r.workers == 1 and not r.label.startswith("trivial")]
    if base1 is not None and served:
        if base1.cpu_us is not None and all(r.cpu_us is not None for r in served):
            per_request, added = base1.cpu_us, {r.label: (r.cpu_us or 0) - base1.cpu_us for r in served}
            what = f"server CPU per request (1 worker): the trivial endpoint {per_request:,.0f} µs"
        else:
            per_request, added = 1e6 / base1.rps, {r.label: 1e6 / r.rps - 1e6 / base1.rps for r in served}
            what = f"server time per request (1 worker): the trivial endpoint {per_request:,.0f} µs ({base1.rps:,.0f} req/s)"
        md += [f"{what[0].upper()}{what[1:]}; 70 % of its rate leaves {per_request / 0.7 - per_request:,.0f} µs "
               "per request for everything ttlpolicy adds. ttlpolicy adds: "
               + "; ".join(f"{added[r.label]:,.0f} µs ({r.label.removeprefix('ttlpolicy serve, ')})" for r in served)
               + (f". The in-process decision with `to_dict` is {decision_us:,.0f} µs of it in this run."
                  if decision_us is not None else "."), ""]
    return md


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/httpbench.py``: the HTTP part alone, written to RESULTS-http.md."""
    import argparse

    from contexts import workforce_contexts
    from machine import describe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds per server (default 3)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS-http.md")
    args = parser.parse_args(argv)
    info = describe(HTTP_PACKAGES, (("wrk", "-v"),))
    started = time.perf_counter()
    http, notes = run_http(workforce_contexts(200, seed=9), seconds=args.seconds, warmup=3,
                           workers_list=tuple(int(w) for w in args.workers.split(",")), rounds=args.rounds)
    md = ["# ttlpolicy HTTP benchmark results", "",
          f"Written by `benchmarks/httpbench.py` on {info['date']}; how to read them: [README.md](README.md).", "",
          f"- CPU: {info['cpu']}, {info['cores']} cores; memory {info['memory']}; {info['python']} on {info['os']}",
          f"- load average (1/5/15 min) at start: {info['load']} (a shared machine: compare the ratios)",
          f"- packages: {info['packages']}", f"- load generator: {info['tools']}", ""]
    md += http_markdown(http, notes, args.seconds, rounds=args.rounds)
    md += [f"Total run time {time.perf_counter() - started:.0f} s; load average at the end: "
           f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    args.output.write_text("\n".join(md))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
