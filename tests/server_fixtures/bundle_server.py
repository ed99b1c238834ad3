"""A real local HTTP server for bundles that can be told to misbehave, for the remote-bundle tests."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BundleServer:
    """Serves ``self.body`` at any path with an ETag; ``mode`` makes it misbehave.

    Modes: ``ok``; ``garbage`` (200 with bytes that are no bundle); ``truncated`` (announces the
    whole length, sends half and closes); ``error`` (HTTP 500). :meth:`die` stops the server:
    the port then refuses connections, as a dead server's would. ``requests`` records
    ``(If-None-Match, status)`` per request.
    """

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.mode = "ok"
        self.requests: list[tuple[str | None, int]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._answer(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/bundles/set.tar.gz"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        seen = handler.headers.get("If-None-Match")
        body, mode = self.body, self.mode
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if mode == "error":
            status, payload = 500, b"internal error"
        elif mode == "garbage":
            status, payload = 200, b"<html>maintenance</html>" * 20
        elif mode == "ok" and seen == etag:
            status, payload = 304, b""
        else:
            status, payload = 200, body
        self.requests.append((seen, status))
        handler.send_response(status)
        if status == 200 and mode in ("ok", "truncated"):
            handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if mode == "truncated":
            payload = payload[: len(payload) // 2]
            handler.close_connection = True
        handler.wfile.write(payload)
        handler.wfile.flush()

    def die(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)

    def __enter__(self) -> BundleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.die()
