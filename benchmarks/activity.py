"""Activity benchmarks: events accepted per second in batches, and a decision with activity
(one state-store round trip) side by side with the same decision without it.

    python benchmarks/activity.py            # writes benchmarks/RESULTS-activity.md
    python benchmarks/activity.py --quick    # fewer rounds

Redis runs are included when `redis-server` is on PATH (started on a free loopback port in a
temporary directory, stopped afterwards). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from services import free_port, redis_server  # noqa: E402

from ttlpolicy import load_policies  # noqa: E402
from ttlpolicy.activity.detectors import Detector, Detectors  # noqa: E402
from ttlpolicy.activity.events import parse_event  # noqa: E402
from ttlpolicy.activity.responses import ActionStore, apply_actions  # noqa: E402
from ttlpolicy.activity.tracker import ActivityTracker, Request  # noqa: E402
from ttlpolicy.state import StateStore, open_store  # noqa: E402

POLICIES = ROOT / "examples" / "activity" / "policies"
DETECTOR = Detector.model_validate({"name": "refresh-burst", "events": ["token.refreshed"], "per": "subject",
                                    "threshold": {"count": 50, "within": "10m"}})


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def micro(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"{statistics.median(ordered) * 1e6:.0f} µs (p99 {ordered[int(len(ordered) * 0.99) - 1] * 1e6:.0f})"


def events(n: int, offset: int, users: int = 200) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc).isoformat()
    kinds = ["token.refreshed", "token.refreshed", "token.issued", "auth.failed"]
    return [{"id": f"b-{offset + i}", "type": kinds[i % 4], "subject": f"user-{(offset + i) % users}",
             "client": "web", "country": ["DE", "FR", "US"][i % 3], "ip": f"198.51.100.{i % 250 + 1}", "time": now}
            for i in range(n)]


def decision_rows(store: StateStore, label: str, rounds: int) -> list[str]:
    policies = load_policies(POLICIES)
    compiled = policies.get(None)
    tracker, actions = ActivityTracker(store), ActionStore(store)
    context = {"user": {"id": "alice"}, "client": {"id": "web"}, "location": {"country": "DE", "ip": "198.51.100.9"}}
    now = datetime.now(timezone.utc)
    given = {**context, "activity": {"refreshes_1h": 3, "failed_auth_15m": 0, "countries_24h": 1,
                                     "new_country": False, "idle_seconds": 30}}

    def without() -> None:  # the policy alone, the activity values given (what a test or the library does)
        compiled.decide(given, now)

    def with_activity() -> None:  # what the service does: one round trip, then the policy, then the actions
        batch = store.batch()
        queued = actions.queue_in_force(batch, "alice", "web")
        reads = tracker.queue_observe(batch, Request("alice", "web", "DE", "198.51.100.9", time.time()), queued)
        results = batch.execute()
        decision = compiled.decide({**context, "activity": reads.values(results)}, now)
        apply_actions(decision, ActionStore.in_force(results[:queued], time.time()))

    for fn in (without, with_activity):
        timed(fn, 200)  # warm up
    base, full = timed(without, rounds), timed(with_activity, rounds)
    added = statistics.median(full) - statistics.median(base)
    return [f"| {label} | {micro(base)} | {micro(full)} | +{added * 1e6:.0f} µs |"]


def record_rows(store: StateStore, label: str, batch_size: int, batches: int, offset: int) -> str:
    now = datetime.now(timezone.utc)
    detectors = Detectors([DETECTOR], store)
    tracker = ActivityTracker(store)
    payloads = [events(batch_size, offset + b * batch_size) for b in range(batches)]
    start = time.perf_counter()
    for raw in payloads:
        parsed = [parse_event(item, f"events[{i}]", now)[0] for i, item in enumerate(raw)]
        fresh = [e for e, new in zip(parsed, tracker.claim(parsed)) if new and e is not None]
        batch = store.batch()
        queued = tracker.queue_events(batch, fresh)
        detectors.evaluate(fresh, batch, queued)
    elapsed = time.perf_counter() - start
    return f"| {label} | {batch_size} | {batch_size * batches / elapsed:,.0f} |"


def http_rows(url: str | None, label: str, batch_size: int, seconds: float, workdir: Path) -> str:
    """One uvicorn worker in its own process; one client posting batches back to back."""
    port = free_port()
    store_url = url or f"sqlite:///{workdir}/http-{batch_size}.db"
    script = textwrap.dedent(f"""
        import uvicorn
        from ttlpolicy.server import Settings, create_app
        settings = Settings.model_validate({{"policies": {str(POLICIES)!r}, "decision_log": {{"sink": "off"}},
            "reload": {{"watch": False}}, "state": {store_url!r},
            "activity": {{"detectors": [{DETECTOR.model_dump(by_alias=True)!r}]}}}})
        uvicorn.run(create_app(settings), host="127.0.0.1", port={port},
                    log_level="warning")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            sent, offset, start = 0, 10_000_000, time.perf_counter()
            while time.perf_counter() - start < seconds:
                response = client.post("/v1/events", json={"events": events(batch_size, offset + sent)})
                assert response.status_code == 200, response.text
                sent += batch_size
            elapsed = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(10)
    return f"| {label} | {batch_size} | {sent / elapsed:,.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS-activity.md"))
    args = parser.parse_args()
    rounds = 500 if args.quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as redis:
            backends = [("SQLite", f"sqlite:///{workdir}/bench.db")] + ([("Redis", redis)] if redis else [])
            decisions = ["| store | policy only (activity given) | with activity (one round trip) | added |",
                         "|---|---|---|---|"]
            recording = ["| store | batch | events/s |", "|---|---|---|"]
            http = ["| store | batch | events/s |", "|---|---|---|"]
            for name, url in backends:
                with open_store(url) as store:
                    decisions += decision_rows(store, name, rounds)
                    for size in (100, 1000):
                        recording.append(record_rows(store, name, size, 5 if args.quick else 20, size * 10_000))
            for name, url in backends:
                for size in (100, 1000):
                    http.append(http_rows(url if name == "Redis" else None, name, size, 3 if args.quick else 10,
                                          workdir))
    text = f"""# Activity benchmarks

`python benchmarks/activity.py{' --quick' if args.quick else ''}` on {platform.node() or 'this machine'}:
{os.cpu_count()} CPUs, Python {platform.python_version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
The machine is shared with other jobs, so absolute numbers move between runs; compare rows of one run.

## A decision with and without activity (in-process, `examples/activity/policies`)

"Policy only" is the policy evaluated with the activity values given (what `ttlpolicy test` and the
library do). "With activity" is what the service adds per decision: one store round trip that reads
the windows, maps and actions in force and records the request, then the policy, then the actions.

{chr(10).join(decisions)}

## Events recorded per second (in-process: validation, idempotency claims, windows, one threshold detector)

{chr(10).join(recording)}

## Events accepted per second over HTTP (`POST /v1/events`, one uvicorn worker, one client, batches back to back)

{chr(10).join(http)}
"""
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
