"""Which backend a state URL names: SQLite on one host, Redis (or Valkey) for many replicas.

Apart from :mod:`.store`, so that the contract never imports its implementations; the backends
are imported only when a URL names them (``ttlpolicy lint`` never pays for the Redis client).
"""

from __future__ import annotations

from .store import StateStore, StoreURLError, redact_url


def open_store(url: str) -> StateStore:
    """Open the store a URL names.

    ``sqlite:///var/lib/ttlpolicy/state.db`` (an absolute path), ``sqlite:state.db`` (relative to
    the working directory), ``redis://[:password@]host:6379/0``, ``rediss://…`` (TLS) and
    ``unix:///run/redis.sock``. Redis URLs accept ``?prefix=ttlpolicy:`` (the key prefix, so
    several deployments can share one Redis) and ``?timeout=0.25`` (seconds per operation before
    the store counts as unavailable). Raises :class:`StoreURLError` for anything else.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        from .redis import RedisStore

        return RedisStore.from_url(url)
    raise StoreURLError(f"unsupported state store URL {redact_url(url)!r}: use sqlite:///path/state.db "
                        "or redis://host:6379/0")
