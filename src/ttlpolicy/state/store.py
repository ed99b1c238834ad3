"""The state store contract: what every backend (SQLite, Redis) offers, and nothing more.

ttlpolicy keeps state after a token is issued — rate-limit windows, revocations, emergency
ceilings, refresh families, activity counters. All of it goes through this small contract so
the embedded SQLite store (one host, several worker processes) and Redis (many replicas) behave
the same; one contract test suite (``tests/test_state_store.py``) holds both to it.

Five kinds of value, each in its own namespace (a key used as a set is a different thing from
the same key used as a map), and **everything has an expiry** so the store cleans itself:

=================  ======================================================================
key-value          ``get``, ``put``, ``put_if_absent`` (an atomic claim), ``delete``
counters           ``incr`` — a fixed-window counter: the expiry is set when it is created
sets               ``set_add``, ``set_remove``, ``set_members``, ``set_size``
maps               ``map_put``, ``map_get``, ``map_get_all``, ``map_delete``
sliding windows    ``window_hit`` (atomic check-and-consume over several windows),
                   ``window_add``, ``window_count`` (timestamped events)
=================  ======================================================================

Expiry: ``ttl`` is in seconds from *now* (the store's clock, i.e. real time). A write to a
set or a map sets the whole key's expiry to ``ttl`` from now (the last write wins); a counter
keeps the expiry it was created with. Sliding windows take the event time ``now`` from the
caller (so a test can drive them with a fixed clock) and keep each event for its longest window.

Batches: ``store.batch()`` queues operations and ``execute()`` runs them in **one round trip**
(one Redis pipeline, one SQLite transaction) and returns their results in order. Each
operation is atomic; a batch as a whole is atomic only when asked for (``batch(atomic=True)``),
which costs a MULTI/EXEC on Redis. Example::

    store = open_store("sqlite:///var/lib/ttlpolicy/state.db")
    batch = store.batch()
    batch.window_hit("refresh:user:alice", now, [Window(20, 3600)])
    batch.map_get_all("revoked:subject:alice")
    hit, revoked = batch.execute()
    if not hit.allowed: ...   # hit.retry_after seconds until one more would fit

Failure: any operation that cannot reach the store raises :class:`StoreUnavailable`, never
returns a made-up answer. What to do then (never open anything) is the caller's decision.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


class StoreUnavailable(RuntimeError):
    """The store could not answer (down, timed out, locked, read-only). The message says why."""


class StoreURLError(ValueError):
    """A state store URL that cannot be used; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Window:
    """One rate: at most ``limit`` events in any ``seconds``-long window (``20 per 1h``)."""

    limit: int
    seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.seconds <= 0:
            raise ValueError(f"a window needs limit >= 1 and seconds > 0, got {self.limit} per {self.seconds}s")


@dataclass(frozen=True, slots=True)
class WindowHit:
    """The answer of :meth:`Batch.window_hit`.

    ``allowed``: the event fitted every window and was recorded; otherwise nothing was recorded.
    ``counts``: events in each window *after* this call, in the order the windows were given.
    ``retry_after``: seconds until the event would fit every window (0.0 when allowed).
    ``exceeded``: indexes of the windows that refused it.
    """

    allowed: bool
    counts: tuple[int, ...]
    retry_after: float
    exceeded: tuple[int, ...] = ()


def check_ttl(ttl: float) -> float:
    """Every stored value expires: a TTL must be a positive, finite number of seconds."""
    if not (isinstance(ttl, (int, float)) and 0 < ttl < float("inf")):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


class Batch(abc.ABC):
    """Operations queued for one round trip; :meth:`execute` returns their results in order."""

    # key-value -------------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: str) -> None:
        """Result: the value (str) or None when absent or expired."""

    @abc.abstractmethod
    def put(self, key: str, value: str, ttl: float) -> None:
        """Result: None. Overwrites, and the value expires ``ttl`` seconds from now."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, value: str, ttl: float) -> None:
        """Result: True if stored, False if a live value was already there (an atomic claim)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Result: True if a live value was removed."""

    # counters --------------------------------------------------------------------------------
    @abc.abstractmethod
    def incr(self, key: str, amount: int, ttl: float) -> None:
        """Result: the new count (int). A new counter starts at ``amount`` and expires ``ttl``
        seconds from now; incrementing a live counter does not move its expiry."""

    # sets ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def set_add(self, key: str, members: Iterable[str], ttl: float) -> None:
        """Result: how many members were new. The set expires ``ttl`` seconds from now."""

    @abc.abstractmethod
    def set_remove(self, key: str, members: Iterable[str]) -> None:
        """Result: how many members were removed."""

    @abc.abstractmethod
    def set_members(self, key: str) -> None:
        """Result: a frozenset of the members (empty when absent)."""

    @abc.abstractmethod
    def set_size(self, key: str) -> None:
        """Result: the number of members (int)."""

    # maps ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def map_put(self, key: str, field: str, value: str, ttl: float) -> None:
        """Result: True if the field was new. The map expires ``ttl`` seconds from now."""

    @abc.abstractmethod
    def map_get(self, key: str, field: str) -> None:
        """Result: the field's value or None."""

    @abc.abstractmethod
    def map_get_all(self, key: str) -> None:
        """Result: a dict of every field (empty when absent)."""

    @abc.abstractmethod
    def map_delete(self, key: str, field: str) -> None:
        """Result: True if the field was there."""

    # sliding windows -------------------------------------------------------------------------
    @abc.abstractmethod
    def window_hit(self, key: str, now: float, windows: Sequence[Window], cost: int = 1) -> None:
        """Result: a :class:`WindowHit`. Atomically: drop events older than the longest window,
        count the events in ``(now - seconds, now]`` for each window, and record ``cost`` events
        at ``now`` only if every window then holds at most its limit. An event at ``t`` stops
        counting at exactly ``t + seconds``."""

    @abc.abstractmethod
    def window_add(self, key: str, now: float, keep: float, cost: int = 1) -> None:
        """Result: None. Record ``cost`` events at ``now`` unconditionally; keep events for
        ``keep`` seconds (older ones are dropped)."""

    @abc.abstractmethod
    def window_count(self, key: str, now: float, seconds: float) -> None:
        """Result: the number of events in ``(now - seconds, now]`` (int)."""

    # running ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def execute(self) -> list[Any]:
        """Run the queued operations in one round trip; raises :class:`StoreUnavailable`."""


class StateStore(abc.ABC):
    """A state store. Thread-safe; one instance per process is shared by every request.

    Single operations are shortcuts for a one-operation batch: ``store.get(key)`` is
    ``store.batch().get(key)`` executed. Use :meth:`batch` on the hot path to pay one round trip
    for several operations.
    """

    #: The URL without credentials, for logs, /readyz and metrics labels.
    display_url: str
    #: "sqlite" or "redis".
    backend: str

    @abc.abstractmethod
    def batch(self, atomic: bool = False) -> Batch:
        """A new, empty batch. ``atomic=True``: all of it or none of it is applied (a Redis
        MULTI/EXEC transaction; every SQLite batch is a transaction anyway)."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def _one(self, name: str, *args: Any) -> Any:
        batch = self.batch()
        getattr(batch, name)(*args)
        return batch.execute()[0]

    def get(self, key: str) -> str | None:
        return self._one("get", key)

    def put(self, key: str, value: str, ttl: float) -> None:
        self._one("put", key, value, ttl)

    def put_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return self._one("put_if_absent", key, value, ttl)

    def delete(self, key: str) -> bool:
        return self._one("delete", key)

    def incr(self, key: str, amount: int, ttl: float) -> int:
        return self._one("incr", key, amount, ttl)

    def set_add(self, key: str, members: Iterable[str], ttl: float) -> int:
        return self._one("set_add", key, members, ttl)

    def set_remove(self, key: str, members: Iterable[str]) -> int:
        return self._one("set_remove", key, members)

    def set_members(self, key: str) -> frozenset[str]:
        return self._one("set_members", key)

    def set_size(self, key: str) -> int:
        return self._one("set_size", key)

    def map_put(self, key: str, field: str, value: str, ttl: float) -> bool:
        return self._one("map_put", key, field, value, ttl)

    def map_get(self, key: str, field: str) -> str | None:
        return self._one("map_get", key, field)

    def map_get_all(self, key: str) -> dict[str, str]:
        return self._one("map_get_all", key)

    def map_delete(self, key: str, field: str) -> bool:
        return self._one("map_delete", key, field)

    def window_hit(self, key: str, now: float, windows: Sequence[Window], cost: int = 1) -> WindowHit:
        return self._one("window_hit", key, now, windows, cost)

    def window_add(self, key: str, now: float, keep: float, cost: int = 1) -> None:
        self._one("window_add", key, now, keep, cost)

    def window_count(self, key: str, now: float, seconds: float) -> int:
        return self._one("window_count", key, now, seconds)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_windows(windows: Sequence[Window], cost: int) -> None:
    if not windows:
        raise ValueError("window_hit needs at least one window")
    if cost < 1:
        raise ValueError(f"cost must be >= 1, got {cost}")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
