"""Hot reload: the current policy set, swapped atomically; a file watcher and SIGHUP trigger it.

Requests read :attr:`PolicyHolder.current` once and use that one object to the end, so
every decision is made by one whole set. A set that fails to load never replaces a good one
(promise 5): the holder keeps serving the last good set and remembers the error.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import anyio.to_thread

from .. import PolicyError, PolicySet, load_policies

log = logging.getLogger("ttlpolicy.server")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A policy set and when it was loaded (wall clock for people, monotonic for ages)."""

    policies: PolicySet
    loaded_at: str
    loaded_unix: float


def _loaded(policies: PolicySet) -> Loaded:
    now = datetime.now(timezone.utc)
    return Loaded(policies, now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), now.timestamp())


class PolicyHolder:
    """Holds the serving set; :meth:`reload` compiles a new one off the event loop."""

    def __init__(self, path: Path, policies: PolicySet | None = None,
                 on_reload: Callable[[str, Loaded], None] | None = None):
        self.path = path
        self.current: Loaded = _loaded(policies if policies is not None else load_policies(path))
        self.error: PolicyError | None = None
        self.last_success = self.current.loaded_unix  # also refreshed by a reload that changes nothing
        self._on_reload = on_reload
        self._lock: asyncio.Lock | None = None

    async def reload(self, reason: str) -> Loaded:
        """Load the directory again; swap on success, raise :class:`PolicyError` (and keep the old set) otherwise."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one compile at a time; a second trigger waits and reloads again
            try:
                policies = await anyio.to_thread.run_sync(load_policies, self.path)
            except PolicyError as exc:
                self.error = exc
                log.error("policy reload (%s) failed; still serving %s:\n%s", reason,
                          self.current.policies.digest, exc.render())
                self._notify("failure", self.current)
                raise
            self.error = None
            self.last_success = time.time()
            if policies.digest == self.current.policies.digest:
                self._notify("unchanged", self.current)
                return self.current
            loaded = _loaded(policies)
            self.current = loaded  # the atomic swap: one reference assignment
            log.info("policy set reloaded (%s): %s", reason, policies.digest)
            self._notify("success", loaded)
            return loaded

    def _notify(self, result: str, loaded: Loaded) -> None:
        if self._on_reload is not None:
            self._on_reload(result, loaded)

    async def try_reload(self, reason: str) -> None:
        """:meth:`reload` for background triggers: the failure is already logged and recorded."""
        try:
            await self.reload(reason)
        except PolicyError:
            pass


async def watch(holder: PolicyHolder, paths: list[Path], debounce_ms: int, stop: asyncio.Event) -> None:
    """Reload whenever files under ``paths`` change (debounced), until ``stop`` is set."""
    from watchfiles import awatch  # imported here: tests and --no-watch runs do not pay for it

    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        log.warning("not watching %s: no such path", ", ".join(map(str, paths)))
        return
    try:
        async for _changes in awatch(*existing, debounce=debounce_ms, step=min(50, debounce_ms),
                                     stop_event=stop, recursive=True):
            await holder.try_reload("files changed")
    except Exception:  # a dying watcher must not take the service down; SIGHUP and /v1/reload still work
        log.exception("policy file watcher stopped")


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
