"""What a request passes before its handler runs: credentials and scope, then (for a body) its
media type, its declared and its streamed size, its arrival within the body timeout, and JSON.

One implementation for every endpoint: the bare-ASGI ``POST /v1/decide``, the Starlette routes,
and the state and activity endpoints. Every refusal is raised as :class:`Refusal`, holding the
problem response to send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from .auth import AuthError, Authenticator, Caller, require_scope
from .config import LimitSettings
from .problems import Refusal, problem

JSON = "application/json"
# The ASGI scope extension with which ttlpolicy's HTTP protocol (protocol.py) says that it answers
# ``408 request-timeout`` itself when a body does not arrive within ``limits.body_timeout``: the
# app then reads the body without a timer of its own (an ``asyncio.timeout`` per request cost
# ~6 µs, a tenth of a decision's server time). Under any other server the app keeps its own.
SERVER_BODY_TIMEOUT = "ttlpolicy.body_timeout"


class RequestGate:
    """Credentials, scopes and the request body, checked the same way for every endpoint."""

    def __init__(self, auth: Authenticator, limits: LimitSettings):
        self.auth = auth
        self.max_body = limits.max_body_bytes
        self.body_timeout = limits.body_timeout

    def caller(self, authorization: str | None, api_key: str | None, scopes: tuple[str, ...] | None) -> Caller:
        """The authenticated caller, holding one of ``scopes`` (any caller when ``None``)."""
        try:
            caller = self.auth.authenticate(authorization, api_key)
            if scopes is not None:
                require_scope(caller, scopes)
        except AuthError as exc:
            raise Refusal(exc.response()) from None
        return caller

    def request_caller(self, request: Request, scopes: tuple[str, ...] | None) -> Caller:
        headers = request.headers
        return self.caller(headers.get("authorization"), headers.get("x-api-key"), scopes)

    def check_body_headers(self, content_type: str | None, content_length: str | None) -> None:
        """Refuse a body that is not JSON, or that says it is too large, before reading it."""
        media = (content_type or "").partition(";")[0].strip().lower()
        if media != JSON and not (media.startswith("application/") and media.endswith("+json")):
            raise Refusal(problem("unsupported-media-type", f"send the body as {JSON}, not {media or 'nothing'}"))
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_body:
            raise Refusal(self.too_large())

    def too_large(self) -> Response:
        return problem("body-too-large", f"request body exceeds {self.max_body} bytes", max_bytes=self.max_body)

    @staticmethod
    def parse(raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refusal(problem("invalid-json", f"body is not valid JSON: {exc}")) from None

    async def json_body(self, request: Request) -> Any:
        """The request's JSON body, after :meth:`check_body_headers` and :meth:`receive_body`."""
        headers = request.headers
        self.check_body_headers(headers.get("content-type"), headers.get("content-length"))
        raw = await self.receive_body(request.receive, request.scope)
        if raw is None:
            raise ClientDisconnect()  # as request.stream() would: nobody is left to answer
        return self.parse(raw)

    async def receive_body(self, receive: Receive, scope: Scope) -> bytes | None:
        """The request body, counted as it arrives (a lying or absent Content-Length is no way round
        the limit) and due within ``limits.body_timeout`` (a body that never comes is answered
        ``408 request-timeout``, not waited for: by the server when ``scope`` says it does so, see
        :data:`SERVER_BODY_TIMEOUT`); ``None`` if the client disconnected."""
        if SERVER_BODY_TIMEOUT in (scope.get("extensions") or ()):
            return await self._read_body(receive)  # the server answers 408 and closes, then this sees a disconnect
        try:
            async with asyncio.timeout(self.body_timeout):
                return await self._read_body(receive)
        except TimeoutError:
            detail = f"request body not received within {self.body_timeout:g} s"
            raise Refusal(problem("request-timeout", detail, headers={"Connection": "close"})) from None

    async def _read_body(self, receive: Receive) -> bytes | None:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if len(body) > self.max_body:
            raise Refusal(self.too_large())
        if not message.get("more_body", False):
            return body  # the usual case: the whole body in one message
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Refusal(self.too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
