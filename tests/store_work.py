"""Counting the work a state store does, for tests that assert behaviour rather than time.

``round_trips``: SQLite transactions, or writes of commands to a Redis socket (a pipeline is
one; redis-py's hidden ``SCRIPT EXISTS`` before a pipeline with scripts would be a second).
``changes``: SQLite rows inserted, updated or deleted; Redis commands sent. Only the calling
thread's work counts, so a state poller running elsewhere in the process does not.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from redis.connection import AbstractConnection

from ttlpolicy.state import StateStore
from ttlpolicy.state.sqlite import SQLiteStore


@dataclass
class Work:
    round_trips: int = 0
    changes: int = 0


@contextmanager
def counting(store: StateStore) -> Iterator[Work]:
    work = Work()
    me = threading.get_ident()
    if isinstance(store, SQLiteStore):
        connection = store._connection()
        before = connection.total_changes
        run = store._run

        def counted_run(ops: Any, writes: bool) -> Any:
            if threading.get_ident() == me:
                work.round_trips += 1
            return run(ops, writes)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "_run", counted_run)
            yield work
        work.changes = connection.total_changes - before
        return
    send_packed, send_command, pack_commands = (AbstractConnection.send_packed_command,
                                                AbstractConnection.send_command, AbstractConnection.pack_commands)

    def counted_send_packed(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            work.round_trips += 1
        return send_packed(self, *args, **kwargs)

    def counted_send_command(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            work.changes += 1
        return send_command(self, *args, **kwargs)

    def counted_pack_commands(self: AbstractConnection, commands: Any) -> Any:
        commands = list(commands)
        if threading.get_ident() == me:
            work.changes += len(commands)
        return pack_commands(self, commands)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counted_send_packed)
        patch.setattr(AbstractConnection, "send_command", counted_send_command)
        patch.setattr(AbstractConnection, "pack_commands", counted_pack_commands)
        yield work
