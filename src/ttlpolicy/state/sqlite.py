"""The embedded store: one SQLite file in WAL mode, shared by every worker process on a host.

Why this is correct with ``--workers N``: WAL lets readers run beside one writer; every batch
that writes starts with ``BEGIN IMMEDIATE`` (it takes the write lock before reading, so a
read-modify-write such as a rate-limit hit can never interleave with another process's); a busy
database waits (``busy_timeout``) instead of failing. Each thread has its own connection,
because an sqlite3 connection must not be shared between threads.

Expiry is logical (every read ignores what has expired) and physical (a sweep deletes it at
most every ``SWEEP_EVERY`` seconds, piggy-backed on a write). A set or a map expires as a whole,
as a Redis key does, so its expiry is kept once, in ``containers``, not on each member: a write
then touches the rows it writes and one expiry row, whatever the size of the set or map (an
expiry per row made every write rewrite the whole map: 1,000 revocations were ~500,000 row
updates).
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
SWEEP_WINDOWS_EVERY = 1.0
SWEEP_WINDOW_KEYS = 500
# A locked database waits this long before the store counts as unavailable: writes take
# microseconds, so only a stuck writer or a broken disk waits this long.
BUSY_TIMEOUT_MS = 2000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS containers (kind TEXT NOT NULL, key TEXT NOT NULL, expires_at REAL NOT NULL,
                                       PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS containers_expiry ON containers (expires_at);
CREATE TABLE IF NOT EXISTS set_members (key TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (key, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS map_fields (key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
                                       PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_events (key TEXT NOT NULL, at REAL NOT NULL, n INTEGER NOT NULL,
                                          expires_at REAL NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID;
"""
SCHEMA_VERSION = 1
# Version 0 kept an expiry on every set member and map field (tables `sets` and `maps`) and one
# row per window event in a table with two indexes (`windows`); a database written by it is
# moved over once, when it is first opened by this version.
_MIGRATE_FROM_0 = """
INSERT OR IGNORE INTO window_events SELECT key, at, count(*), max(expires_at) FROM windows GROUP BY key, at;
DROP TABLE windows;
INSERT OR REPLACE INTO containers SELECT 'set', key, max(expires_at) FROM sets GROUP BY key;
INSERT OR IGNORE INTO set_members SELECT key, member FROM sets;
DROP TABLE sets;
INSERT OR REPLACE INTO containers SELECT 'map', key, max(expires_at) FROM maps GROUP BY key;
INSERT OR IGNORE INTO map_fields SELECT key, field, value FROM maps;
DROP TABLE maps;
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
        self._last_sweep = self._last_window_sweep = 0.0
        self._window_sweep_after = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connection()
            conn.execute("PRAGMA journal_mode=WAL")
            _create_schema(conn)
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
                if writes and now - self._last_window_sweep > SWEEP_WINDOWS_EVERY:
                    self._last_window_sweep = now
                    self._window_sweep_after = _sweep_windows(conn, now, self._window_sweep_after)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return results
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.display_url}: {exc}") from exc


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring an older database up to date: once, whichever worker process
    gets here first (the check and the change are one write transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            old = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                                  "name IN ('sets', 'maps', 'windows')")}
            if old == {"sets", "maps", "windows"}:
                for statement in _MIGRATE_FROM_0.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sweep(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))
    for kind, table in (("set", "set_members"), ("map", "map_fields")):
        conn.execute(f"DELETE FROM {table} WHERE key IN "
                     f"(SELECT key FROM containers WHERE kind = '{kind}' AND expires_at <= ?)", (now,))
    conn.execute("DELETE FROM containers WHERE expires_at <= ?", (now,))


def _sweep_windows(conn: sqlite3.Connection, now: float, after: str) -> str:
    """Drop the expired events of the next ``SWEEP_WINDOW_KEYS`` window keys after ``after``;
    returns where the next sweep goes on ('' to start over). A hit already drops its own key's
    old events, so this is only for keys nobody hits any more; walking the primary key a slice
    at a time keeps every sweep short without an expiry index, which cost every hit a second
    b-tree write (~35 µs)."""
    keys = conn.execute("SELECT DISTINCT key FROM window_events WHERE key > ? ORDER BY key LIMIT ?",
                        (after, SWEEP_WINDOW_KEYS)).fetchall()
    if not keys:
        return ""
    last = keys[-1][0]
    conn.execute("DELETE FROM window_events WHERE key > ? AND key <= ? AND expires_at <= ?", (after, last, now))
    return "" if len(keys) < SWEEP_WINDOW_KEYS else str(last)


def _live(conn: sqlite3.Connection, kind: str, key: str, now: float) -> bool:
    row = conn.execute("SELECT expires_at FROM containers WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    return row is not None and row[0] > now


def _renew(conn: sqlite3.Connection, kind: str, table: str, key: str, now: float, ttl: float) -> bool:
    """Before a write to a set or map: an expired one starts afresh (as a Redis key would), and
    the whole of it now expires ``ttl`` from now. One expiry row, whatever its size. Returns
    whether it was live; a live one (the usual case) costs one statement."""
    if conn.execute("UPDATE containers SET expires_at = ? WHERE kind = ? AND key = ? AND expires_at > ?",
                    (now + ttl, kind, key, now)).rowcount:
        return True
    conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
    conn.execute("INSERT OR REPLACE INTO containers (kind, key, expires_at) VALUES (?, ?, ?)", (kind, key, now + ttl))
    return False


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
            _renew(conn, "set", "set_members", key, now, ttl)
            return conn.executemany("INSERT OR IGNORE INTO set_members (key, member) VALUES (?, ?)",
                                    [(key, member) for member in items]).rowcount if items else 0
        self._write(op)

    def set_remove(self, key: str, members: Iterable[str]) -> None:
        items = list(dict.fromkeys(members))

        def op(conn: sqlite3.Connection, now: float) -> int:
            if not items or not _live(conn, "set", key, now):
                return 0
            return conn.executemany("DELETE FROM set_members WHERE key = ? AND member = ?",
                                    [(key, member) for member in items]).rowcount
        self._write(op)

    def set_members(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> frozenset[str]:
            rows = conn.execute("SELECT m.member FROM containers c JOIN set_members m ON m.key = c.key "
                                "WHERE c.kind = 'set' AND c.key = ? AND c.expires_at > ?", (key, now)).fetchall()
            return frozenset(row[0] for row in rows)
        self._read(op)

    def set_size(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute("SELECT count(*) FROM containers c JOIN set_members m ON m.key = c.key "
                               "WHERE c.kind = 'set' AND c.key = ? AND c.expires_at > ?", (key, now)).fetchone()
            return int(row[0])
        self._read(op)

    # maps
    def map_put(self, key: str, field: str, value: str, ttl: float) -> None:
        ttl = check_ttl(ttl)

        def op(conn: sqlite3.Connection, now: float) -> bool:
            # A live map usually has the field already (a user's country seen again): update it
            # first; two statements in all, where a check, an upsert, an insert and an update were four.
            if _renew(conn, "map", "map_fields", key, now, ttl) and conn.execute(
                    "UPDATE map_fields SET value = ? WHERE key = ? AND field = ?", (value, key, field)).rowcount:
                return False
            conn.execute("INSERT INTO map_fields (key, field, value) VALUES (?, ?, ?)", (key, field, value))
            return True
        self._write(op)

    def map_get(self, key: str, field: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> str | None:
            row = conn.execute("SELECT m.value FROM containers c JOIN map_fields m ON m.key = c.key "
                               "WHERE c.kind = 'map' AND c.key = ? AND c.expires_at > ? AND m.field = ?",
                               (key, now, field)).fetchone()
            return None if row is None else str(row[0])
        self._read(op)

    def map_get_all(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> dict[str, str]:
            rows = conn.execute("SELECT m.field, m.value FROM containers c JOIN map_fields m ON m.key = c.key "
                                "WHERE c.kind = 'map' AND c.key = ? AND c.expires_at > ?", (key, now)).fetchall()
            return {field: value for field, value in rows}
        self._read(op)

    def map_delete(self, key: str, field: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            if not _live(conn, "map", key, now):
                return False
            return conn.execute("DELETE FROM map_fields WHERE key = ? AND field = ?", (key, field)).rowcount == 1
        self._write(op)

    # sliding windows: one row per (key, instant) with the number of events at that instant, in a
    # table that is its own (key, at) index, so a hit changes one b-tree (see _sweep_windows).
    def window_hit(self, key: str, now: float, windows: Sequence[Window], cost: int = 1) -> None:
        check_windows(windows, cost)
        windows = tuple(windows)
        longest = max(w.seconds for w in windows)

        def op(conn: sqlite3.Connection, clock: float) -> WindowHit:
            conn.execute("DELETE FROM window_events WHERE key = ? AND at <= ?", (key, now - longest))
            counts, exceeded, retry = [], [], 0.0
            for index, window in enumerate(windows):
                since = now - window.seconds
                count = int(conn.execute("SELECT total(n) FROM window_events WHERE key = ? AND at > ? AND at <= ?",
                                         (key, since, now)).fetchone()[0])
                counts.append(count)
                if count + cost > window.limit:
                    exceeded.append(index)
                    # The window has room once enough of its oldest events have aged out.
                    must_leave = count + cost - window.limit
                    if must_leave > count:
                        retry = float("inf")  # cost > limit: it will never fit
                    elif retry != float("inf"):
                        retry = max(retry, _nth_oldest(conn, key, since, now, must_leave) + window.seconds - now)
            if exceeded:
                return WindowHit(False, tuple(counts), retry, tuple(exceeded))
            _record(conn, key, now, cost, clock + longest)
            return WindowHit(True, tuple(c + cost for c in counts), 0.0)
        self._write(op)

    def window_add(self, key: str, now: float, keep: float, cost: int = 1) -> None:
        keep = check_ttl(keep)
        if cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost}")

        def op(conn: sqlite3.Connection, clock: float) -> None:
            conn.execute("DELETE FROM window_events WHERE key = ? AND at <= ?", (key, now - keep))
            _record(conn, key, now, cost, clock + keep)
        self._write(op)

    def window_count(self, key: str, now: float, seconds: float) -> None:
        def op(conn: sqlite3.Connection, clock: float) -> int:
            row = conn.execute("SELECT total(n) FROM window_events WHERE key = ? AND at > ? AND at <= ? "
                               "AND expires_at > ?", (key, now - seconds, now, clock)).fetchone()
            return int(row[0])
        self._read(op)


def _record(conn: sqlite3.Connection, key: str, at: float, cost: int, expires_at: float) -> None:
    conn.execute("INSERT INTO window_events (key, at, n, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (key, at) "
                 "DO UPDATE SET n = n + excluded.n, expires_at = max(expires_at, excluded.expires_at)",
                 (key, at, cost, expires_at))


def _nth_oldest(conn: sqlite3.Connection, key: str, since: float, now: float, nth: int) -> float:
    """The instant of the ``nth`` oldest event in ``(since, now]`` (only when a hit is refused)."""
    seen = 0
    for at, n in conn.execute("SELECT at, n FROM window_events WHERE key = ? AND at > ? AND at <= ? ORDER BY at",
                              (key, since, now)):
        seen += n
        if seen >= nth:
            return float(at)
    return now  # pragma: no cover - counted in the same transaction; if ever, a full window's wait
