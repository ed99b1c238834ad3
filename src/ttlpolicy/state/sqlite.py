"""The embedded store: one SQLite file in WAL mode, shared by every worker process on a host.

Why this is correct with ``--workers N``: WAL lets readers run beside one writer; every batch
that writes starts with ``BEGIN IMMEDIATE`` (it takes the write lock before reading, so a
read-modify-write such as a rate-limit hit can never interleave with another process's); a busy
database waits (``busy_timeout``) instead of failing. Each thread has its own connection,
because an sqlite3 connection must not be shared between threads.

Expiry is logical (every read ignores rows whose ``expires_at`` has passed) and physical (a
sweep deletes them at most every ``SWEEP_EVERY`` seconds, piggy-backed on a write).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import unquote

from .store import (Batch, StateStore, StoreUnavailable, StoreURLError, Window, WindowHit, check_ttl,
                    check_windows)

SWEEP_EVERY = 30.0
# A locked database waits this long before the store counts as unavailable: writes take
# microseconds, so only a stuck writer or a broken disk waits this long.
BUSY_TIMEOUT_MS = 2000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sets (key TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL,
                                 PRIMARY KEY (key, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS maps (key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
                                 expires_at REAL NOT NULL, PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (key TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS windows_key_at ON windows (key, at);
CREATE INDEX IF NOT EXISTS windows_expiry ON windows (expires_at);
"""

_Op = Callable[[sqlite3.Connection, float], Any]


class SQLiteStore(StateStore):
    """The embedded store. ``SQLiteStore(path)``; the directory is created if missing."""

    backend = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.display_url = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        self._clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._last_sweep = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connection()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open {self.display_url}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        rest = url.split(":", 1)[1]
        if "?" in rest:
            raise StoreURLError("sqlite URLs take no options (?…)")
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise StoreURLError(f"sqlite URL {url!r}: use sqlite:///absolute/path.db or sqlite:relative.db")
        path = unquote(rest)
        if not path or path.endswith("/") or path == ":memory:":
            raise StoreURLError(f"sqlite URL {url!r} names no database file (in-memory stores are not shared)")
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so a writing batch can take the
            # write lock first (BEGIN IMMEDIATE) rather than upgrade a read lock and deadlock.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def batch(self, atomic: bool = False) -> SQLiteBatch:
        return SQLiteBatch(self)  # every batch is one transaction

    def ping(self) -> None:
        try:
            self._connection().execute("SELECT 1 FROM kv LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.display_url}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _run(self, ops: list[_Op], writes: bool) -> list[Any]:
        now = self._clock()
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            try:
                results = [op(conn, now) for op in ops]
                if writes and now - self._last_sweep > SWEEP_EVERY:
                    self._last_sweep = now
                    _sweep(conn, now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return results
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.display_url}: {exc}") from exc


def _sweep(conn: sqlite3.Connection, now: float) -> None:
    for table in ("kv", "sets", "maps", "windows"):
        conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))


def _window_events(conn: sqlite3.Connection, key: str, since: float, now: float) -> list[float]:
    rows = conn.execute("SELECT at FROM windows WHERE key = ? AND at > ? AND at <= ? ORDER BY at",
                        (key, since, now)).fetchall()
    return [row[0] for row in rows]


class SQLiteBatch(Batch):
    def __init__(self, store: SQLiteStore):
        self._store = store
        self._ops: list[_Op] = []
        self._writes = False

    def _read(self, op: _Op) -> None:
        self._ops.append(op)

    def _write(self, op: _Op) -> None:
        self._ops.append(op)
        self._writes = True

    def execute(self) -> list[Any]:
        if not self._ops:
            return []
        ops, self._ops = self._ops, []
        return self._store._run(ops, self._writes)

    # key-value
    def get(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> str | None:
            row = conn.execute("SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            return None if row is None else str(row[0])
        self._read(op)

    def put(self, key: str, value: str, ttl: float) -> None:
        ttl = check_ttl(ttl)

        def op(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", (key, value, now + ttl))
        self._write(op)

    def put_if_absent(self, key: str, value: str, ttl: float) -> None:
        ttl = check_ttl(ttl)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value, expires_at = excluded.expires_at WHERE kv.expires_at <= ?",
                (key, value, now + ttl, now))
            return cursor.rowcount == 1
        self._write(op)

    def delete(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute("DELETE FROM kv WHERE key = ? RETURNING expires_at", (key,))
            rows = cursor.fetchall()
            return any(row[0] > now for row in rows)
        self._write(op)

    # counters
    def incr(self, key: str, amount: int, ttl: float) -> None:
        ttl = check_ttl(ttl)

        def op(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN kv.expires_at <= ? THEN excluded.value "
                "             ELSE CAST(CAST(kv.value AS INTEGER) + ? AS TEXT) END, "
                "expires_at = CASE WHEN kv.expires_at <= ? THEN excluded.expires_at ELSE kv.expires_at END "
                "RETURNING value",
                (key, str(int(amount)), now + ttl, now, int(amount), now)).fetchone()
            return int(row[0])
        self._write(op)

    # sets
    def set_add(self, key: str, members: Iterable[str], ttl: float) -> None:
        ttl = check_ttl(ttl)
        items = list(dict.fromkeys(members))

        def op(conn: sqlite3.Connection, now: float) -> int:
            conn.execute("DELETE FROM sets WHERE key = ? AND expires_at <= ?", (key, now))
            added = 0
            for member in items:
                added += conn.execute("INSERT OR IGNORE INTO sets (key, member, expires_at) VALUES (?, ?, ?)",
                                      (key, member, now + ttl)).rowcount
            conn.execute("UPDATE sets SET expires_at = ? WHERE key = ?", (now + ttl, key))
            return added
        self._write(op)

    def set_remove(self, key: str, members: Iterable[str]) -> None:
        items = list(dict.fromkeys(members))

        def op(conn: sqlite3.Connection, now: float) -> int:
            removed = 0
            for member in items:
                removed += conn.execute("DELETE FROM sets WHERE key = ? AND member = ? AND expires_at > ?",
                                        (key, member, now)).rowcount
            return removed
        self._write(op)

    def set_members(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> frozenset[str]:
            rows = conn.execute("SELECT member FROM sets WHERE key = ? AND expires_at > ?", (key, now)).fetchall()
            return frozenset(row[0] for row in rows)
        self._read(op)

    def set_size(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute("SELECT count(*) FROM sets WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            return int(row[0])
        self._read(op)

    # maps
    def map_put(self, key: str, field: str, value: str, ttl: float) -> None:
        ttl = check_ttl(ttl)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            conn.execute("DELETE FROM maps WHERE key = ? AND expires_at <= ?", (key, now))
            new = conn.execute("SELECT 1 FROM maps WHERE key = ? AND field = ?", (key, field)).fetchone() is None
            conn.execute("INSERT OR REPLACE INTO maps (key, field, value, expires_at) VALUES (?, ?, ?, ?)",
                         (key, field, value, now + ttl))
            conn.execute("UPDATE maps SET expires_at = ? WHERE key = ?", (now + ttl, key))
            return new
        self._write(op)

    def map_get(self, key: str, field: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> str | None:
            row = conn.execute("SELECT value FROM maps WHERE key = ? AND field = ? AND expires_at > ?",
                               (key, field, now)).fetchone()
            return None if row is None else str(row[0])
        self._read(op)

    def map_get_all(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> dict[str, str]:
            rows = conn.execute("SELECT field, value FROM maps WHERE key = ? AND expires_at > ?", (key, now)).fetchall()
            return {field: value for field, value in rows}
        self._read(op)

    def map_delete(self, key: str, field: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            return conn.execute("DELETE FROM maps WHERE key = ? AND field = ? AND expires_at > ?",
                                (key, field, now)).rowcount == 1
        self._write(op)

    # sliding windows
    def window_hit(self, key: str, now: float, windows: Sequence[Window], cost: int = 1) -> None:
        check_windows(windows, cost)
        windows = tuple(windows)
        longest = max(w.seconds for w in windows)

        def op(conn: sqlite3.Connection, clock: float) -> WindowHit:
            conn.execute("DELETE FROM windows WHERE key = ? AND at <= ?", (key, now - longest))
            events = _window_events(conn, key, now - longest, now)
            counts, exceeded, retry = [], [], 0.0
            for index, window in enumerate(windows):
                inside = [at for at in events if at > now - window.seconds]
                counts.append(len(inside))
                if len(inside) + cost > window.limit:
                    exceeded.append(index)
                    # The window has room once enough of its oldest events have aged out.
                    must_leave = len(inside) + cost - window.limit
                    if must_leave > len(inside):
                        retry = float("inf")  # cost > limit: it will never fit
                    else:
                        retry = max(retry, inside[must_leave - 1] + window.seconds - now)
            if exceeded:
                return WindowHit(False, tuple(counts), retry, tuple(exceeded))
            conn.executemany("INSERT INTO windows (key, at, expires_at) VALUES (?, ?, ?)",
                             [(key, now, clock + longest)] * cost)
            return WindowHit(True, tuple(c + cost for c in counts), 0.0)
        self._write(op)

    def window_add(self, key: str, now: float, keep: float, cost: int = 1) -> None:
        keep = check_ttl(keep)
        if cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost}")

        def op(conn: sqlite3.Connection, clock: float) -> None:
            conn.execute("DELETE FROM windows WHERE key = ? AND at <= ?", (key, now - keep))
            conn.executemany("INSERT INTO windows (key, at, expires_at) VALUES (?, ?, ?)",
                             [(key, now, clock + keep)] * cost)
        self._write(op)

    def window_count(self, key: str, now: float, seconds: float) -> None:
        def op(conn: sqlite3.Connection, clock: float) -> int:
            row = conn.execute("SELECT count(*) FROM windows WHERE key = ? AND at > ? AND at <= ? AND expires_at > ?",
                               (key, now - seconds, now, clock)).fetchone()
            return int(row[0])
        self._read(op)

