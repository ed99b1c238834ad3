"""Slow and silent clients against a real uvicorn process, over raw sockets (issue 14, defect 4).

Each test waits for the server's own verdict (a 408/431/503 problem, or the connection closed)
with a generous socket timeout as a safety net; none asserts how long anything took.
"""

from __future__ import annotations

import json
import select
import socket
from typing import Iterator

import pytest
from server_fixtures.helpers import ServerProcess

LIMITS = {"TTLPOLICY_LIMITS__HEADER_TIMEOUT": "1", "TTLPOLICY_LIMITS__BODY_TIMEOUT": "1",
          "TTLPOLICY_LIMITS__IDLE_TIMEOUT": "1", "TTLPOLICY_LIMITS__MAX_HEADER_BYTES": "2048"}
SAFETY = 15.0  # seconds before a test gives up on the server; the limits above are 1 s


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("--no-watch", env=LIMITS) as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SAFETY)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails on the safety timeout)."""
    data = b""
    while True:
        chunk = sock.recv(65_536)
        if not chunk:
            return data
        data += chunk


def problem_of(response: bytes) -> tuple[int, dict[str, object], str]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = "\n".join(lines[1:]).lower()
    return status, json.loads(body), headers


def test_unfinished_headers_get_408_and_the_connection_closes(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")  # no end
        status, body, headers = problem_of(read_until_closed(sock))
    assert status == 408 and body["code"] == "request-timeout"
    assert "application/problem+json" in headers and "connection: close" in headers


def test_a_body_that_never_arrives_gets_408(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"context\": {}")  # 14 of 100 bytes
        status, body, headers = problem_of(read_until_closed(sock))
    assert status == 408 and body["code"] == "request-timeout"
    assert "connection: close" in headers


def test_a_body_sent_to_a_route_that_does_not_read_it_is_not_waited_for(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        response = read_until_closed(sock)  # answered, then closed when the body stays missing
    assert response.startswith(b"HTTP/1.1 200")


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):  # the whole first response, however it is split
            chunk = sock.recv(65_536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
        assert read_until_closed(sock) == b""  # nothing more, then the server closes the idle connection


def test_a_silent_connection_is_closed_without_an_answer(server: ServerProcess) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_oversized_headers_get_431(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n")
        status, body, _ = problem_of(read_until_closed(sock))
    assert status == 431 and body["code"] == "headers-too-large"


def test_connections_beyond_the_cap_get_503() -> None:
    env = {"TTLPOLICY_LIMITS__MAX_CONNECTIONS": "3", "TTLPOLICY_LIMITS__HEADER_TIMEOUT": "30"}
    with ServerProcess("--no-watch", env=env) as server:
        held = [connect(server) for _ in range(3)]  # silent: held open until their header timeout
        try:
            with connect(server) as extra:
                status, body, headers = problem_of(read_until_closed(extra))
            assert status == 503 and body["code"] == "too-many-connections" and "retry-after" in headers
        finally:
            for sock in held:
                sock.close()
        with connect(server) as sock:  # capacity is back once they are gone
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


def test_a_large_body_in_the_same_read_as_its_headers_is_a_body_problem(server: ServerProcess) -> None:
    """Headers and a 100 kB body in one write reach the server in one read: the headers are small,
    so the answer is the body limit's 413, not 431 (which a coarse count of the read gave)."""
    body = b'{"context": {}}' + b" " * 100_000
    with connect(server) as sock:
        sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, problem, _ = problem_of(read_until_closed(sock))
    assert status == 413 and problem["code"] == "body-too-large"


def test_headers_that_never_end_are_refused_before_they_are_all_read(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        for _ in range(20):  # 320 kB of one header that never ends, a piece at a time ...
            sock.sendall(b"a" * 16_384)
            if select.select([sock], [], [], 0.2)[0]:  # ... until the server answers
                break
        status, problem, _ = problem_of(read_until_closed(sock))
    assert status == 431 and problem["code"] == "headers-too-large"


def test_oversized_headers_of_a_pipelined_request_get_431(server: ServerProcess) -> None:
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3000 + b"\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(small + big)  # one write: the second request begins inside the first one's chunk
        response = read_until_closed(sock)
    assert b"HTTP/1.1 431" in response and b"headers-too-large" in response  # refused, not served
