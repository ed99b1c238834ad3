"""State benchmarks (issue 9, "Speed"): what rate limits and revocation checks add to a decision,
on the embedded SQLite store and on Redis, side by side in one run; and the token check endpoint.

    python benchmarks/state.py              # writes benchmarks/RESULTS-state.md (about 2 minutes)
    python benchmarks/state.py --quick      # about 30 seconds, fewer repeats
    python benchmarks/state.py --skip-http  # in-process only

In-process: the bundled policy set with one rate limit added (every decision counts one event
for its user, ``600 per 1m``) and 1,000 revocations in force. Three variants are timed
round-robin in the same rounds, so a noisy neighbour slows them alike: the policy alone
(``PolicySet.decide``, what ``ttlpolicy test`` and the library do), and the revocation check
plus the stateful decision (``StateRuntime.revoked`` + ``StateRuntime.decide``, what the service
does for a decision with a subject token) on SQLite and on Redis. What state adds is the paired
difference per round, reported as the median over rounds. Redis also runs a bare ``PING``
through the same client in the same rounds: one round trip, for comparison. The commands Redis
executed per decision are read from the server's own ``INFO commandstats``.

HTTP: ``POST /v1/tokens/check`` under wrk (one worker, API key, 1,000 revocations in force)
against a trivial Starlette endpoint that parses the body and answers ``{"active": true}``.

Redis runs when ``redis-server`` is on PATH (started on a free loopback port in a temporary
directory, stopped afterwards); HTTP runs when ``wrk`` is. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from contexts import workforce_contexts  # noqa: E402
from machine import describe  # noqa: E402
from services import free_port, redis_server  # noqa: E402

from ttlpolicy import PolicySet, load_sources  # noqa: E402
from ttlpolicy.policyset import resolve_now  # noqa: E402
from ttlpolicy.state import StateStore, open_store  # noqa: E402
from ttlpolicy.state.ratelimit import key_digest, store_key  # noqa: E402
from ttlpolicy.state.revocation import TokenFacts  # noqa: E402
from ttlpolicy.state.runtime import StateRuntime  # noqa: E402

PING = "Redis: one PING (one round trip, for comparison)"
# Commands a Lua script cannot send: what the client itself sent.
CLIENT_ONLY = {"eval", "evalsha", "eval_ro", "evalsha_ro", "script|exists", "script|load", "multi", "exec"}
# Issue 9's targets.
TARGET_SQLITE_ADDED_US = 50.0
TARGET_CHECK_RPS = 5000.0
REVOCATIONS = 1000
RATE_LIMIT = """
rate_limits:
  - name: decisions-per-user
    description: One user asking for tokens far more often than a person could.
    key: user
    rate: [600 per 1m]
    on_exceed: {deny: too many token requests}
"""
PACKAGES = ("ttlpolicy", "redis", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "prometheus-client")
API_KEY = "bench-" + hashlib.sha256(b"ttlpolicy state benchmarks").hexdigest()[:32]  # loopback-only, throwaway


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bundled_with_rate_limit() -> PolicySet:
    """The bundled policy set, with one rate limit added to the default policy."""
    sources = {path.name: path.read_text() for path in sorted((ROOT / "policies").glob("*.yaml"))}
    sources["workforce.yaml"] += RATE_LIMIT
    return load_sources(sources)


def revoke_many(runtime: StateRuntime, n: int, now: float) -> tuple[float, float]:
    """``n`` single revocations (subjects), one request each, then ``n`` more in one bulk request;
    seconds for each. This is what never finished before the store was fixed."""
    registry = runtime.revocations
    started = time.perf_counter()
    for i in range(n):
        registry.revoke("subject", f"revoked-{i}", reason="benchmark", by="bench", now=now)
    single = time.perf_counter() - started
    started = time.perf_counter()
    registry.revoke_all([registry.prepare({"kind": "token", "value": f"jti-{i}", "reason": "benchmark"}, "bench", now)
                         for i in range(n)], now)
    return single, time.perf_counter() - started


@dataclass
class Variant:
    label: str
    run: Callable[[Any], Any]
    samples: list[list[int]] = field(default_factory=list)  # per round: ns per call

    def medians(self) -> list[float]:
        """Per round: the median µs per call (a noisy neighbour moves means far more than medians)."""
        return [statistics.median(r) / 1000 for r in self.samples]

    def means(self) -> list[float]:
        return [sum(r) / len(r) / 1000 for r in self.samples]


@dataclass
class InProcess:
    variants: list[Variant]
    rounds: int
    per_round: int
    revocations: dict[str, tuple[float, float]]  # per store: seconds for n single revocations, n in one request
    revocations_in_force: int
    commands: dict[str, float]  # Redis, per decision: commands the server executed, by name
    round_trips: dict[str, float]  # per store, per decision: transactions (SQLite) / socket writes (Redis)
    decisions: dict[str, dict[str, int]]  # per variant: decided / rate-limited / revoked answers

    def by(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)

    def added(self, label: str, base: str = "policy only") -> float:
        """Median over rounds of the paired difference of the rounds' medians (µs per decision)."""
        return statistics.median(a - b for a, b in zip(self.by(label).medians(), self.by(base).medians()))


def commandstats(store: StateStore) -> dict[str, int]:
    client = getattr(store, "client")
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


@contextmanager
def round_trips(store: StateStore) -> Iterator[list[int]]:
    """Count the store's round trips in this thread: SQLite transactions, or writes to a Redis
    socket (a pipeline is one write; the hidden ``SCRIPT EXISTS`` redis-py sends before a
    pipeline of ``EVALSHA`` scripts would be a second)."""
    import threading

    from redis.connection import AbstractConnection

    count, me = [0], threading.get_ident()
    if store.backend == "sqlite":
        run = getattr(store, "_run")

        def counted_run(*args: Any) -> Any:
            count[0] += threading.get_ident() == me
            return run(*args)

        setattr(store, "_run", counted_run)
        try:
            yield count
        finally:
            delattr(store, "_run")
        return
    send = AbstractConnection.send_packed_command

    def counted_send(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        count[0] += threading.get_ident() == me
        return send(self, *args, **kwargs)

    setattr(AbstractConnection, "send_packed_command", counted_send)
    try:
        yield count
    finally:
        setattr(AbstractConnection, "send_packed_command", send)


def in_process(urls: dict[str, str], rounds: int, per_round: int, revocations_in_force: int = REVOCATIONS) -> InProcess:
    """Every variant, ``rounds`` rounds of ``per_round`` decisions, after ``revocations_in_force``
    subject and as many token revocations were made on each store."""
    policies = bundled_with_rate_limit()
    contexts = [(c, resolve_now(n)) for c, n in workforce_contexts(per_round, seed=11)]
    compiled = policies.get()
    now = time.time()
    # Facts of the tokens the decisions carry: every 50th one belongs to a revoked subject.
    facts = [TokenFacts(jti=f"live-{i}", family=f"fam-{i}",
                        subject=f"revoked-{i % revocations_in_force}" if i % 50 == 0 else c["user"]["id"],
                        client=c["client"]["id"], issued_at=now - 60) for i, (c, _) in enumerate(contexts)]
    # The store key and instant of each decision's rate-limit hit, as StateRuntime computes them.
    limit = policies.rate_limits[compiled.name][0]
    keys = [store_key(compiled.name, limit.name, (), key_digest([c["user"]["id"]])) for c, _ in contexts]
    instants = [n.timestamp() for _, n in contexts]
    variants = [Variant("policy only", lambda i: compiled.decide(contexts[i][0], contexts[i][1])),
                Variant("the activation alone (built again after the policy when a rate limit has a `when` or "
                        "a key that is an expression; not here)",
                        lambda i: compiled.context.activation(contexts[i][0], contexts[i][1]))]
    runtimes: dict[str, StateRuntime] = {}
    revocations: dict[str, tuple[float, float]] = {}
    for name, url in urls.items():
        runtime = StateRuntime(open_store(url)).start()  # the poller runs, as in the service
        runtimes[name] = runtime
        log(f"  {name}: {revocations_in_force:,} single revocations, then {revocations_in_force:,} in one request")
        revocations[name] = revoke_many(runtime, revocations_in_force, now)

        def stateful(i: int, runtime: StateRuntime = runtime) -> Any:
            if runtime.revoked(facts[i]) is not None:
                return None  # the service answers 422 "token revoked" without deciding
            return runtime.decide(policies, contexts[i][0], now=contexts[i][1])

        def hit_alone(i: int, store: StateStore = runtime.store) -> Any:
            return store.window_hit(keys[i], instants[i], limit.windows)

        variants.append(Variant(f"{name}: revocation check + decision with rate limit", stateful))
        variants.append(Variant(f"{name}: the rate-limit hit alone (the store call the decision makes)", hit_alone))
        if name == "Redis":
            client = getattr(runtime.store, "client")

            def ping(i: int, client: Any = client) -> Any:
                return client.ping()

            variants.append(Variant(PING, ping))
    decisions = {}
    for variant in variants:
        if "decision with" not in variant.label:
            continue
        outcomes = {"decided": 0, "rate-limited": 0, "revoked": 0}
        for i in range(len(contexts)):
            out = variant.run(i)
            if out is None:
                outcomes["revoked"] += 1
            elif any(e["exceeded"] for e in out.extra.get("rate_limits", ())):
                outcomes["rate-limited"] += 1
            else:
                outcomes["decided"] += 1
        decisions[variant.label] = outcomes
    # What one decision costs the store, counted: pollers stopped, so only the decisions' own work.
    commands: dict[str, float] = {}
    trips: dict[str, float] = {}
    for name, runtime in runtimes.items():
        runtime.stop()
        variant = next(v for v in variants if v.label.startswith(f"{name}: revocation"))
        before = commandstats(runtime.store) if name == "Redis" else {}
        with round_trips(runtime.store) as count:
            for i in range(len(contexts)):
                variant.run(i)
        decided = len(contexts) - decisions[variant.label]["revoked"]
        trips[name] = count[0] / decided
        if name == "Redis":
            after = commandstats(runtime.store)
            commands = {k: (after.get(k, 0) - before.get(k, 0) - (k == "info")) / decided for k in after}
            commands = {k: v for k, v in commands.items() if v > 0}
        runtime.start()
    gc.collect()
    for round_no in range(rounds):
        for variant in variants:
            samples = []
            run = variant.run
            clock = time.perf_counter_ns
            for i in range(len(contexts)):
                t0 = clock()
                run(i)
                samples.append(clock() - t0)
            variant.samples.append(samples)
        log(f"  round {round_no + 1}/{rounds}: " + ", ".join(f"{v.label.split(':')[0]} {v.medians()[-1]:.0f} µs"
                                                           for v in variants))
    for runtime in runtimes.values():
        runtime.close()
    return InProcess(variants, rounds, per_round, revocations, revocations_in_force, commands, trips, decisions)


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def in_process_report(result: InProcess) -> list[str]:
    base = result.by("policy only")
    base_median = statistics.median(base.medians())
    rows = ["| variant | median µs | mean µs | p99 µs | added to the policy alone | × policy alone |",
            "|---|---:|---:|---:|---:|---:|"]
    for v in result.variants:
        pooled = [s for r in v.samples for s in r]
        median = statistics.median(v.medians())
        extra = f"{result.added(v.label):+.1f} µs" if "decision with" in v.label else "—"
        rows.append(f"| {v.label} | {median:.1f} | {statistics.median(v.means()):.1f} | "
                    f"{percentile(pooled, 0.99):.1f} | {extra} | {median / base_median:.2f} |")
    rows += ["", "*median*: the median over rounds of each round's median time per call; *mean*: the median over "
             "rounds of each round's mean (outliers included: other jobs on the machine, garbage collection); "
             "*added*: the median over rounds of the paired difference of the rounds' medians. The rows without "
             "an *added* value time one part of the stateful decision on its own, for the breakdown.", "",
             "Answers in the timed loop (the same contexts every round): " + "; ".join(
                 f"{label.split(':')[0]}: " + ", ".join(f"{k} {n}" for k, n in counts.items())
                 for label, counts in result.decisions.items()) + ". What each decision cost the store, counted "
             "with the pollers stopped: " + "; ".join(f"{name}: {n:.2f} round trip(s)" for name, n in
                                                     result.round_trips.items()) + " per decided request.", ""]
    rows += ["**Targets (in-process)**", "", "| target | measured | met |", "|---|---|---|"]
    sqlite = next((v for v in result.variants if v.label.startswith("SQLite")), None)
    if sqlite is not None:
        added = result.added(sqlite.label)
        rows.append(f"| the embedded store adds ≤ {TARGET_SQLITE_ADDED_US:g} µs to an in-process decision | "
                    f"{added:+.1f} µs ({result.round_trips['SQLite']:.2f} transaction per decision) | "
                    f"{'met' if added <= TARGET_SQLITE_ADDED_US else 'NOT met'} |")
    redis = next((v for v in result.variants if v.label.startswith("Redis: revocation")), None)
    if redis is not None:
        added = result.added(redis.label)
        ping = statistics.median(result.by(PING).medians())
        sent = {k: v for k, v in result.commands.items() if k in CLIENT_ONLY}
        inside = sorted(k for k in result.commands if k not in CLIENT_ONLY)
        trips = result.round_trips["Redis"]
        met = abs(trips - 1) < 0.005 and len(sent) == 1 and abs(sum(sent.values()) - 1) < 0.005
        rows.append(f"| Redis adds one round trip and nothing else | {added:+.1f} µs, where one `PING` through the "
                    f"same client is {ping:.1f} µs; {trips:.2f} round trip(s) per decision, the server ran "
                    + ", ".join(f"`{k.upper()}` × {v:.2f}" for k, v in sorted(sent.items()))
                    + (f" (inside the script: {', '.join(f'`{k.upper()}`' for k in inside)})" if inside else "")
                    + f" | {'met' if met else 'NOT met'} |")
    rows.append("")
    return rows


def revocation_report(result: InProcess) -> list[str]:
    n = result.revocations_in_force
    rows = [f"| store | {n:,} revocations, one request each | {n:,} in one request |", "|---|---:|---:|"]
    for name, (single, bulk) in result.revocations.items():
        rows.append(f"| {name} | {single:.2f} s ({single / n * 1000:.2f} ms each) | {bulk:.2f} s |")
    return rows + [""]


# -- HTTP: the check endpoint ----------------------------------------------------------------------

@dataclass
class HttpResult:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    answers: str = ""


def _wait(port: int, path: str, body: bytes, headers: dict[str, str], proc: subprocess.Popen[bytes]) -> bytes:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                             headers={"Content-Type": "application/json", **headers})
            with urllib.request.urlopen(request, timeout=2) as response:
                return bytes(response.read())
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise RuntimeError("server did not answer within 60 s")


def _wrk(port: int, path: str, bodies: Path, seconds: float, key: str | None) -> dict[str, Any]:
    env = dict(os.environ, WRK_BODIES=str(bodies), WRK_API_KEY=key or "", WRK_PATH=path)
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{max(1, round(seconds))}s", "--latency",
                          "-s", str(HERE / "http" / "decide.lua"), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, env=env, timeout=seconds + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-300:]} {out.stderr[-300:]}")
    return dict(json.loads(lines[-1]))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_endpoint(urls: dict[str, str], seconds: float, warmup: float, rounds: int,
                   tmp: Path) -> tuple[list[HttpResult], list[str]]:
    """The check endpoint (1 worker, API key, 1,000 revocations) per store, and the trivial baseline."""
    if shutil.which("wrk") is None:
        return [], ["wrk is not installed (apt-get install -y wrk): the check endpoint was not measured"]
    ttlpolicy = shutil.which("ttlpolicy", path=os.path.dirname(sys.executable)) or shutil.which("ttlpolicy")
    if ttlpolicy is None:
        return [], ["`ttlpolicy` is not installed in this environment: the check endpoint was not measured"]
    now = time.time()
    # Checks as a resource server sends them: the token's claims; 1 in 50 is of a revoked subject.
    bodies = tmp / "check-bodies.jsonl"
    bodies.write_text("".join(json.dumps({"sub": f"revoked-{i % REVOCATIONS}" if i % 50 == 0 else f"u{i}",
                                          "client_id": f"app-{i % 20}", "jti": f"jti-live-{i}",
                                          "iat": int(now) - 60}) + "\n" for i in range(500)))
    first = bodies.read_text().splitlines()[1].encode()
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    configs: list[tuple[str, list[str], str | None]] = [
        ("trivial Starlette endpoint (parses the body, answers {\"active\": true})",
         [sys.executable, "-m", "uvicorn", "trivial_app:app", "--app-dir", str(HERE / "http"), "--workers", "1",
          "--no-access-log", "--no-server-header", "--log-level", "warning"], None)]
    for name, url in urls.items():
        url = f"sqlite://{tmp}/http-state.db" if name == "SQLite" else f"{url}?prefix=http:"
        runtime = StateRuntime(open_store(url))
        runtime.poll()
        registry = runtime.revocations
        registry.revoke_all([registry.prepare({"kind": "subject", "value": f"revoked-{i}", "reason": "benchmark"},
                                              "bench", now) for i in range(REVOCATIONS)], now)
        runtime.close()
        config = tmp / f"serve-{name}.json"
        config.write_text(json.dumps({
            "policies": str(ROOT / "policies"), "workers": 1, "log_level": "warning", "access_log": False,
            "reload": {"watch": False}, "decision_log": {"sink": "off"}, "state": {"url": url},
            "auth": {"api_keys": [{"name": "resource-server", "hash": f"sha256:{digest}", "scopes": ["decide"]}]}}))
        configs.append((f"ttlpolicy serve, {name} store, API key, {REVOCATIONS:,} revocations",
                        [ttlpolicy, "serve", "--config", str(config)], API_KEY))
    # Every server runs for the whole measurement; rounds alternate between them, so a noisy
    # neighbour (the machine is shared) weighs on all of them alike.
    servers: list[tuple[str, subprocess.Popen[bytes], int, str | None]] = []
    notes: list[str] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        for label, command, key in configs:
            port = free_port()
            proc = subprocess.Popen([*command, "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            try:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                answer = _wait(port, "/v1/tokens/check", first, headers, proc)
                if json.loads(answer).get("active") is not True:
                    raise RuntimeError(f"unexpected answer {answer[:200]!r}")
                _wrk(port, "/v1/tokens/check", bodies, warmup, key)
            except Exception as exc:  # noqa: BLE001 - report the configuration as failed, go on
                _stop(proc)
                err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
                notes.append(f"{label} failed: {exc} {err}".strip())
                continue
            servers.append((label, proc, port, key))
        for round_no in range(rounds):
            for label, _, port, key in servers:
                summary = _wrk(port, "/v1/tokens/check", bodies, seconds, key)
                samples.setdefault(label, []).append(summary)
                log(f"  round {round_no + 1}/{rounds}: {label}: {summary['rps']:,.0f} req/s")
    finally:
        for _, proc, _, _ in servers:
            _stop(proc)
    results = []
    for label, runs in samples.items():
        errors = sum(v for run in runs for k, v in run.items() if k.startswith("errors_"))
        results.append(HttpResult(label, statistics.median(r["rps"] for r in runs),
                                  statistics.median(r["p50_us"] for r in runs) / 1000,
                                  statistics.median(r["p99_us"] for r in runs) / 1000, errors,
                                  sum(r["requests"] for r in runs)))
    return results, notes


def http_report(results: list[HttpResult], notes: list[str], seconds: float, rounds: int) -> list[str]:
    rows = [f"wrk, 1 thread, 64 connections, {rounds} rounds of {seconds:g} s per server after a warm-up, the servers "
            "taking turns; medians over rounds. On loopback; 500 different check "
            "bodies (the token's claims: sub, client_id, jti, iat) in rotation, 1 in 50 of a revoked subject. "
            "Same uvicorn settings for both servers (one worker, uvloop, httptools, no access log). ttlpolicy: "
            "metrics on, an API key with the `decide` scope, the state poller running.", "",
            "| server | requests/s | share of trivial | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    trivial = next((r for r in results if r.label.startswith("trivial")), None)
    for r in results:
        share = f"{r.rps / trivial.rps:.0%}" if trivial is not None and r is not trivial else "—"
        rows.append(f"| {r.label} | {r.rps:,.0f} | {share} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
    rows += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    rows += ["**Target (HTTP)**", "", "| target | measured | met |", "|---|---|---|"]
    for r in results:
        if r is not trivial:
            met = "met" if r.rps >= TARGET_CHECK_RPS else "NOT met"
            rows.append(f"| check endpoint ≥ {TARGET_CHECK_RPS:,.0f} req/s on one worker ({r.label.split(', ')[1]}) "
                        f"| {r.rps:,.0f} req/s, p99 {r.p99_ms:.2f} ms | {met} |")
    return rows + [""]


def machine() -> list[str]:
    import sqlite3

    info = describe(PACKAGES, (("redis-server", "--version"), ("wrk", "-v"), ("sqlite3", "--version")))
    return [f"- CPU: {info['cpu']}, {info['cores']} cores; {info['python']} on {info['os']}",
            f"- load average (1/5/15 min) at start: {info['load']} "
            "(a machine shared with other jobs: compare rows of one run, not runs)",
            f"- packages: {info['packages']}; SQLite library {sqlite3.sqlite_version}",
            f"- tools: {info['tools']}"]


def run(quick: bool, skip_http: bool) -> list[str]:
    """The whole benchmark; returns the results page (Markdown lines)."""
    rounds, per_round = (5, 400) if quick else (11, 1500)
    seconds, warmup, http_rounds = (3.0, 1.0, 1) if quick else (5.0, 2.0, 3)
    started = time.perf_counter()
    md = ["# ttlpolicy state benchmark results", "",
          f"Written by `benchmarks/state.py{' --quick' if quick else ''}` on "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. What is measured and how: the module's "
          "docstring and [README.md](README.md).", "", "## Machine", ""] + machine() + [""]
    with tempfile.TemporaryDirectory(prefix="ttlpolicy-statebench-") as name:
        tmp = Path(name)
        with redis_server(tmp) as redis_url:
            urls = {"SQLite": f"sqlite://{tmp}/state.db"}
            notes = []
            if redis_url is not None:
                urls["Redis"] = redis_url
            else:
                notes.append("redis-server is not installed: Redis was not measured")
            log("in-process decisions")
            result = in_process(urls, rounds, per_round)
            md += ["## A decision with a rate limit and a revocation check, in-process", "",
                   f"The bundled policy set with one rate limit (`decisions-per-user`, `600 per 1m`, keyed by user) "
                   f"and {2 * REVOCATIONS:,} revocations in force ({REVOCATIONS:,} subjects, {REVOCATIONS:,} tokens); "
                   f"{per_round:,} seeded contexts per round, {rounds} rounds, variants round-robin within each round. "
                   "1 in 50 decisions carries a token of a revoked subject (refused before the policy runs, as the "
                   "service does).", ""] + in_process_report(result)
            md += [f"- {n}" for n in notes] + ([""] if notes else [])
            md += ["## Revoking", "",
                   "Before the store was fixed, a thousand single revocations did not finish: every write "
                   "rewrote the expiry of every stored revocation (SQLite) and every revocation reloaded and "
                   "decoded the whole collection. Now a write touches what it writes, and the writer applies it "
                   "to its copy in memory.", ""] + revocation_report(result)
            if not skip_http:
                log("HTTP: the check endpoint under wrk")
                http, http_notes = check_endpoint(urls, seconds, warmup, http_rounds, tmp)
                md += ["## HTTP: `POST /v1/tokens/check`", ""] + http_report(http, http_notes, seconds, http_rounds)
    md += [f"Total run time {time.perf_counter() - started:.0f} s; load average at the end: "
           f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter HTTP runs")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS-state.md")
    args = parser.parse_args(argv)
    md = run(args.quick, args.skip_http)
    args.output.write_text("\n".join(md))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
