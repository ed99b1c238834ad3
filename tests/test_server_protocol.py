"""ttlpolicy's HTTP protocol driven in-process with a recording transport: a response is written
with one write (status line, headers and body together), and nothing that must go out on its own
(100 Continue, a bodiless answer, a closing connection) waits for a body."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from ttlpolicy.server.config import LimitSettings
from ttlpolicy.server.protocol import protocol_class


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    request = await receive()
    body = b"" if scope["method"] == "HEAD" else b'{"echo": %d}' % len(request.get("body", b""))
    if scope["path"] == "/nothing":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(b'{"echo": 2}'))]})
    await send({"type": "http.response.body", "body": body})


async def exchange(*chunks: bytes, settle: int = 20) -> Transport:
    config = Config(app=app, lifespan="off", date_header=False, server_header=False)
    config.load()
    protocol = protocol_class(LimitSettings())(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        for _ in range(settle):
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


def test_a_response_is_one_write() -> None:
    transport = asyncio.run(exchange(b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 11" in head and body == b'{"echo": 2}'


def test_keep_alive_requests_are_one_write_each() -> None:
    request = b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    transport = asyncio.run(exchange(request, request, request))
    assert len(transport.writes) == 3 and all(w.endswith(b'{"echo": 2}') for w in transport.writes)


def test_bodiless_answers_are_not_held_back() -> None:
    head = asyncio.run(exchange(b"HEAD /decide HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert len(head.writes) == 1 and head.writes[0].startswith(b"HTTP/1.1 200") and head.writes[0].endswith(b"\r\n\r\n")
    empty = asyncio.run(exchange(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert b"".join(empty.writes).startswith(b"HTTP/1.1 204")


def test_a_closing_connection_gets_its_answer_before_it_closes() -> None:
    transport = asyncio.run(exchange(b"POST /decide HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"))
    assert transport.closed and b"".join(transport.writes).endswith(b'{"echo": 2}')


def test_100_continue_goes_out_before_the_body_arrives() -> None:
    async def run() -> Transport:
        config = Config(app=app, lifespan="off", date_header=False, server_header=False)
        config.load()
        protocol = protocol_class(LimitSettings())(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"POST /decide HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        for _ in range(20):
            await asyncio.sleep(0)
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # before the client sends the body
        protocol.data_received(b"{}")
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport
    transport = asyncio.run(run())
    assert transport.writes[-1].endswith(b'{"echo": 2}')


def test_pipelined_requests_each_get_their_whole_answer() -> None:
    post = b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    transport = asyncio.run(exchange(b"HEAD /decide HTTP/1.1\r\nHost: x\r\n\r\n" + post + post, settle=60))
    sent = b"".join(transport.writes)
    assert sent.count(b"HTTP/1.1 200 OK") == 3 and sent.endswith(b'{"echo": 2}' * 1) and sent.count(b'{"echo": 2}') == 2
