"""Bundles as the service's policy source: a file or an HTTP(S) URL, polled with ETags and backoff.

Every fetched bundle goes through :func:`ttlpolicy.bundle.open_bundle` (safe unpacking,
signature against the configured keys, manifest, the bundle's own tests) before it can serve.
Whatever fails — the server is down, answers garbage or a truncated file, or offers a bundle
older than the one being served — the last good bundle keeps serving. The last good bundle's
bytes are also kept on disk, so a restart while the server is unreachable still serves it
(verified again, with the same keys, before use).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from .. import PolicyError, __version__
from ..bundle import LoadedSet, open_bundle
from ..errors import Location, Problem
from .config import BundleSettings
from .reload import Loaded, PolicyHolder

log = logging.getLogger("ttlpolicy.server")


def _fetch_failed(message: str, where: str) -> PolicyError:
    return PolicyError([Problem("bundle-fetch-failed", message, Location(where))])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ttlpolicy" / "bundles"


@dataclass
class FetchStatus:
    """The last attempt to get a bundle, for /readyz."""

    result: str = "none"  # none, loaded, not-modified, unchanged, failed, cached
    at: float | None = None
    error: str | None = None
    failures: int = 0  # consecutive

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "error": self.error, "consecutive_failures": self.failures,
                "at": None if self.at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))}


class BundleSource:
    """A bundle at a URL or path (see :class:`~.config.BundleSettings`)."""

    def __init__(self, settings: BundleSettings):
        assert settings.source is not None
        self.settings = settings
        self.location = settings.source
        self.description = settings.source
        self.remote = settings.source.startswith(("http://", "https://"))
        cache_dir = settings.cache_dir or default_cache_dir()
        key = hashlib.sha256(settings.source.encode()).hexdigest()[:16]
        self.cache_file = cache_dir / f"{key}.tar.gz"
        self.status = FetchStatus()
        self._etag: str | None = None
        self._next_etag: str | None = None  # the ETag of the response being processed
        self._served_bytes: str | None = None  # sha256 of the bundle bytes being served
        self._served_created: str | None = None

    def health(self) -> dict[str, Any]:
        return {"type": "bundle", "location": self.location, "signed": bool(self.settings.keys),
                "cache": str(self.cache_file), "last_fetch": self.status.to_dict()}

    # -- getting bytes -------------------------------------------------------------------------

    def _fetch(self, conditional: bool) -> bytes | None:
        """The bundle's bytes, or ``None`` for 304 Not Modified; raises :class:`PolicyError`."""
        limit = self.settings.max_bytes
        if not self.remote:
            path = self.location.removeprefix("file://")
            try:
                with open(path, "rb") as stream:
                    data = stream.read(limit + 1)
            except OSError as exc:
                raise _fetch_failed(f"cannot read the bundle: {exc.strerror or exc}", path) from None
        else:
            request = urllib.request.Request(self.location, headers={"User-Agent": f"ttlpolicy/{__version__}"})
            if conditional and self._etag:
                request.add_header("If-None-Match", self._etag)
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                    data = response.read(limit + 1)
                    declared = response.headers.get("Content-Length")
                    etag = response.headers.get("ETag")
            except urllib.error.HTTPError as exc:
                if exc.code == 304:
                    return None
                raise _fetch_failed(f"HTTP {exc.code} {exc.reason}", self.location) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise _fetch_failed(f"cannot fetch the bundle: {reason}", self.location) from None
            except Exception as exc:  # http.client's IncompleteRead and friends: a dying server
                raise _fetch_failed(f"cannot fetch the bundle: {type(exc).__name__}", self.location) from None
            if declared is not None and declared.isdigit() and int(declared) != len(data) and len(data) <= limit:
                raise _fetch_failed(f"truncated: {len(data):,} of {int(declared):,} bytes", self.location)
            self._next_etag = etag
        if len(data) > limit:
            raise _fetch_failed(f"the bundle is over {limit:,} bytes (bundle.max_bytes)", self.location)
        return data

    def _open(self, data: bytes) -> LoadedSet:
        return open_bundle(data, self.location, self.settings.keys)

    def _persist(self, data: bytes) -> None:
        """Keep the last good bundle for restarts (atomically: a crash leaves the old one)."""
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.replace(temporary, self.cache_file)
        except OSError as exc:
            log.warning("cannot keep the last good bundle in %s: %s", self.cache_file, exc.strerror or exc)

    def _accept(self, data: bytes, loaded: LoadedSet) -> None:
        self._served_bytes = hashlib.sha256(data).hexdigest()
        created = loaded.manifest.data.get("created_at") if loaded.manifest else None
        self._served_created = created if isinstance(created, str) else None
        self._persist(data)

    # -- the Source protocol --------------------------------------------------------------------

    def load_now(self) -> LoadedSet:
        """At start: the bundle from its source, else the kept last good one; raises :class:`PolicyError`."""
        self._next_etag = None
        try:
            data = self._fetch(conditional=False)
            assert data is not None
            loaded = self._open(data)
        except PolicyError as exc:
            if not self.cache_file.is_file():
                raise
            log.warning("bundle %s unusable (%s); serving the last good bundle kept in %s",
                        self.location, exc.problems[0].message if exc.problems else exc, self.cache_file)
            data = self.cache_file.read_bytes()
            loaded = self._open(data)  # verified again: the cache is no more trusted than the server
            self._record("cached", str(exc.problems[0].message if exc.problems else exc))
            self._accept(data, loaded)
            return loaded
        self._etag = self._next_etag
        self._record("loaded")
        self._accept(data, loaded)
        return loaded

    async def load(self, current: Loaded) -> LoadedSet | None:
        self._next_etag = None
        try:
            data = await anyio.to_thread.run_sync(self._fetch, True)
            if data is None:
                self._record("not-modified")
                return None
            if hashlib.sha256(data).hexdigest() == self._served_bytes:
                self._etag = self._next_etag
                self._record("unchanged")
                return None
            loaded = await anyio.to_thread.run_sync(self._open, data)
            self._refuse_rollback(loaded)
        except PolicyError as exc:
            self._record("failed", exc.problems[0].message if exc.problems else str(exc))
            raise
        self._etag = self._next_etag
        self._record("loaded")
        await anyio.to_thread.run_sync(self._accept, data, loaded)
        return loaded

    def _refuse_rollback(self, loaded: LoadedSet) -> None:
        """An older bundle than the one serving (by build time) is a replay or a stale mirror: refuse it."""
        created = loaded.manifest.data.get("created_at") if loaded.manifest else None
        if self._served_created and isinstance(created, str) and created < self._served_created:
            raise PolicyError([Problem("bundle-rollback", f"revision {loaded.revision} was built at {created}, "
                                       f"before the bundle being served ({self._served_created})",
                                       Location(self.location))])

    def _record(self, result: str, error: str | None = None) -> None:
        failed = result == "failed"
        self.status = FetchStatus(result, time.time(), error, self.status.failures + 1 if failed else 0)

    def next_delay(self) -> float:
        """The poll interval, doubled per consecutive failure up to ``max_backoff_s``, with ±20% jitter."""
        base = self.settings.poll_interval_s
        if self.status.failures:
            base = min(self.settings.max_backoff_s, base * 2 ** min(self.status.failures, 30))
        return base * random.uniform(0.8, 1.2)


async def poll(holder: PolicyHolder, source: BundleSource, stop: asyncio.Event) -> None:
    """Fetch the bundle again every poll interval (backing off on failure) until ``stop`` is set."""
    holder.watcher.set("polling")
    while True:
        try:
            await asyncio.wait_for(stop.wait(), source.next_delay())
            break
        except asyncio.TimeoutError:
            pass
        try:
            await holder.try_reload("bundle poll")
        except Exception:  # never let polling die: the next poll tries again
            log.exception("bundle poll failed")
    holder.watcher.set("off")
