"""The hot path of the service: POST /v1/decide outside Starlette, cheap ids, local metrics, the log writer.

Each optimisation must be invisible from outside: the bare-ASGI decide answers exactly like the
Starlette route, ids are UUID4-shaped and unique, single-process metrics render like
prometheus-client's objects, and log lines still reach the file while the server runs.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from metrics_reference import SAMPLES, observe
from server_fixtures.helpers import FINANCE, POLICIES, client, iter_lines
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ttlpolicy.server import Settings, create_app
from ttlpolicy.server.auth import hash_key
from ttlpolicy.server.metrics import _LATENCY_BUCKETS, _TTL_BUCKETS, Metrics

KEY = "fastpath-key-0123456789"
AUTH = {"api_keys": [{"name": "issuer-a", "hash": hash_key(KEY), "scopes": ["decide"]},
                     {"name": "ops", "hash": hash_key(KEY + "-admin"), "scopes": ["admin"]}]}
NOW = "2025-03-04T10:00:00Z"


def _clients(**settings: Any) -> tuple[TestClient, TestClient]:
    """The same app twice: through its fast path, and forced through the Starlette route."""
    settings = {"policies": POLICIES, "decision_log": {"sink": "off"}, "reload": {"watch": False}, **settings}
    app = create_app(Settings.model_validate(settings))

    async def through_starlette(scope: Any, receive: Any, send: Any) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return (TestClient(app, raise_server_exceptions=False),
            TestClient(through_starlette, raise_server_exceptions=False))


def _comparable(response: Any) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body.pop("decision_id", None)
    return response.status_code, headers, body


CASES: list[tuple[str, dict[str, Any]]] = [
    ("decision", {"json": {"context": FINANCE, "now": NOW}}),
    ("explain", {"json": {"context": FINANCE, "now": NOW, "explain": True}}),
    ("shape", {"json": {"context": [], "extra": 1}}),
    ("not an object", {"json": [1, 2]}),
    ("unknown policy", {"json": {"context": {}, "policy": "nope"}}),
    ("bad context", {"json": {"context": {"tier": "nope"}, "now": NOW}}),
    ("forged token", {"json": {"context": {"token": {"sub": "x"}}, "now": NOW}}),
    ("subject token not configured", {"json": {"context": {}, "subject_token": "a.b.c"}}),
    ("bad now", {"json": {"context": {}, "now": "yesterday"}}),
    ("invalid json", {"content": b"{nope", "headers": {"Content-Type": "application/json"}}),
    ("no content type", {"content": b"{}"}),
    ("text", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("+json with charset", {"content": json.dumps({"context": FINANCE, "now": NOW}).encode(),
                            "headers": {"Content-Type": "application/ttl+json; charset=utf-8"}}),
    ("too large", {"content": b"{" + b" " * 70_000 + b"}", "headers": {"Content-Type": "application/json"}}),
]


@pytest.mark.parametrize(("name", "request_kwargs"), CASES, ids=[name for name, _ in CASES])
def test_fast_path_answers_like_the_starlette_route(name: str, request_kwargs: dict[str, Any]) -> None:
    fast, slow = _clients(limits={"max_body_bytes": 65536})
    with fast, slow:
        assert _comparable(fast.post("/v1/decide", **request_kwargs)) == \
            _comparable(slow.post("/v1/decide", **request_kwargs))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"},
                                     {"X-API-Key": KEY + "-admin"}, {"X-API-Key": KEY},
                                     {"Authorization": f"Bearer {KEY}"}])
def test_fast_path_authenticates_like_the_starlette_route(headers: dict[str, str]) -> None:
    fast, slow = _clients(auth=AUTH)
    with fast, slow:
        request = {"json": {"context": FINANCE, "now": NOW}, "headers": headers}
        answer = fast.post("/v1/decide", **request)
        assert _comparable(answer) == _comparable(slow.post("/v1/decide", **request))
    if answer.status_code in (401, 403):
        assert answer.headers["www-authenticate"].startswith('Bearer realm="ttlpolicy"')


def test_streamed_body_is_counted_on_the_fast_path() -> None:
    def chunks(n: int) -> Any:
        yield b'{"context": {}, "pad": "'
        for _ in range(n):
            yield b"x" * 1000
        yield b'"}'

    with client(limits={"max_body_bytes": 4096}) as api:
        refused = api.post("/v1/decide", content=chunks(10), headers={"Content-Type": "application/json"})
        assert refused.status_code == 413 and refused.json()["code"] == "body-too-large"
        small = api.post("/v1/decide", content=chunks(2), headers={"Content-Type": "application/json"})
        assert small.status_code == 400 and small.json()["errors"][0]["path"] == "pad"  # read whole, then checked


def test_decision_ids_are_unique_uuid4() -> None:
    with client() as api:
        ids = [api.post("/v1/decide", json={"context": {}}).json()["decision_id"] for _ in range(50)]
    assert len(set(ids)) == 50
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value
    other = create_app(Settings.model_validate({"policies": POLICIES, "decision_log": {"sink": "off"}}))
    with TestClient(other) as api:  # same process, another app: still no repeat
        assert api.post("/v1/decide", json={"context": {}}).json()["decision_id"] not in ids


def _without_created(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_single_process_metrics_render_like_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics(lambda: 0.0)
    reference = CollectorRegistry(auto_describe=False)
    decisions = Counter("ttlpolicy_decisions", "Decisions by policy and outcome (allow, deny, step_up, error).",
                        ["policy", "outcome"], registry=reference)
    rules = Counter("ttlpolicy_rule_matches", "Rules that matched, by policy and rule.", ["policy", "rule"],
                    registry=reference)
    access = Histogram("ttlpolicy_access_ttl_seconds", "Access-token lifetimes decided.", ["policy"],
                       buckets=_TTL_BUCKETS, registry=reference)
    refresh = Histogram("ttlpolicy_refresh_ttl_seconds", "Refresh-token lifetimes decided (0 = none).", ["policy"],
                        buckets=_TTL_BUCKETS, registry=reference)
    latency = Histogram("ttlpolicy_decision_duration_seconds", "Time to answer one decide request, from parsed "
                        "body to serialized response.", buckets=_LATENCY_BUCKETS, registry=reference)
    # Three policies, one with errors only.
    for sample in SAMPLES:
        metrics.decision(*sample)
    observe(decisions, rules, access, refresh, latency)
    for policy in ("a", "unknown", "unknown"):
        metrics.error(policy)
        decisions.labels(policy, "error").inc()
    ours = metrics.render().decode()
    expected = generate_latest(reference).decode()
    assert set(_without_created(expected)) <= set(_without_created(ours))
    for name in ("ttlpolicy_decisions_created", "ttlpolicy_access_ttl_seconds_created"):
        assert name in ours
    assert 'ttlpolicy_access_ttl_seconds_count{policy="unknown"}' not in ours  # errors only: no TTL histogram


def test_decision_log_lines_arrive_while_serving(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    with client(decision_log={"sink": "file", "path": str(path)}) as api:
        ids = [api.post("/v1/decide", json={"context": FINANCE}).json()["decision_id"] for _ in range(3)]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not path.exists() or path.read_text().count("\n") < 3):
            time.sleep(0.01)  # written by the writer thread within its flush interval, not only at shutdown
        assert [line["decision_id"] for line in iter_lines(path)] == ids
    lines = list(iter_lines(path))
    assert len(lines) == 3 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["time"])


async def _decide_with_a_body_that_never_comes(app: Any, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /v1/decide whose body never arrives: what the app sends (the client goes away after 2 s)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/decide", "raw_path": b"/v1/decide", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "extensions": extensions}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(2)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_the_body_timeout_is_the_apps_unless_the_server_keeps_it() -> None:
    import asyncio

    from ttlpolicy.server.gate import SERVER_BODY_TIMEOUT

    settings = {"policies": POLICIES, "decision_log": {"sink": "off"}, "reload": {"watch": False},
                "limits": {"body_timeout": 0.1}}
    app = create_app(Settings.model_validate(settings))
    # Any server: the app answers 408 itself when the body is late.
    sent = asyncio.run(_decide_with_a_body_that_never_comes(app, {}))
    assert sent[0]["status"] == 408 and b"request-timeout" in sent[1]["body"]
    # ttlpolicy's protocol (tests/test_server_timeouts.py) answers 408 and closes the connection
    # itself: the app arms no timer and only sees the disconnect.
    assert asyncio.run(_decide_with_a_body_that_never_comes(app, {SERVER_BODY_TIMEOUT: {}})) == []


def test_serve_freezes_the_built_service_out_of_the_cyclic_collectors_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import uvicorn

    from ttlpolicy.cli.main import main

    seen: dict[str, int] = {}

    def run(app: Any, **settings: Any) -> None:  # instead of serving: what the server would start with
        seen["frozen"] = gc.get_freeze_count()

    monkeypatch.setattr(uvicorn, "run", run)
    gc.unfreeze()
    try:
        assert main(["serve", "--policies", str(POLICIES), "--no-watch", "--port", "0"]) == 0
    finally:
        gc.unfreeze()  # the test process goes on collecting as usual
    assert seen["frozen"] > 1000  # the imports and the loaded policy set


_MULTIPROCESS = """
import sys
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from ttlpolicy.server.metrics import _LATENCY_BUCKETS, _TTL_BUCKETS, Metrics

mode, directory, tests = sys.argv[1:4]
sys.path.insert(0, tests)
from metrics_reference import SAMPLES, observe

if mode == "ours":
    metrics = Metrics(lambda: 0.0)
    for round_ in range(2):  # copied twice: the second copy adds only what came since the first
        for sample in SAMPLES:
            metrics.decision(*sample)
        for policy in ("a", "unknown"):
            metrics.error(policy)
        metrics.flush()
    sys.stdout.write(metrics.render().decode())
else:  # what prometheus-client's multiprocess values give when every value is observed
    decisions = Counter("ttlpolicy_decisions", "d", ["policy", "outcome"])
    rules = Counter("ttlpolicy_rule_matches", "r", ["policy", "rule"])
    access = Histogram("ttlpolicy_access_ttl_seconds", "a", ["policy"], buckets=_TTL_BUCKETS)
    refresh = Histogram("ttlpolicy_refresh_ttl_seconds", "r", ["policy"], buckets=_TTL_BUCKETS)
    latency = Histogram("ttlpolicy_decision_duration_seconds", "l", buckets=_LATENCY_BUCKETS)
    for round_ in range(2):
        observe(decisions, rules, access, refresh, latency)
        for policy in ("a", "unknown"):
            decisions.labels(policy, "error").inc()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    sys.stdout.write(generate_latest(registry).decode())
"""


def test_several_workers_copy_their_counts_into_the_shared_files_as_if_observed(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (``--workers`` > 1), the counts kept on the event loop and
    copied by ``flush()`` render exactly as prometheus-client's own multiprocess values would."""
    import os
    import subprocess
    import sys

    script = tmp_path / "multiprocess.py"
    script.write_text(_MULTIPROCESS)
    rendered = {}
    for mode in ("ours", "reference"):
        directory = tmp_path / mode
        directory.mkdir()
        out = subprocess.run([sys.executable, str(script), mode, str(directory), str(Path(__file__).parent)],
                             capture_output=True, text=True,
                             env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}, timeout=120)
        assert out.returncode == 0, out.stderr
        rendered[mode] = {line for line in out.stdout.splitlines() if line.startswith((
            "ttlpolicy_decisions_total", "ttlpolicy_rule_matches_total", "ttlpolicy_access_ttl_seconds",
            "ttlpolicy_refresh_ttl_seconds", "ttlpolicy_decision_duration_seconds"))}
    assert len(rendered["reference"]) > 50 and rendered["ours"] == rendered["reference"]
