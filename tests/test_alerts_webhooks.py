"""Webhooks: Standard Webhooks signatures checked by the reference library, order, retries with
backoff, dead letters, and a slow receiver that never delays the publisher."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from ttlpolicy.alerts import WebhookDispatcher, WebhookSettings, parse_secret, sign
from webhook_receiver import Receiver, dead_letters

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def settings(tmp_path: Path, url: str, **kw: Any) -> WebhookSettings:
    endpoint = {"name": "soc", "url": url, "secret": kw.pop("secret", SECRET), **kw.pop("endpoint", {})}
    return WebhookSettings.model_validate({"endpoints": [endpoint], "retry_delays": kw.pop("retry_delays", [0.01, 0.02]),
                                           "timeout": 5, "dead_letter": str(tmp_path / "dead.jsonl"), **kw})


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_signature_matches_the_reference_implementation(tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url))
        hooks.start()
        try:
            message = hooks.publish("emergency.started", {"id": "INC-42", "scope": 'tier == "finance"'})
            assert message is not None
            wait_for(lambda: len(receiver.attempts) == 1)
        finally:
            hooks.stop()
    attempt = receiver.attempts[0]
    assert attempt.verified and attempt.status == 204
    assert attempt.id == message.id and attempt.id.startswith("msg_")
    assert attempt.body is not None and attempt.body["type"] == "emergency.started"
    assert attempt.body["data"] == {"id": "INC-42", "scope": 'tier == "finance"'}
    assert attempt.body["timestamp"].endswith("Z")


def test_a_receiver_with_another_secret_refuses_the_signature(tmp_path: Path) -> None:
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with Receiver(other) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url, retry_delays=[]))
        hooks.start()
        try:
            hooks.publish("detector.fired", {"detector": "refresh-burst"})
            wait_for(lambda: len(dead_letters(tmp_path / "dead.jsonl")) == 1)
        finally:
            hooks.stop()
    assert [a.verified for a in receiver.attempts] == [False]
    assert dead_letters(tmp_path / "dead.jsonl")[0]["error"] == "HTTP 401"


def test_sign_is_hmac_sha256_over_id_timestamp_and_body() -> None:
    key = parse_secret("whsec_" + base64.b64encode(b"k" * 32).decode())
    assert key == b"k" * 32
    value = sign(key, "msg_1", 1_700_000_000, b'{"a":1}')
    import hashlib
    import hmac
    expected = base64.b64encode(hmac.new(key, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()).decode()
    assert value == "v1," + expected


def test_retries_keep_the_id_resign_and_preserve_order(tmp_path: Path) -> None:
    with Receiver(SECRET, fail_first=2) as receiver:  # every message fails twice, then succeeds
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url))
        hooks.start()
        try:
            sent = [hooks.publish("action.applied", {"n": i}) for i in range(8)]
            wait_for(lambda: len(receiver.delivered()) == 8)
        finally:
            hooks.stop()
    ids = [m.id for m in sent if m is not None]
    assert [a.id for a in receiver.delivered()] == ids  # delivered in publication order
    # Each message was tried three times, all attempts of one before any of the next.
    assert [a.id for a in receiver.attempts] == [i for i in ids for _ in range(3)]
    assert all(a.verified for a in receiver.attempts)
    assert [a.body["data"]["n"] for a in receiver.delivered() if a.body] == list(range(8))
    assert dead_letters(tmp_path / "dead.jsonl") == []


def test_dead_letter_after_the_last_retry_then_the_next_message_goes_out(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    with Receiver(SECRET, always_fail={"revocation.created"}) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url), on_result=lambda e, r: results.append((e, r)))
        hooks.start()
        try:
            doomed = hooks.publish("revocation.created", {"subject": "alice"})
            after = hooks.publish("emergency.ended", {"id": "INC-42"})
            wait_for(lambda: len(receiver.delivered()) == 1)
        finally:
            hooks.stop()
    assert doomed is not None and after is not None
    assert len(receiver.for_message(doomed.id)) == 3  # one attempt + two retries
    assert [a.id for a in receiver.delivered()] == [after.id]
    [letter] = dead_letters(tmp_path / "dead.jsonl")
    assert letter["id"] == doomed.id and letter["endpoint"] == "soc" and letter["attempts"] == 3
    assert letter["error"] == "HTTP 500"
    assert letter["message"]["type"] == "revocation.created" and letter["message"]["data"] == {"subject": "alice"}
    assert results.count(("soc", "retry")) == 2 and ("soc", "dead_letter") in results
    assert ("soc", "delivered") in results


def test_unreachable_receiver_is_retried_and_dead_lettered(tmp_path: Path) -> None:
    import socket
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hooks = WebhookDispatcher(settings(tmp_path, f"http://127.0.0.1:{port}/hook"))
    hooks.start()
    try:
        hooks.publish("detector.fired", {"detector": "x"})
        wait_for(lambda: len(dead_letters(tmp_path / "dead.jsonl")) == 1)
    finally:
        hooks.stop()
    [letter] = dead_letters(tmp_path / "dead.jsonl")
    assert letter["attempts"] == 3 and "URLError" in letter["error"]


def test_a_slow_receiver_never_blocks_the_publisher(tmp_path: Path) -> None:
    hold = threading.Event()
    with Receiver(SECRET, hold=hold) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url))
        hooks.start()
        try:
            hooks.publish("detector.fired", {"n": 0})
            assert receiver.arrived.wait(10)  # the receiver holds the first request and does not answer
            # publish() returns while the receiver is stuck: it only queues.
            for i in range(1, 200):
                hooks.publish("detector.fired", {"n": i})
            assert hooks.pending() == 200 and receiver.attempts == []
            hold.set()
            wait_for(lambda: len(receiver.delivered()) == 200)
        finally:
            hooks.stop()
    assert [a.body["data"]["n"] for a in receiver.delivered() if a.body] == list(range(200))


def test_full_queue_and_shutdown_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    hold = threading.Event()
    with Receiver(SECRET, hold=hold) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url, queue_size=2))
        hooks.start()
        try:
            hooks.publish("detector.fired", {"n": 0})
            assert receiver.arrived.wait(10)
            hooks.publish("detector.fired", {"n": 1})
            hooks.publish("detector.fired", {"n": 2})  # the queue holds n=0 (in flight) and n=1: full
        finally:
            hooks.stop(timeout=0.2)  # n=0 is still in flight, n=1 waits: both are dead-lettered
            hold.set()
    letters = dead_letters(tmp_path / "dead.jsonl")
    assert [(x["message"]["data"]["n"], x["error"]) for x in letters] == [
        (2, "queue full"), (0, "service stopped before delivery"), (1, "service stopped before delivery")]


def test_endpoints_only_get_the_alert_types_they_subscribe_to(tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        hooks = WebhookDispatcher(settings(tmp_path, receiver.url, endpoint={"events": ["emergency.*"]}))
        hooks.start()
        try:
            assert hooks.publish("detector.fired", {}) is None
            hooks.publish("emergency.ended", {"id": "INC-1"})
            wait_for(lambda: len(receiver.delivered()) == 1)
        finally:
            hooks.stop()
    assert receiver.attempts[0].body is not None and receiver.attempts[0].body["type"] == "emergency.ended"
    with pytest.raises(ValueError, match="unknown alert type"):
        hooks.publish("nonsense", {})


@pytest.mark.parametrize("endpoint, message", [
    ({"url": "http://alerts.example.com/hook"}, "clear text"),
    ({"url": "ftp://example.com"}, "http\\(s\\) URL"),
    ({"secret": "plain"}, "starts with 'whsec_'"),
    ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "at least 24"),
    ({"events": ["nothing.*"]}, "matches no alert type"),
])
def test_settings_refuse_unsafe_or_broken_endpoints(tmp_path: Path, endpoint: dict[str, Any], message: str) -> None:
    data = {"name": "soc", "url": "https://alerts.example.com/hook", "secret": SECRET, **endpoint}
    with pytest.raises(pydantic.ValidationError, match=message) as info:
        WebhookSettings.model_validate({"endpoints": [data], "dead_letter": str(tmp_path / "d")})
    assert SECRET not in str(info.value)


def test_settings_need_a_dead_letter_file_and_accept_durations(tmp_path: Path) -> None:
    endpoint = {"name": "soc", "url": "https://alerts.example.com/hook", "secret": SECRET}
    with pytest.raises(pydantic.ValidationError, match="dead_letter"):
        WebhookSettings.model_validate({"endpoints": [endpoint]})
    parsed = WebhookSettings.model_validate({"endpoints": [endpoint], "dead_letter": str(tmp_path / "d"),
                                             "retry_delays": ["5s", "2m", 1.5]})
    assert parsed.retry_delays == (5.0, 120.0, 1.5)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = WebhookSettings.model_validate({"endpoints": [{**endpoint, "secret": None, "secret_file": str(secret_file)}],
                                                "dead_letter": str(tmp_path / "d")})
    assert from_file.endpoints[0].key == parse_secret(SECRET)
