"""Shared, versioned collections of records (revocations, emergencies) on the state store.

Each collection is one store map (record id → JSON) plus a *version* key that every change
replaces with a fresh random value. Every process keeps the whole collection in memory and polls
the version (one tiny read) a few times a second, reloading only when it changed: a change made
on one replica is seen by the others within one poll interval, and when the store is down the
copy in memory keeps applying — state never opens anything.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable

import orjson

from .store import StateStore


class RecordCollection:
    """``records`` (id → dict) of one named collection; writes are atomic and bump the version."""

    def __init__(self, store: StateStore, name: str, ttl: float):
        self.store = store
        self.name = name
        self.ttl = ttl  # how long the collection outlives its last write; records carry their own expiry

    def write(self, records: Iterable[tuple[str, dict[str, Any]]]) -> list[bool]:
        """Store every record in one atomic batch; for each, True if its id was new."""
        batch = self.store.batch(atomic=True)
        count = 0
        for record_id, record in records:
            batch.map_put(self.name, record_id, orjson.dumps(record).decode(), self.ttl)
            count += 1
        if not count:
            return []
        batch.put(f"{self.name}:version", secrets.token_hex(8), self.ttl)
        return [bool(r) for r in batch.execute()[:count]]

    def delete(self, record_ids: Iterable[str]) -> None:
        """Drop records (expired ones, when pruning)."""
        batch = self.store.batch(atomic=True)
        ids = list(record_ids)
        for record_id in ids:
            batch.map_delete(self.name, record_id)
        if ids:
            batch.put(f"{self.name}:version", secrets.token_hex(8), self.ttl)
            batch.execute()

    def get(self, record_id: str) -> dict[str, Any] | None:
        raw = self.store.map_get(self.name, record_id)
        return None if raw is None else _decode(raw)

    def version(self) -> str | None:
        return self.store.get(f"{self.name}:version")

    def load(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        """``(version, records)`` read together in one round trip."""
        batch = self.store.batch()
        batch.get(f"{self.name}:version")
        batch.map_get_all(self.name)
        version, raw = batch.execute()
        records = {}
        for record_id, text in raw.items():
            record = _decode(text)
            if record is not None:
                records[record_id] = record
        return version, records


def _decode(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # a record another version wrote and we cannot read is ignored, not fatal
    return value if isinstance(value, dict) else None
