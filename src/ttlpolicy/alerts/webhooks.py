"""Webhooks signed per the Standard Webhooks format, delivered off the request path.

Each message is ``{"type", "timestamp", "data"}`` JSON with three headers:
``webhook-id`` (stable across retries, for the receiver's de-duplication),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the base64-decoded part of
a ``whsec_…`` secret).

Why one thread and one queue per endpoint: :meth:`WebhookDispatcher.publish` only appends to
bounded in-memory queues, so a slow or dead receiver can never delay a decision; and an
endpoint's messages leave in the order they were published, each retried with backoff
(``retry_delays``) before the next is sent, so a receiver sees "emergency started" before
"emergency ended". After the last retry (or when a queue is full, or at shutdown) the message
goes to the dead-letter file, one JSON line each, so nothing is lost silently.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..durations import parse_duration

log = logging.getLogger("ttlpolicy.alerts")

# What the service announces. Endpoints subscribe to some (``events``); ``*`` suffixes match a prefix.
ALERT_TYPES = (
    "detector.fired",          # an anomaly detector fired (with its evidence)
    "action.applied",          # an automatic response was applied
    "action.undone",           # ... and undone
    "revocation.created",
    "refresh.reuse_detected",
    "emergency.started",
    "emergency.ended",
    "security_event.applied",  # a verified Security Event Token (CAEP/RISC) was acted on
)
SECRET_PREFIX = "whsec_"
_USER_AGENT = "ttlpolicy-webhooks/1"


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>`` (at least 24 bytes)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r} followed by base64")
    text = secret[len(SECRET_PREFIX):]
    try:  # padding is optional, as in the reference implementations
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise ValueError("the part after whsec_ is not valid base64") from None
    if len(key) < 24:
        raise ValueError(f"a webhook secret must hold at least 24 random bytes, not {len(key)}")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt.

    >>> sign(b"k" * 24, "msg_1", 1700000000, b"{}")   # doctest: +ELLIPSIS
    'v1,...'
    """
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _seconds(value: Any) -> Any:
    """A duration as seconds: a number, or text such as ``30s`` / ``2m``."""
    if isinstance(value, str):
        return float(parse_duration(value))
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookEndpoint(_Model):
    """One receiver: where, with which secret, for which alert types."""

    name: str = Field(min_length=1, max_length=64, description="for logs and metrics; the URL is never logged")
    url: str = Field(min_length=1, max_length=2048)
    secret: str | None = Field(None, description="whsec_<base64>; or secret_file")
    secret_file: Path | None = None
    events: tuple[str, ...] = Field(("*",), description="alert types, or prefixes ending in * (default: all)")
    allow_insecure_http: bool = Field(False, description="allow http:// to a non-loopback host")
    _key: bytes = PrivateAttr(default=b"")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not any(_matches(pattern, t) for t in ALERT_TYPES):
                raise ValueError(f"{pattern!r} matches no alert type; known: {', '.join(ALERT_TYPES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> WebhookEndpoint:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "http" and not self.allow_insecure_http and not _loopback(parsed.hostname or ""):
            raise ValueError("http:// to a non-loopback host sends alerts in clear text; use https:// "
                             "or set allow_insecure_http")
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret or secret_file")
        if self.secret_file is not None:
            try:
                secret = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret_file {self.secret_file}: {exc.strerror or exc}") from None
        else:
            secret = self.secret or ""
        self._key = parse_secret(secret)  # its ValueError never contains the secret
        return self

    def wants(self, alert_type: str) -> bool:
        return any(_matches(p, alert_type) for p in self.events)

    @property
    def key(self) -> bytes:
        return self._key


def _matches(pattern: str, alert_type: str) -> bool:
    return alert_type.startswith(pattern[:-1]) if pattern.endswith("*") else pattern == alert_type


class WebhookSettings(_Model):
    """``webhooks:`` in the service config (default: no endpoints, nothing sent)."""

    endpoints: tuple[WebhookEndpoint, ...] = ()
    retry_delays: tuple[float, ...] = Field((5.0, 30.0, 120.0, 600.0, 1800.0),
                                            description="wait before each retry (seconds or 30s/2m); "
                                                        "one attempt plus one per entry")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds per attempt")
    queue_size: int = Field(10_000, ge=1, le=1_000_000, description="messages waiting per endpoint")
    dead_letter: Path | None = Field(None, description="JSON lines of undeliverable messages")

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(_seconds(v) for v in value)
        return value

    @field_validator("retry_delays")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v < 0 or v > 86_400 for v in value) or len(value) > 20:
            raise ValueError("at most 20 delays, each between 0 and 1 day")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return _seconds(value)

    @model_validator(mode="after")
    def _names(self) -> WebhookSettings:
        names = [e.name for e in self.endpoints]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"endpoint name {twice[0]!r} is used twice")
        if self.endpoints and self.dead_letter is None:
            raise ValueError("set dead_letter (a file path): undeliverable alerts must land somewhere")
        return self


@dataclass(frozen=True, slots=True)
class Message:
    """One alert: its id (``msg_…``), type and serialized body, identical for every attempt."""

    id: str
    type: str
    body: bytes


Sender = Callable[[str, bytes, dict[str, str], float], int]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body``; the HTTP status, or raises ``OSError`` when no answer came."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # an answer, just not a 2xx
        exc.close()
        return int(exc.code)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is a failed attempt: a signed alert is never re-sent to a URL nobody configured.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class _Endpoint:
    """The queue and the delivery thread of one endpoint."""

    def __init__(self, config: WebhookEndpoint, dispatcher: WebhookDispatcher):
        self.config = config
        self.dispatcher = dispatcher
        self.queue: collections.deque[Message] = collections.deque()
        self.ready = threading.Condition()
        self.thread: threading.Thread | None = None


class WebhookDispatcher:
    """Queues alerts and delivers them to every subscribed endpoint; never blocks the caller.

    >>> hooks = WebhookDispatcher(settings.webhooks)            # doctest: +SKIP
    >>> hooks.start(); hooks.publish("emergency.started", {"id": "INC-42"}); hooks.stop()
    """

    def __init__(self, settings: WebhookSettings, on_result: Callable[[str, str], None] | None = None,
                 sender: Sender = _post, clock: Callable[[], float] = time.time):
        self.settings = settings
        self._on_result = on_result or (lambda endpoint, result: None)
        self._send = sender
        self._clock = clock
        self._endpoints = [_Endpoint(e, self) for e in settings.endpoints]
        self._stopping = threading.Event()
        self._dead_lock = threading.Lock()
        self._prefix = f"msg_{os.urandom(8).hex()}_"
        self._counter = 0
        self._counter_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._endpoints)

    def _next_id(self) -> str:
        with self._counter_lock:
            self._counter += 1
            return f"{self._prefix}{self._counter}"

    def publish(self, alert_type: str, data: dict[str, Any], when: datetime | None = None) -> Message | None:
        """Queue one alert for every endpoint that wants it; returns the message (``None``: nobody wants it)."""
        if alert_type not in ALERT_TYPES:
            raise ValueError(f"unknown alert type {alert_type!r}")
        targets = [e for e in self._endpoints if e.config.wants(alert_type)]
        if not targets:
            return None
        instant = when or datetime.fromtimestamp(self._clock(), timezone.utc)
        body = orjson.dumps({"type": alert_type, "timestamp": instant.isoformat().replace("+00:00", "Z"),
                             "data": data})
        message = Message(self._next_id(), alert_type, body)
        for endpoint in targets:
            with endpoint.ready:
                if len(endpoint.queue) >= self.settings.queue_size:
                    full = True
                else:
                    full = False
                    endpoint.queue.append(message)
                    endpoint.ready.notify()
            if full:  # outside the lock: the dead-letter write is file I/O
                self._dead_letter(endpoint.config, message, 0, "queue full")
        return message

    def start(self) -> None:
        self._stopping.clear()
        for endpoint in self._endpoints:
            if endpoint.thread is None:
                endpoint.thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True,
                                                   name=f"ttlpolicy-webhook-{endpoint.config.name}")
                endpoint.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering; what is still queued (or waiting for a retry) goes to the dead-letter file."""
        self._stopping.set()
        for endpoint in self._endpoints:
            with endpoint.ready:
                endpoint.ready.notify_all()
        deadline = time.monotonic() + timeout
        for endpoint in self._endpoints:
            if endpoint.thread is not None:
                endpoint.thread.join(max(0.0, deadline - time.monotonic()))
                endpoint.thread = None
            while endpoint.queue:
                self._dead_letter(endpoint.config, endpoint.queue.popleft(), 0, "service stopped before delivery")

    def pending(self) -> int:
        """Messages queued and not yet delivered or dead-lettered."""
        return sum(len(e.queue) for e in self._endpoints)

    # -- the delivery thread ------------------------------------------------------------------

    def _run(self, endpoint: _Endpoint) -> None:
        while not self._stopping.is_set():
            with endpoint.ready:
                while not endpoint.queue and not self._stopping.is_set():
                    endpoint.ready.wait()
                if self._stopping.is_set():
                    return
                message = endpoint.queue[0]  # leaves the queue only when delivered or dead-lettered
            delivered = self._deliver(endpoint.config, message)
            if delivered is None:
                return  # stopping: stop() dead-letters it with the rest of the queue
            with endpoint.ready:
                if endpoint.queue and endpoint.queue[0] is message:
                    endpoint.queue.popleft()

    def _deliver(self, config: WebhookEndpoint, message: Message) -> bool | None:
        """Send ``message`` with its retries: True delivered, False dead-lettered, None interrupted."""
        delays = self.settings.retry_delays
        error = ""
        for attempt in range(len(delays) + 1):
            if attempt:
                self._on_result(config.name, "retry")
                if self._stopping.wait(delays[attempt - 1]):
                    return None
            timestamp = int(self._clock())
            headers = {"content-type": "application/json", "user-agent": _USER_AGENT,
                       "webhook-id": message.id, "webhook-timestamp": str(timestamp),
                       "webhook-signature": sign(config.key, message.id, timestamp, message.body)}
            try:
                status = self._send(config.url, message.body, headers, self.settings.timeout)
            except (OSError, ValueError) as exc:  # refused, timed out, DNS, TLS: retried like a 5xx
                error = type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
            else:
                if 200 <= status < 300:
                    self._on_result(config.name, "delivered")
                    return True
                error = f"HTTP {status}"
            log.warning("webhook %s to endpoint %s failed (attempt %d): %s", message.id, config.name,
                        attempt + 1, error)
        self._dead_letter(config, message, len(delays) + 1, error)
        return False

    def _dead_letter(self, config: WebhookEndpoint, message: Message, attempts: int, error: str) -> None:
        self._on_result(config.name, "dead_letter")
        line = orjson.dumps({"id": message.id, "type": message.type, "endpoint": config.name,
                             "attempts": attempts, "error": error,
                             "failed_at": datetime.fromtimestamp(self._clock(), timezone.utc).isoformat(),
                             "message": orjson.loads(message.body)}, option=orjson.OPT_APPEND_NEWLINE)
        path = self.settings.dead_letter
        if path is None:  # the settings require it whenever an endpoint exists
            log.error("webhook %s for endpoint %s dropped: no dead_letter file", message.id, config.name)
            return
        try:
            with self._dead_lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as file:
                    file.write(line)
        except OSError as exc:
            log.error("cannot write the webhook dead-letter file %s: %s", path, exc)
