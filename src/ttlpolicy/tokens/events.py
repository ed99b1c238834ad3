"""Reporting what the token issuer sees to the decision service (``POST /v1/events``).

:class:`EventReporter` queues events in memory and a background thread sends them in batches,
so reporting never slows a token response. Every event carries a unique id, which makes a
resend after a timeout or a 5xx harmless (the service counts each id once); a batch the service
refuses as invalid (4xx) is dropped and logged, since sending it again would not help.

>>> reporter = EventReporter("https://ttlpolicy.internal/v1/events", api_key=os.environ["KEY"])  # doctest: +SKIP
>>> reporter.start()                                                                              # doctest: +SKIP
>>> reporter.report("token.refreshed", subject="alice", client="web", session=family_id)         # doctest: +SKIP
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

log = logging.getLogger("ttlpolicy.tokens")
EVENT_TYPES = ("token.issued", "token.refreshed", "refresh.failed", "auth.failed", "token.bad_signature", "logout")

Sender = Callable[[str, bytes, dict[str, str], float], int]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


class EventReporter:
    """Batches issuer events to ``url``; thread-safe, never blocks :meth:`report`."""

    def __init__(self, url: str, *, api_key: str | None = None, batch_size: int = 500, interval: float = 0.5,
                 timeout: float = 5.0, queue_size: int = 100_000, retries: int = 5, sender: Sender = _post):
        if not url.startswith(("http://", "https://")):
            raise ValueError("the events URL must be http(s)")
        self.url, self.api_key = url, api_key
        self.batch_size, self.interval, self.timeout, self.retries = batch_size, interval, timeout, retries
        self._send = sender
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._prefix = os.urandom(6).hex()
        self._counter = 0
        self._lock = threading.Lock()
        self.sent = self.dropped = 0

    def report(self, event_type: str, *, subject: str | None = None, client: str | None = None,
               session: str | None = None, ip: str | None = None, country: str | None = None,
               reason: str | None = None, token_id: str | None = None, tenant: str | None = None,
               when: datetime | None = None) -> str | None:
        """Queue one event; returns its id (``None`` if the queue is full and it was dropped)."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
        if subject is None and client is None:
            raise ValueError("give subject or client")
        with self._lock:
            self._counter += 1
            event_id = f"ev-{self._prefix}-{self._counter}"
        event: dict[str, Any] = {"id": event_id, "type": event_type,
                                 "time": (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
                                 .isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        for name, value in (("subject", subject), ("client", client), ("session", session), ("ip", ip),
                            ("country", country), ("reason", reason), ("token_id", token_id), ("tenant", tenant)):
            if value is not None:
                event[name] = value
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return None
        self._queue.append(event)
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return event_id

    def start(self) -> EventReporter:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="ttlpolicy-events", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``) and stop."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def flush(self) -> None:
        """Send everything queued now, from the calling thread."""
        while self._queue:
            self._send_batch()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            while self._queue:
                if not self._send_batch() and not stopping:
                    break  # the service is unreachable: wait for the next tick
            if stopping:
                return

    def _send_batch(self) -> bool:
        batch: list[dict[str, Any]] = []
        while self._queue and len(batch) < self.batch_size:
            batch.append(self._queue.popleft())
        body = orjson.dumps({"events": batch})
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                status = self._send(self.url, body, headers, self.timeout)
            except OSError as exc:
                status, error = 0, str(exc)
            else:
                error = f"HTTP {status}"
            if 200 <= status < 300:
                self.sent += len(batch)
                return True
            if 400 <= status < 500 and status not in (408, 429):
                log.error("the decision service refused %d events (%s); dropped", len(batch), error)
                self.dropped += len(batch)
                return True
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.warning("could not send %d events (%s); keeping them for the next attempt", len(batch), error)
        self._queue.extendleft(reversed(batch))  # ids make the resend harmless
        return False
