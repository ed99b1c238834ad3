"""State: what a rate limit and a revocation check add to a decision, on SQLite and on Redis;
and the token-check endpoint's requests/s and p99 on one worker.

    python benchmarks/state.py            # writes benchmarks/STATE_RESULTS.md
    python benchmarks/state.py --quick    # fewer decisions, shorter wrk runs

In-process, side by side in one run, on the same contexts (benchmarks/contexts.py):

* ``policy only``: ``PolicySet.decide`` on the bundled ``workforce`` policy;
* ``+ rate limit + revocation``: the same policy with one rate limit (per user, never exceeded)
  decided through ``StateRuntime.decide`` — one store round trip for the limit — plus a
  revocation check of the subject (from memory), on SQLite (a file in a temp dir) and on Redis
  (a ``redis-server`` started on a free loopback port). Redis round trips per decision are counted
  from the server's own ``INFO stats`` (``total_commands_processed`` does not count pipelines, so
  the Lua script calls are counted instead).

HTTP: ``wrk`` (64 connections, one thread) against ``POST /v1/tokens/check`` on ``ttlpolicy serve``
with one worker, checking a token's claims against a store holding 1,000 revocations. Needs
``wrk`` and ``redis-server`` (Debian packages); a missing one is reported, the rest goes on.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from contexts import workforce_contexts  # noqa: E402

from ttlpolicy import load_sources  # noqa: E402
from ttlpolicy.context import parse_timestamp  # noqa: E402
from ttlpolicy.state import open_store  # noqa: E402
from ttlpolicy.state.revocation import TokenFacts  # noqa: E402
from ttlpolicy.state.runtime import StateRuntime  # noqa: E402

RATE_LIMIT = """
rate_limits:
  - name: bench-per-user
    key: user.id
    rate: 1000000000 per 1h
    on_exceed: {deny: never in this benchmark}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def policy_sets() -> tuple[Any, Any]:
    sources = {str(p): p.read_text() for p in (ROOT / "policies").glob("*.yaml")}
    plain = load_sources(sources)
    limited = dict(sources)
    workforce = str(ROOT / "policies" / "workforce.yaml")
    limited[workforce] = limited[workforce] + RATE_LIMIT
    return plain, load_sources(limited)


def contexts(n: int) -> list[tuple[dict[str, Any], datetime, str]]:
    out = []
    for i, (context, now) in enumerate(workforce_contexts(n)):
        context = dict(context)
        user = dict(context.get("user", {}))
        user["id"] = f"user-{i % 1000}"
        context["user"] = user
        out.append((context, parse_timestamp(now), user["id"]))
    return out


def timed(fn: Callable[[dict[str, Any], datetime, str], Any], cases: list[tuple[dict[str, Any], datetime, str]],
          repeats: int) -> tuple[float, float]:
    """(median of per-repeat median µs, median of per-repeat p99 µs) per decision."""
    medians, p99s = [], []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        samples = []
        for context, now, user in cases:
            start = clock()
            fn(context, now, user)
            samples.append(clock() - start)
        samples.sort()
        medians.append(samples[len(samples) // 2] / 1000)
        p99s.append(samples[int(len(samples) * 0.99)] / 1000)
    return statistics.median(medians), statistics.median(p99s)


class Redis:
    def __init__(self, directory: Path):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def script_calls(self) -> int:
        stats = self.client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def in_process(n: int, repeats: int, tmp: Path) -> list[str]:
    plain, limited = policy_sets()
    cases = contexts(n)
    rows = []
    policy_only = timed(lambda c, t, u: plain.decide(c, now=t), cases, repeats)
    rows.append(("policy only (PolicySet.decide)", *policy_only, "0"))

    def stateful(runtime: StateRuntime) -> Callable[[dict[str, Any], datetime, str], Any]:
        def decide(context: dict[str, Any], now: datetime, user: str) -> Any:
            decision = runtime.decide(limited, context, now=now, caller="bench")
            runtime.revoked(TokenFacts(subject=user, issued_at=now.timestamp()))
            return decision
        return decide

    sqlite_runtime = StateRuntime(open_store(f"sqlite://{tmp}/state.db"))
    sqlite_runtime.revocations.revoke_all([sqlite_runtime.revocations.prepare(
        {"kind": "subject", "value": f"other-{i}", "reason": "bench"}, "bench", time.time()) for i in range(1000)],
        time.time())
    result = timed(stateful(sqlite_runtime), cases, repeats)
    rows.append(("+ rate limit + revocation, SQLite", *result, "1 transaction"))
    sqlite_runtime.close()
    if shutil.which("redis-server"):
        redis = Redis(tmp / "redis")
        try:
            runtime = StateRuntime(open_store(redis.url))
            before = redis.script_calls()
            result = timed(stateful(runtime), cases, repeats)
            trips = (redis.script_calls() - before) / (len(cases) * repeats)
            rows.append(("+ rate limit + revocation, Redis", *result, f"{trips:.2f} round trips"))
            runtime.close()
        finally:
            redis.stop()
    else:
        rows.append(("+ rate limit + revocation, Redis", float("nan"), float("nan"), "redis-server missing"))
    base = policy_only[0]
    lines = ["| decision | median µs | p99 µs | added (median) | store calls per decision |", "|---|---:|---:|---:|---|"]
    for label, median, p99, calls in rows:
        added = "" if label.startswith("policy only") else f"+{median - base:.1f} µs"
        lines.append(f"| {label} | {median:.1f} | {p99:.1f} | {added} | {calls} |")
    return lines


def check_endpoint(seconds: int, tmp: Path) -> list[str]:
    if not shutil.which("wrk"):
        return ["wrk is not installed (apt-get install wrk): the check endpoint was not measured."]
    lines = ["| store | requests/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    stores = [("SQLite", f"sqlite://{tmp}/http-state.db")]
    redis = Redis(tmp / "redis-http") if shutil.which("redis-server") else None
    if redis is not None:
        stores.append(("Redis", redis.url))
    try:
        for label, url in stores:
            lines.append(_wrk_check(label, url, seconds, tmp))
    finally:
        if redis is not None:
            redis.stop()
    return lines


_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sub": "user-42", "jti": "t-1", "client_id": "web", "iat": %d}'
""" % int(time.time())


def _wrk_check(label: str, url: str, seconds: int, tmp: Path) -> str:
    port = free_port()
    env = {**os.environ, "TTLPOLICY_STATE__URL": url, "TTLPOLICY_DECISION_LOG__SINK": "off"}
    server = subprocess.Popen([sys.executable, "-m", "ttlpolicy.cli.main", "serve", "--port", str(port),
                               "--no-watch", "--log-level", "warning"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        import json

        items = [{"kind": "subject", "value": f"revoked-{i}", "reason": "bench"} for i in range(1000)]
        request = urllib.request.Request(base + "/v1/revocations", data=json.dumps({"revocations": items}).encode(),
                                         headers={"content-type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=30)
        script = tmp / "check.lua"
        script.write_text(_LUA)
        subprocess.run(["wrk", "-t1", "-c64", "-d2s", "-s", str(script), base + "/v1/tokens/check"],
                       capture_output=True, timeout=60)  # warm-up
        out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(script),
                              base + "/v1/tokens/check"], capture_output=True, text=True, timeout=seconds + 60).stdout
        rps = _after(out, "Requests/sec:")
        p50, p99 = _latency(out, "50%"), _latency(out, "99%")
        errors = 0
        for line in out.splitlines():
            if "Non-2xx" in line or "Socket errors" in line:
                errors += sum(int(x) for x in line.replace(",", " ").split() if x.isdigit())
        return f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} |"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def _after(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.strip().startswith(key):
            return float(line.split()[1])
    return float("nan")


def _latency(text: str, key: str) -> float:
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == key:
            value = parts[1]
            for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
                if value.endswith(unit):
                    return float(value[: -len(unit)]) * scale
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(HERE / "STATE_RESULTS.md"))
    args = parser.parse_args(argv)
    n, repeats, seconds = (2000, 3, 5) if args.quick else (5000, 5, 15)
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        decisions = in_process(n, repeats, tmp)
        http = check_endpoint(seconds, tmp)
    cpu = platform.processor() or platform.machine()
    text = "\n".join([
        "# State benchmark results", "",
        f"Generated by `python benchmarks/state.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python {platform.python_version()}, {cpu}, "
        f"{os.cpu_count()} cores (shared). {n} contexts × {repeats} repeats per row.", "",
        "## A decision with one rate limit and a revocation check", "", *decisions, "",
        f"## `POST /v1/tokens/check`, one worker, wrk -t1 -c64 -d{seconds}s", "", *http, "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
