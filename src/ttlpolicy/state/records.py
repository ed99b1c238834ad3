"""Shared, versioned collections of records (revocations, emergencies) on the state store.

Each collection is one store map (record id → JSON) plus a *version* key that every change
replaces with a fresh random value. Every process keeps the whole collection in memory and polls
the version (one tiny read) a few times a second, reloading only when it changed: a change made
on one replica is seen by the others within one poll interval, and when the store is down the
copy in memory keeps applying — state never opens anything.

A write reads the version it replaces in the same atomic batch (:class:`Written`), so a writer
whose copy was current can apply its own change in memory instead of reloading the collection:
a reload per write made a thousand single revocations cost half a million record decodes.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, TypeVar

import orjson

from .store import StateStore

audit_log = logging.getLogger("ttlpolicy.audit")


class _Record(Protocol):
    def to_record(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Record)


class Written(NamedTuple):
    """What :meth:`RecordCollection.write` did: for each record, whether its id was new; the
    version the write replaced (None: the collection was empty or lost) and the new one."""

    new: list[bool]
    before: str | None
    version: str | None


# ``sync(now, version=UNREAD)``: the collection's version has not been read yet (a poller that
# reads several collections' versions in one round trip passes what it read instead).
UNREAD: Any = object()


class RecordCollection:
    """``records`` (id → dict) of one named collection; writes are atomic and bump the version."""

    def __init__(self, store: StateStore, name: str, ttl: float):
        self.store = store
        self.name = name
        self.ttl = ttl  # how long the collection outlives its last write; records carry their own expiry

    def write(self, records: Iterable[tuple[str, dict[str, Any]]]) -> Written:
        """Store every record in one atomic batch (one round trip) and replace the version."""
        batch = self.store.batch(atomic=True)
        batch.get(f"{self.name}:version")
        count = 0
        for record_id, record in records:
            batch.map_put(self.name, record_id, orjson.dumps(record).decode(), self.ttl)
            count += 1
        if not count:
            return Written([], None, None)
        version = secrets.token_hex(8)
        batch.put(f"{self.name}:version", version, self.ttl)
        results = batch.execute()
        return Written([bool(r) for r in results[1:count + 1]], results[0], version)

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

    @property
    def version_key(self) -> str:
        return f"{self.name}:version"

    def version(self) -> str | None:
        return self.store.get(self.version_key)

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

    def reload(self, decode: Callable[[str, dict[str, Any]], R], held: Mapping[str, R],
               in_force: Callable[[R], bool], what: str) -> tuple[str | None, dict[str, R]]:
        """``(version, records)`` decoded (a record that cannot be decoded is skipped). When the
        store has lost the collection (no version) while records ``held`` in memory are still in
        force — a Redis restarted without persistence, a failover to an empty replica — they are
        written back: forgetting them would reopen what they closed."""
        version, raw = self.load()
        loaded: dict[str, R] = {}
        for record_id, record in raw.items():
            try:
                loaded[record_id] = decode(record_id, record)
            except (KeyError, TypeError, ValueError):
                continue
        if version is None:
            lost = {i: r for i, r in held.items() if in_force(r) and i not in loaded}
            if lost:
                audit_log.warning("the state store lost %d %s; restoring them from memory", len(lost), what)
                version = self.write((i, r.to_record()) for i, r in lost.items()).version
                loaded.update(lost)
        return version, loaded


def _decode(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None  # a record another version wrote and we cannot read is ignored, not fatal
    return value if isinstance(value, dict) else None
