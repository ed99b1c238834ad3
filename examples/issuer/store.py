"""SQLite storage for the example issuer: token families, refresh-token records, DPoP proof ids.

Implements :class:`ttlpolicy.tokens.RefreshStore`. Every method is one SQL statement, so each
is atomic; ``consume`` is a conditional UPDATE, which makes it a compare-and-set even across
processes sharing the file. Only token ids are stored, never tokens or secrets.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from ttlpolicy.tokens import Family, RefreshRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS families (
    id TEXT PRIMARY KEY, subject TEXT NOT NULL, client_id TEXT NOT NULL, auth_time INTEGER NOT NULL,
    session_exp INTEGER, created_at INTEGER NOT NULL, public_client INTEGER NOT NULL, cnf TEXT,
    revoked_at INTEGER, revoked_reason TEXT);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY, family TEXT NOT NULL REFERENCES families(id), issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, ttl INTEGER NOT NULL, rotation INTEGER NOT NULL, grace INTEGER NOT NULL,
    used_at INTEGER, successor TEXT);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family);
CREATE TABLE IF NOT EXISTS dpop_proofs (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
"""
_FAMILY = "id, subject, client_id, auth_time, session_exp, created_at, public_client, cnf, revoked_at, revoked_reason"
_TOKEN = "jti, family, issued_at, expires_at, ttl, rotation, grace, used_at, successor"


class SqliteStore:
    """A :class:`~ttlpolicy.tokens.RefreshStore` in one SQLite file (WAL mode)."""

    def __init__(self, path: str | Path):
        # One connection guarded by a lock: Starlette runs sync endpoints in a thread pool.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, *args: object) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create_family(self, family: Family) -> None:
        self._run(f"INSERT INTO families ({_FAMILY}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  family.id, family.subject, family.client_id, family.auth_time, family.session_exp,
                  family.created_at, int(family.public_client), json.dumps(family.cnf) if family.cnf else None,
                  family.revoked_at, family.revoked_reason)

    def family(self, family_id: str) -> Family | None:
        row = self._run(f"SELECT {_FAMILY} FROM families WHERE id = ?", family_id).fetchone()
        if row is None:
            return None
        return Family(id=row[0], subject=row[1], client_id=row[2], auth_time=row[3], session_exp=row[4],
                      created_at=row[5], public_client=bool(row[6]), cnf=json.loads(row[7]) if row[7] else None,
                      revoked_at=row[8], revoked_reason=row[9])

    def tighten_session(self, family_id: str, session_exp: int) -> None:
        self._run("UPDATE families SET session_exp = ? WHERE id = ? AND (session_exp IS NULL OR session_exp > ?)",
                  session_exp, family_id, session_exp)

    def revoke_family(self, family_id: str, at: int, reason: str) -> None:
        self._run("UPDATE families SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
                  at, reason, family_id)

    def is_revoked(self, family: str) -> bool:
        row = self._run("SELECT revoked_at FROM families WHERE id = ?", family).fetchone()
        return row is not None and row[0] is not None

    def add_token(self, record: RefreshRecord) -> None:
        self._run(f"INSERT INTO refresh_tokens ({_TOKEN}) VALUES (?,?,?,?,?,?,?,?,?)",
                  record.jti, record.family, record.issued_at, record.expires_at, record.ttl,
                  int(record.rotation), record.grace, record.used_at, record.successor)

    def token(self, jti: str) -> RefreshRecord | None:
        row = self._run(f"SELECT {_TOKEN} FROM refresh_tokens WHERE jti = ?", jti).fetchone()
        if row is None:
            return None
        return RefreshRecord(jti=row[0], family=row[1], issued_at=row[2], expires_at=row[3], ttl=row[4],
                             rotation=bool(row[5]), grace=row[6], used_at=row[7], successor=row[8])

    def consume(self, jti: str, at: int, successor: str) -> bool:
        cursor = self._run("UPDATE refresh_tokens SET used_at = ?, successor = ? WHERE jti = ? AND successor IS NULL",
                           at, successor, jti)
        return cursor.rowcount == 1

    def set_successor(self, jti: str, successor: str) -> None:
        self._run("UPDATE refresh_tokens SET successor = ? WHERE jti = ?", successor, jti)

    def tighten_token(self, jti: str, expires_at: int) -> None:
        self._run("UPDATE refresh_tokens SET expires_at = ? WHERE jti = ? AND expires_at > ?",
                  expires_at, jti, expires_at)

    def dpop_seen(self, proof_id: str, expires_at: int, now: int) -> bool:
        """Record a DPoP proof id; ``True`` if it was seen before (a replay)."""
        self._run("DELETE FROM dpop_proofs WHERE expires_at < ?", now)
        cursor = self._run("INSERT OR IGNORE INTO dpop_proofs (id, expires_at) VALUES (?, ?)", proof_id, expires_at)
        return cursor.rowcount == 0
