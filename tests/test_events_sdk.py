"""The token SDK's EventReporter against a real ttlpolicy server (uvicorn on a free loopback port),
its retry and drop rules, and the example issuer reporting sign-ins and refreshes."""

from __future__ import annotations

import socket
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn

from ttlpolicy.server import Settings, create_app
from ttlpolicy.state import open_store
from ttlpolicy.tokens.events import EventReporter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from examples.issuer.app import create_app as create_issuer  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A real ttlpolicy service with a SQLite store, served by uvicorn in a thread."""
    settings = Settings.model_validate({"policies": str(REPO / "examples" / "activity" / "policies"),
                                        "decision_log": {"sink": "off"}, "reload": {"watch": False},
                                        "state": f"sqlite:///{tmp_path}/state.db"})
    store = open_store(f"sqlite:///{tmp_path}/state.db")  # a second connection, to look at what arrived
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def test_reporter_batches_to_a_real_service(service: tuple[str, Any]) -> None:
    url, store = service
    reporter = EventReporter(url + "/v1/events", batch_size=7, interval=0.05).start()
    ids = [reporter.report("token.refreshed", subject="alice", client="web", country=c) for c in ("DE", "FR", "US")]
    ids += [reporter.report("auth.failed", subject="alice", reason="bad_password") for _ in range(10)]
    reporter.close()
    assert all(ids) and len(set(ids)) == 13 and reporter.sent == 13 and reporter.dropped == 0
    from ttlpolicy.activity.tracker import ActivityTracker, Request
    values = ActivityTracker(store).observe(Request("alice", "web", None, None, time.time()))
    assert values["refreshes_1h"] == 3 and values["failed_auth_15m"] == 10 and values["countries_24h"] == 3


def test_reporter_retries_5xx_and_keeps_ids_then_drops_4xx() -> None:
    calls: list[tuple[int, bytes]] = []
    answers = iter([503, 0, 200, 400])

    def sender(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        status = next(answers)
        calls.append((status, body))
        if status == 0:
            raise ConnectionRefusedError("refused")
        return status

    reporter = EventReporter("http://127.0.0.1:1/v1/events", sender=sender, api_key="k")
    reporter.report("logout", subject="alice")
    reporter.flush()
    assert [s for s, _ in calls] == [503, 0, 200] and len({b for _, b in calls}) == 1  # same body, same ids
    reporter.report("logout", subject="bob")
    reporter.flush()
    assert reporter.sent == 1 and reporter.dropped == 1
    with pytest.raises(ValueError, match="unknown event type"):
        reporter.report("token.stolen", subject="x")
    with pytest.raises(ValueError, match="subject or client"):
        reporter.report("logout")


def test_the_example_issuer_reports_sign_ins_refreshes_and_failures(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    def sender(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        import json
        sent.extend(json.loads(body)["events"])
        return 200

    reporter = EventReporter("http://127.0.0.1:1/v1/events", sender=sender)
    start = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)
    app = create_issuer(db_path=tmp_path / "issuer.sqlite3", issuer="http://testserver", clock=lambda: start,
                        events=reporter)
    client = TestClient(app, client=("10.1.2.3", 50000))
    form = {"grant_type": "password", "username": "alice", "client_id": "cli"}
    assert client.post("/token", data={**form, "password": "nope"}).status_code == 400
    tokens = client.post("/token", data={**form, "password": "wonderland"},
                         headers={"X-Device-Trust": "managed"}).json()
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                            "client_id": "cli"}, headers={"X-Device-Trust": "managed"})
    assert refreshed.status_code == 200, refreshed.text
    assert client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x.y.z",
                                       "client_id": "cli"}).status_code == 400
    reporter.flush()
    assert [(e["type"], e.get("subject"), e.get("reason")) for e in sent] == [
        ("auth.failed", "alice", "bad_password"), ("token.issued", "alice", None),
        ("token.refreshed", "alice", None), ("refresh.failed", None, "malformed")]
    assert sent[1]["session"] == sent[2]["session"] and sent[1]["ip"] == "10.1.2.3"
