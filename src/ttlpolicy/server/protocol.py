"""Connection limits uvicorn lacks: header, body and idle timeouts, a header-size limit and a
cap on open connections, so that a slow or silent client cannot hold a connection (slowloris).

uvicorn's HTTP protocol (httptools) closes an idle keep-alive connection after
``timeout_keep_alive``, but it arms no timer on a new connection, none while headers arrive
and none while a body arrives, and it limits neither header size nor connections (its
``limit_concurrency`` answers 503 only once headers are in). :class:`GuardedHttpProtocol`
adds, per connection:

* **header timeout** — from the first byte of a request (or the connection's opening) until
  its headers are complete; then ``408 request-timeout`` (nothing answered to a connection that
  never sent a byte) and the connection is closed;
* **body timeout** — from the end of the headers until the body is complete; then ``408
  request-timeout`` if no response has started yet, and the connection is closed (also when the
  route answered without reading the body). The scope carries the extension
  ``ttlpolicy.body_timeout`` (``gate.SERVER_BODY_TIMEOUT``) so that the app does not arm a timer of
  its own per request, as it does under any other server;
* **idle timeout** — uvicorn's keep-alive timer, set to ``limits.idle_timeout``;
* **header size** — request line and headers over ``limits.max_header_bytes``: ``431
  headers-too-large``;
* **connections** — beyond ``limits.max_connections`` per worker a new connection gets ``503
  too-many-connections`` and is closed at once.
Every refusal is an RFC 9457 problem with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import INTERNAL_ENV, LimitSettings, Settings
from .gate import SERVER_BODY_TIMEOUT
from .problems import PROBLEM_MEDIA_TYPE, problem_body

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`LimitSettings` (``limits``)."""

    limits = LimitSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_size = 0  # bytes received while the headers are incomplete (a coarse early check)
        self._header_size_exact = 0  # the request line and headers as parsed
        self._timer: asyncio.TimerHandle | None = None

    # -- the connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too-many-connections", f"more than {self.limits.max_connections} open connections; "
                         "retry later", retry_after=True)
            return
        self._arm(self.limits.header_timeout, self._headers_late)  # a new connection sends its request now

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_size += len(data)
            if self._timer is None:  # the first bytes after an idle keep-alive: a request has begun
                self._arm(self.limits.header_timeout, self._headers_late)
            if self._header_size > self.limits.max_header_bytes + 65_536:
                # Far past the limit without the end of the headers: refuse before parsing more.
                self._too_large()
                return
        super().data_received(data)

    # -- parser callbacks -------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._header_size_exact += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size_exact += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        self._header_size_exact = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_size = 0
        if self._header_size_exact > self.limits.max_header_bytes:
            self._too_large()
            return
        # The body is due within body_timeout (one timer for both the header and the body phase:
        # re-armed here, cancelled when the message is complete). The app relies on it.
        self.scope["extensions"] = {**(self.scope.get("extensions") or {}), SERVER_BODY_TIMEOUT: {}}
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # refused at its headers: the rest is not read
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._cancel()
        self._awaiting_headers = True  # the next request on this connection (idle: uvicorn's timer)
        super().on_message_complete()

    # -- timers and refusals ----------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._header_size == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # a connection that never sent a byte: nobody to answer
            return
        self._refuse(408, "request-timeout", f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._refuse(408, "request-timeout", f"request body not received within {self.limits.body_timeout:g} s")
            return
        self.transport.close()  # answered without reading the body: nothing more to wait for

    def _too_large(self) -> None:
        self._refuse(431, "headers-too-large", f"request line and headers exceed {self.limits.max_header_bytes} bytes")

    def _refuse(self, status: int, code: str, detail: str, retry_after: bool = False) -> None:
        self._cancel()
        if self.transport.is_closing():
            return
        body = orjson.dumps(problem_body(code, detail))
        head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: " + PROBLEM_MEDIA_TYPE.encode(),
                b"content-length: %d" % len(body), b"connection: close"]
        if retry_after:
            head.append(b"retry-after: 1")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


def protocol_class(limits: LimitSettings) -> type[GuardedHttpProtocol]:
    """:class:`GuardedHttpProtocol` with ``limits``: uvicorn's ``http=`` for one worker."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


def __getattr__(name: str) -> Any:
    # ``http="ttlpolicy.server.protocol:FromEnvironment"`` for --workers > 1: each worker process
    # imports the class by name and gets the limits ``serve`` resolved for it.
    if name == "FromEnvironment":
        return protocol_class(Settings.model_validate_json(os.environ[INTERNAL_ENV]).limits)
    raise AttributeError(name)
