"""Shared fixtures. Kept small: most tests build what they need themselves."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (skips locally / fails in CI without the program)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL on the session's redis-server with a prefix of its own, so tests never see each other's keys."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"
