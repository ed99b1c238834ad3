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

It also writes each response with one ``write(2)``: uvicorn writes the status line and headers
at ``http.response.start`` and the body at ``http.response.body``, two system calls that cost
more than any other single step of a decide request under load; :class:`_OneWrite` holds the
first until the second.
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
        self._header_size = 0  # bytes received while the headers are incomplete (at least their size)
        # Whether the current request began inside the chunk that ended the one before (a
        # pipelined request): then _header_size is no bound on its headers' size.
        self._chunks = 0
        self._completed_in = -1
        self._mid_chunk = False
        # One deadline at a time (header or body phase) and the callback for when it passes; the
        # timer behind it is lazy (see _arm).
        self._deadline = 0.0
        self._late: Callable[[], None] | None = None
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._chunks += 1
        if not self._awaiting_headers:
            super().data_received(data)
            return
        self._header_size += len(data)
        if self._late is None:  # the first bytes after an idle keep-alive: a request has begun
            self._arm(self.limits.header_timeout, self._headers_late)
        # Parse first: one read may hold the headers and a large body after them, which is the
        # body limit's business (413), not this one's. httptools parses a read in C without
        # keeping it; what it hands over is bounded by the read.
        super().data_received(data)
        if self._awaiting_headers and self._header_size > self.limits.max_header_bytes + 65_536:
            # Far past the limit and the headers still not complete: refuse before reading more.
            self._too_large()

    # -- parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._mid_chunk = self._chunks == self._completed_in
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        # The bytes received since the request began bound its headers' size from above; only a
        # request near the limit (or pipelined behind another) has them measured exactly.
        limit = self.limits.max_header_bytes
        if (self._header_size > limit or self._mid_chunk) and self._parsed_header_size() > limit:
            self._too_large()
            return
        self._header_size = 0
        # The body is due within body_timeout (the same deadline as the header phase, moved on
        # here and dropped when the message is complete). The app relies on it.
        self.scope["extensions"] = {**(self.scope.get("extensions") or {}), SERVER_BODY_TIMEOUT: {}}
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and not self.expect_100_continue:
            # This request's cycle writes through _OneWrite (100 Continue must go out at once).
            one = _OneWrite(self.transport, cycle.on_response)
            cycle.transport = one  # type: ignore[assignment]
            cycle.on_response = one.response_complete

    def _parsed_header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # refused at its headers: the rest is not read
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._cancel()
        self._awaiting_headers = True  # the next request on this connection (idle: uvicorn's timer)
        self._completed_in = self._chunks
        super().on_message_complete()

    # -- timers and refusals ----------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` unless :meth:`_cancel` or another ``_arm`` comes within ``delay`` seconds.

        Lazy: a request moves a deadline (two float stores) instead of creating and cancelling
        two timer handles (a few µs per request). The one timer, when it fires, calls back if
        the deadline has passed and otherwise sleeps until the current one."""
        self._deadline = self.loop.time() + delay
        self._late = callback
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._tick)

    def _cancel(self) -> None:
        self._late = None  # the timer, if any, finds nothing to do and stops

    def _tick(self) -> None:
        self._timer = None
        late = self._late
        if late is None:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._tick)
            return
        self._late = None
        late()

    def _headers_late(self) -> None:
        if self.transport.is_closing():
            return
        if self._header_size == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # a connection that never sent a byte: nobody to answer
            return
        self._refuse(408, "request-timeout", f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_late(self) -> None:
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


class _OneWrite:
    """The transport as one response's cycle sees it: the status line and headers that uvicorn
    writes at ``http.response.start`` are held until the body's first write (or the response's
    end, or anything else asked of the transport) and sent with it, so that a response is one
    ``write(2)`` instead of two. Every other call goes to the transport, after the flush."""

    __slots__ = ("_transport", "_head", "_first", "_on_response")

    def __init__(self, transport: asyncio.Transport, on_response: Callable[[], None]):
        self._transport = transport
        self._head = b""
        self._first = True
        self._on_response = on_response

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._head = data
            return
        if self._head:
            data, self._head = self._head + data, b""
        self._transport.write(data)

    def flush(self) -> None:
        self._first = False
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def response_complete(self) -> None:
        """The cycle's ``on_response``: a response without a body write (HEAD) goes out now."""
        self.flush()
        self._on_response()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._transport, name)


def protocol_class(limits: LimitSettings) -> type[GuardedHttpProtocol]:
    """:class:`GuardedHttpProtocol` with ``limits``: uvicorn's ``http=`` for one worker."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


def __getattr__(name: str) -> Any:
    # ``http="ttlpolicy.server.protocol:FromEnvironment"`` for --workers > 1: each worker process
    # imports the class by name and gets the limits ``serve`` resolved for it.
    if name == "FromEnvironment":
        return protocol_class(Settings.model_validate_json(os.environ[INTERNAL_ENV]).limits)
    raise AttributeError(name)
