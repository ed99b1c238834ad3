"""Hot reload: the current policy set, swapped atomically, and what triggers and checks it.

Requests read :attr:`PolicyHolder.current` once and use that one object to the end, so
every decision is made by one whole set. A set that fails to load never replaces a good one
(promise 5): the holder keeps serving the last good set and remembers the error.

Only whole sets go live (promise 9). A reload from a directory first waits for a *quiet
period*: the files are read, read again ``quiet`` seconds later, and only a set whose content
digest did not change in between is compiled — from exactly the bytes that were compared, so
a file still being copied is never half-loaded even if no file event arrives in time. A set
with a manifest (or any set, when signing keys are configured) must also match it exactly:
see :mod:`ttlpolicy.bundle`.

Three things trigger or check a reload: the file watcher (which survives its directory being
deleted and recreated, and reports its health), SIGHUP, and a periodic comparison of the
digest on disk with the digest being served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import anyio.to_thread

from .. import PolicyError, PolicySet
from ..bundle import LoadedSet, file_set_digest, load_file_set, read_file_set
from ..errors import Location, Problem
from ..tokens.keys import VerifyKey

log = logging.getLogger("ttlpolicy.server")


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A policy set, when it was loaded (wall clock for people, unix for ages) and where it came from."""

    policies: PolicySet
    loaded_at: str
    loaded_unix: float
    revision: str | None = None  # the bundle's or manifest's revision, if the set has one
    files_digest: str | None = None  # of the exact bytes compiled; None for a set handed in as an object
    # What every decision reports under "policy_set"; built once, never mutated.
    reference: dict[str, str] = field(default_factory=dict)


def _loaded(policies: PolicySet, revision: str | None = None, files_digest: str | None = None) -> Loaded:
    now = time.time()
    reference = {"digest": policies.digest}
    if revision is not None:
        reference["revision"] = revision
    return Loaded(policies, _utc(now), now, revision, files_digest, reference)


class Source(Protocol):
    """Where policy sets come from: a directory (below) or a bundle (:mod:`.remote`)."""

    description: str

    def health(self) -> dict[str, Any]:
        """What /readyz shows about the source."""

    def load_now(self) -> LoadedSet:
        """The set as it is now, synchronously (start-up); raises :class:`PolicyError`."""

    async def load(self, current: Loaded) -> LoadedSet | None:
        """A new candidate set, or ``None`` when the source says nothing changed."""


class DirectorySource:
    """A policy directory on disk, taken only once its content has stopped changing."""

    def __init__(self, path: Path, keys: Sequence[VerifyKey] = (), quiet: float = 1.0, settle_timeout: float = 30.0):
        self.path = path
        self.keys = tuple(keys)
        self.quiet = quiet
        self.settle_timeout = settle_timeout
        self.description = str(path)
        self._label = str(Path(path))

    def health(self) -> dict[str, Any]:
        return {"type": "directory", "path": self.description, "signed": bool(self.keys)}

    def load_now(self) -> LoadedSet:
        return load_file_set(read_file_set(self.path), self._label, self.keys)

    async def load(self, current: Loaded) -> LoadedSet | None:
        files = await self.settled_files()
        return await anyio.to_thread.run_sync(load_file_set, files, self._label, self.keys)

    async def settled_files(self) -> dict[str, bytes]:
        """The directory's files once two reads ``quiet`` seconds apart have the same content digest."""
        deadline = time.monotonic() + self.settle_timeout
        files = await anyio.to_thread.run_sync(read_file_set, self.path)
        while self.quiet > 0:
            await asyncio.sleep(self.quiet)
            again = await anyio.to_thread.run_sync(read_file_set, self.path)
            if file_set_digest(again) == file_set_digest(files):
                break
            if time.monotonic() > deadline:
                raise PolicyError([Problem("set-changing", f"the files kept changing for {self.settle_timeout:g} s; "
                                           "no quiet period to take a whole set in", Location(self._label))])
            files = again
        return files

    def disk_digest(self) -> str:
        return file_set_digest(read_file_set(self.path))


@dataclass
class WatchHealth:
    """What the watcher (or a bundle poller) is doing, for /readyz and /metrics."""

    status: str = "off"  # off, starting, watching, waiting (for its path), failed, polling
    restarts: int = 0
    error: str | None = None
    since: float = field(default_factory=time.time)
    listener: Callable[[], None] | None = None  # told about every change (metrics)

    def set(self, status: str, error: str | None = None) -> None:
        if status != self.status or error != self.error:
            self.status, self.error, self.since = status, error, time.time()
            if self.listener is not None:
                self.listener()

    def restarted(self) -> None:
        self.restarts += 1
        if self.listener is not None:
            self.listener()

    @property
    def healthy(self) -> bool:
        return self.status in ("off", "watching", "polling")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "restarts": self.restarts, "error": self.error, "since": _utc(self.since)}


@dataclass
class DiskCheck:
    """The last comparison of the files on disk with the set being served."""

    in_sync: bool | None = None  # None: not checked (yet, or not a directory source)
    digest: str | None = None
    checked_at: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"in_sync": self.in_sync, "digest": self.digest, "error": self.error,
                "checked_at": None if self.checked_at is None else _utc(self.checked_at)}


class PolicyHolder:
    """Holds the serving set; :meth:`reload` takes a new one from the source off the event loop."""

    def __init__(self, source: Source | Path, policies: PolicySet | None = None,
                 on_reload: Callable[[str, Loaded], None] | None = None):
        self.source: Source = DirectorySource(source) if isinstance(source, Path) else source
        if policies is not None:
            self.current = _loaded(policies)
        else:
            first = self.source.load_now()
            self.current = _loaded(first.policies, first.revision, first.files_digest)
        self.error: PolicyError | None = None
        self.last_success = self.current.loaded_unix  # also refreshed by a reload that changes nothing
        self.watcher = WatchHealth()
        self.disk = DiskCheck()
        self.on_health: Callable[[PolicyHolder], None] | None = None  # metrics follow watcher and disk here
        self.watcher.listener = self._health_changed
        self._failed_files: str | None = None  # files digest of the last refused directory set
        self._on_reload = on_reload
        self._lock: asyncio.Lock | None = None

    @property
    def path(self) -> Path | None:
        return self.source.path if isinstance(self.source, DirectorySource) else None

    async def reload(self, reason: str) -> Loaded:
        """Load from the source again; swap on success, raise :class:`PolicyError` (and keep the old set) otherwise."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one load at a time; a second trigger waits and reloads again
            try:
                candidate = await self.source.load(self.current)
            except PolicyError as exc:
                self.error = exc
                log.error("policy reload (%s) failed; still serving %s:\n%s", reason,
                          self.current.policies.digest, exc.render())
                self._notify("failure", self.current)
                raise
            self.error = None
            self.last_success = time.time()
            if candidate is None or (candidate.policies.digest == self.current.policies.digest
                                     and candidate.revision == self.current.revision):
                if candidate is not None and candidate.files_digest != self.current.files_digest:
                    # Same set, different bytes (a comment, formatting): remember what disk now holds.
                    self.current = _loaded(self.current.policies, self.current.revision, candidate.files_digest)
                self._notify("unchanged", self.current)
                return self.current
            loaded = _loaded(candidate.policies, candidate.revision, candidate.files_digest)
            self.current = loaded  # the atomic swap: one reference assignment
            log.info("policy set reloaded (%s): %s%s", reason, candidate.policies.digest,
                     f" revision {candidate.revision}" if candidate.revision else "")
            self._notify("success", loaded)
            return loaded

    def _health_changed(self) -> None:
        if self.on_health is not None:
            self.on_health(self)

    def delivery(self) -> dict[str, Any]:
        """Where the set comes from and how delivery is doing, for /readyz."""
        return {"revision": self.current.revision, "source": self.source.health(),
                "watcher": self.watcher.to_dict(), "disk": self.disk.to_dict()}

    def _notify(self, result: str, loaded: Loaded) -> None:
        if self._on_reload is not None:
            self._on_reload(result, loaded)
        self._health_changed()

    async def try_reload(self, reason: str) -> None:
        """:meth:`reload` for background triggers: the failure is already logged and recorded."""
        try:
            await self.reload(reason)
        except PolicyError:
            pass

    def problems(self) -> list[str]:
        """Why this replica is not fully healthy (empty: ready). It still serves the last good set."""
        out = []
        if self.error is not None:
            out.append("the last reload failed; serving the last good set")
        if not self.watcher.healthy:
            out.append(f"policy watcher {self.watcher.status}: {self.watcher.error or 'not watching'}")
        if self.disk.in_sync is False:
            out.append("the policy files on disk differ from the set being served")
        return out

    async def check_disk(self) -> None:
        """Compare the digest on disk with the served one; reload when they differ.

        A directory whose current content was already refused is not reloaded again until it
        changes (the refusal stays visible in /readyz).
        """
        source = self.source
        if not isinstance(source, DirectorySource):
            return
        try:
            digest = await anyio.to_thread.run_sync(source.disk_digest)
        except PolicyError as exc:
            self.disk = DiskCheck(False, None, time.time(), exc.problems[0].message if exc.problems else str(exc))
            self._health_changed()
            return
        served = self.current.files_digest
        if served is not None and digest != served and digest != self._failed_files:
            log.warning("policy files on disk (%s) differ from the served set (%s); reloading", digest, served)
            try:
                await self.reload("disk differs from the served set")
            except PolicyError:
                self._failed_files = digest
            served = self.current.files_digest
        self.disk = DiskCheck(None if served is None else digest == served, digest, time.time())
        self._health_changed()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; ``True`` when ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def watch(holder: PolicyHolder, paths: list[Path], debounce_ms: int, stop: asyncio.Event) -> None:
    """Reload whenever files under ``paths`` change, until ``stop`` is set.

    inotify watches an inode, not a name: when a deployment tool deletes the directory and
    creates a new one, the old watch goes silent. So an event for a watched root itself, or a
    different inode under its name (checked every second and after every batch of events),
    restarts the watch (waiting for the path to come back), followed by a reload, because
    changes made while nobody watched would otherwise be missed.
    """
    from watchfiles import awatch  # imported here: tests and --no-watch runs do not pay for it

    health = holder.watcher
    health.set("starting")
    first = True
    while not stop.is_set():
        identities = {path: _identity(path) for path in paths}
        existing = [str(p) for p, ident in identities.items() if ident is not None]
        if len(existing) < len(paths):
            health.set("waiting", f"{', '.join(str(p) for p, i in identities.items() if i is None)} missing")
            if await _sleep_unless(stop, 0.2):
                break
            continue
        if not first:
            health.restarted()
            log.warning("policy watcher restarted on %s (the path was replaced or the watch failed)",
                        ", ".join(existing))
            await holder.try_reload("watched path replaced")
        first = False
        health.set("watching")
        roots = set(existing)
        try:
            async for changes in awatch(*existing, debounce=debounce_ms, step=min(50, debounce_ms), stop_event=stop,
                                        recursive=True, rust_timeout=1000, yield_on_timeout=True):
                if changes:
                    await holder.try_reload("files changed")
                # The root itself deleted (its inode may well be reused by the new directory at
                # once), or a different inode under its name: the watch is dead; start again.
                if any(path in roots for _, path in changes) or any(
                        _identity(path) != ident for path, ident in identities.items()):
                    break
        except Exception as exc:  # a failing watcher must not take the service down; it is retried
            log.exception("policy file watcher failed; retrying")
            health.set("failed", f"{type(exc).__name__}: {exc}")
            if await _sleep_unless(stop, 1.0):
                break
    health.set("off")


async def verify_disk(holder: PolicyHolder, interval: float, stop: asyncio.Event) -> None:
    """Every ``interval`` seconds, :meth:`PolicyHolder.check_disk` (a backstop for missed events)."""
    while not await _sleep_unless(stop, interval):
        try:
            await holder.check_disk()
        except Exception:  # never let the check take the service down
            log.exception("comparing the policy files on disk with the served set failed")


def install_sighup(holder: PolicyHolder, tasks: set[asyncio.Task[None]],
                   also: Callable[[], None] | None = None) -> Callable[[], None]:
    """Reload on SIGHUP (and call ``also``: the decision log reopens its file) where the loop
    supports signal handlers; returns the undo function."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        if also is not None:
            also()
        task = loop.create_task(holder.try_reload("SIGHUP"))
        tasks.add(task)  # keep a reference until done so the task is not garbage-collected
        task.add_done_callback(tasks.discard)

    def nothing_to_undo() -> None:
        pass

    sighup = getattr(signal, "SIGHUP", None)  # Windows has no SIGHUP
    if sighup is None:
        log.info("no SIGHUP on this platform; policies reload on file changes and POST /v1/reload")
        return nothing_to_undo
    try:
        loop.add_signal_handler(sighup, on_hup)
    except NotImplementedError:  # an event loop without signal support
        log.info("this event loop cannot handle SIGHUP; policies reload on file changes and POST /v1/reload")
        return nothing_to_undo
    except (ValueError, RuntimeError):  # signals are only for the main thread (e.g. not under a test client)
        log.debug("not the main thread: no SIGHUP handler")
        return nothing_to_undo

    def undo() -> None:
        loop.remove_signal_handler(sighup)

    return undo
