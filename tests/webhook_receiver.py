"""A real HTTP webhook receiver for tests: verifies every request with the reference
``standardwebhooks`` library (an implementation independent of ours), records what arrived,
and answers as scripted (fail the first N attempts of a message, hold requests until released).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Attempt:
    id: str
    timestamp: int
    signature: str
    verified: bool
    body: dict[str, Any] | None
    status: int


@dataclass
class Receiver:
    secret: str
    fail_first: int = 0  # answer 500 to the first N attempts of every message
    always_fail: set[str] = field(default_factory=set)  # alert types always answered with 500
    hold: threading.Event | None = None  # when set: requests wait for it before answering
    attempts: list[Attempt] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def delivered(self) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if 200 <= a.status < 300]

    def for_message(self, message_id: str) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.id == message_id]

    def __enter__(self) -> Receiver:
        receiver = self
        verifier = Webhook(self.secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = verifier.verify(raw, headers)
                    verified = True
                except WebhookVerificationError:
                    body, verified = None, False
                if receiver.hold is not None:
                    receiver.arrived.set()
                    receiver.hold.wait(30)
                message_id = headers.get("webhook-id", "")
                with receiver.lock:
                    earlier = sum(1 for a in receiver.attempts if a.id == message_id)
                    if not verified:
                        status = 401
                    elif body is not None and body.get("type") in receiver.always_fail:
                        status = 500
                    else:
                        status = 500 if earlier < receiver.fail_first else 204
                    receiver.attempts.append(Attempt(message_id, int(headers.get("webhook-timestamp", "0")),
                                                     headers.get("webhook-signature", ""), verified,
                                                     body if isinstance(body, dict) else None, status))
                receiver.arrived.set()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def dead_letters(path: Any) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]
    except FileNotFoundError:
        return []
