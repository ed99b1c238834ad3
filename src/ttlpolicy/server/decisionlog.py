"""The decision log: one JSON line per decision, written by a background thread.

The event loop masks and serializes the record (orjson, a few microseconds) and appends the
line to a bounded in-memory queue; a writer thread woken by a timer writes the lines. A full
queue drops the record and counts it, so a slow disk never slows or fails a decision.

No line is lost without a trace: a failed write (a full disk, a removed directory) keeps the
lines for the next attempt, up to ``queue_size``, and counts every line it finally loses; the
log reports itself failing (``health()``, shown by /readyz) until a write succeeds again, and
with ``on_failure: refuse`` the service refuses to decide meanwhile. The file is reopened when
it was renamed or removed (log rotation) and on ``reopen()`` (SIGHUP).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from .config import DecisionLogSettings

log = logging.getLogger("ttlpolicy.server")
_FLUSH_INTERVAL = 0.02  # seconds between two writes: lines reach the sink within ~20 ms
_CHUNK = 4096  # writes of at most PIPE_BUF bytes are atomic, so workers sharing stdout do not interleave lines
_FILE_CHUNK = 1 << 20
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # the tail of a log line's time, by millisecond

# (decision_id, unix time, caller, policy name, policy digest, context, decision dict, latency seconds
#  [, subject token: {iss, sub, jti} of a verified subject_token, or None])
Record = tuple[Any, ...]
# A value that appears both in the context and in the subject-token record is masked by either rule.
_TWINS = (("token.sub", "subject_token.sub"),)


class Masker:
    """Applies ``mask: {"user.id": "hash", "location.ip": "drop"}`` to a context (a copy; the input is untouched).

    Paths under ``subject_token.`` (``sub``, ``iss``, ``jti``) address the subject-token record of
    a log line; ``token.sub`` and ``subject_token.sub`` are the same value, so a rule for either
    masks both.
    """

    def __init__(self, rules: Mapping[str, str], salt: str, length: int):
        rules = dict(rules)
        for one, other in _TWINS:  # else a hashed token.sub would leak through subject_token.sub
            how = rules.get(one) or rules.get(other)
            if how:
                rules.setdefault(one, how)
                rules.setdefault(other, how)
        self._rules = [(path.split("."), how) for path, how in sorted(rules.items())]
        self._salt = salt.encode()
        self._length = length

    def hash(self, value: Any) -> str:
        """HMAC-SHA256 with the salt, truncated: equal values stay joinable, none is reversible."""
        data = value.encode() if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return hmac.new(self._salt, data, hashlib.sha256).hexdigest()[:self._length]

    def apply(self, context: Any) -> Any:
        if not self._rules or not isinstance(context, dict):
            return context
        out = dict(context)
        for path, how in self._rules:
            self._mask(out, path, how)
        return out

    def _mask(self, target: dict[str, Any], path: list[str], how: str) -> None:
        for i, key in enumerate(path[:-1]):
            child = target.get(key)
            if not isinstance(child, dict):
                return
            target[key] = child = dict(child)  # copy-on-write along the path only
            target = child
        leaf = path[-1]
        if leaf not in target:
            return
        if how == "drop":
            del target[leaf]
        else:
            target[leaf] = self.hash(target[leaf])


def sink_problem(settings: DecisionLogSettings) -> str | None:
    """Why the decision-log file cannot be opened for appending (its directory is created if
    missing), or ``None``. ``serve`` checks this before it binds, so that a wrong path is a
    usage error (exit 2), not a failed start."""
    if settings.sink != "file" or settings.path is None:
        return None
    try:
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(settings.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
    except OSError as exc:
        return f"decision_log.path: cannot open {settings.path} for appending: {exc.strerror or exc}"
    return None


class DecisionLog:
    """Writes decision records to stdout or a file from a background thread; ``sink: off`` disables it.

    Why the record is serialized on the event loop and not in the writer thread: a second
    thread running Python code competes for the GIL. Every time the event loop releases the GIL
    (epoll, a socket syscall) a busy writer takes it, and the loop then waits for it, up to the
    5 ms switch interval, which showed up as p99 latencies of hundreds of milliseconds under
    load. ``orjson.dumps`` of one record costs a few microseconds on the loop; the writer thread
    only joins bytes and calls ``os.write`` (which releases the GIL), so it almost never holds the
    GIL when the loop wants it. It is woken by a timer, not per record: waking a thread per
    record (``queue.Queue``) costs a lock, a notify and a GIL hand-over per decision.
    """

    def __init__(self, settings: DecisionLogSettings, on_drop: Callable[[int], object]):
        self.enabled = settings.sink != "off"
        self._settings = settings
        self._on_drop = on_drop
        self._masker = Masker(settings.mask, settings.salt, settings.hash_length)
        self._limit = settings.queue_size
        self._wake_at = max(1, self._limit // 2)  # wake the writer early when the queue is half full
        # Lines waiting for the writer. deque.append / popleft / len are atomic under the GIL, so
        # the loop and the writer share it without a lock.
        self._pending: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._opened: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the fd writes to
        self._reopen = False  # set by reopen() (SIGHUP); the writer reopens before its next write
        # Lines whose write failed, retried on every tick (bounded by queue_size; beyond, lost).
        self._retry: list[bytes] = []
        self.lost = 0  # lines that never reached the sink: queue full, sink failing, shutdown
        self.error: str | None = None  # why the sink is failing now; None while lines are written
        self.failing_since: float | None = None
        self._second = -1  # the whole second whose "YYYY-MM-DDTHH:MM:SS" is cached in _second_text
        self._second_text = ""

    def start(self) -> None:
        """Open the sink and start the writer thread."""
        if not self.enabled or self._thread is not None:
            return
        if self._settings.sink == "file":
            assert self._settings.path is not None  # the settings model guarantees it
            try:  # only at start: a directory removed later is reported, not silently recreated
                self._settings.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # _open_file says why the file cannot be opened
            self._open_file()  # a failure is reported (readiness, metrics) and retried, not raised
        else:
            self._fd = sys.stdout.fileno()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ttlpolicy-decision-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued and stop the writer."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        if self._retry:  # the sink never came back: these lines are lost, and counted
            self._lose(len(self._retry))
            self._retry = []
        if self._settings.sink == "file" and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def reopen(self) -> None:
        """Reopen the file before the next write (SIGHUP, after log rotation). Thread-safe."""
        self._reopen = True
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "failing" | "off", "sink", "lost", "error", "failing_since"}`` for /readyz."""
        if not self.enabled:
            return {"status": "off", "sink": "off", "lost": 0, "error": None, "failing_since": None}
        status = "failing" if self.error is not None else "ok"
        since = None if self.failing_since is None else self._time(self.failing_since)
        return {"status": status, "sink": self._settings.sink, "lost": self.lost, "error": self.error,
                "failing_since": since}

    @property
    def refusing(self) -> bool:
        """True when decisions must be refused: the log is failing and ``on_failure`` is ``refuse``."""
        return self.error is not None and self._settings.on_failure == "refuse"

    def _lose(self, count: int) -> None:
        self.lost += count
        self._on_drop(count)

    def submit(self, record: Record) -> None:
        """Serialize one record and queue the line; never blocks. A full queue drops it (counted)."""
        pending = self._pending
        if len(pending) >= self._limit:
            self._lose(1)
            return
        try:
            line = self.format(record)
        except Exception:  # one odd record must not fail the decision it logs
            log.exception("cannot format a decision-log record")
            return
        pending.append(line)
        if len(pending) == self._wake_at:
            self._wake.set()  # filling up between two timer ticks: write now

    def _time(self, when: float) -> str:
        """RFC 3339 UTC with milliseconds, e.g. ``2025-03-04T10:00:00.123Z`` (the date part cached per second)."""
        micros = int(when * 1_000_000 + 0.5)  # rounded as datetime.fromtimestamp rounds (round() costs more)
        second, micro = divmod(micros, 1_000_000)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return self._second_text + _MILLIS[micro // 1000]

    def format(self, record: Record) -> bytes:
        """One JSON line for ``record`` (masking applied)."""
        decision_id, when, caller, name, digest, context, result, latency = record[:8]
        subject = record[8] if len(record) > 8 else None
        line: dict[str, Any] = {
            "decision_id": decision_id,
            "time": self._time(when),
            "caller": caller,
            "policy": {"name": name, "digest": digest},
            "context": self._masker.apply(context),
            "result": {"allow": result["allow"], "access_ttl": result["access_ttl"],
                       "refresh_ttl": result["refresh_ttl"], "step_up": result["step_up"],
                       "deny_reason": result["deny_reason"]},
            "matched": result["matched"],
            "latency_ms": int(latency * 1_000_000 + 0.5) / 1000,  # whole microseconds; cheaper than round(, 3)
        }
        # What the usage report groups by: the tier decided, why step-up, which rules could not be evaluated.
        if result.get("tier") is not None:
            line["tier"] = result["tier"]
        if result.get("step_up_reasons"):
            line["step_up_reasons"] = result["step_up_reasons"]
        if result.get("errors"):
            line["rule_errors"] = [e["rule"] for e in result["errors"]]
        if subject is not None:  # that a subject token was used, and whose: never the token itself
            line["subject_token"] = self._masker.apply({"subject_token": subject})["subject_token"]
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait(_FLUSH_INTERVAL)
            self._wake.clear()
            stopping = self._stopping  # read before draining: what was queued before stop() is written
            lines, self._retry = self._retry, []
            try:
                while True:
                    lines.append(pending.popleft())
            except IndexError:
                pass
            if self._settings.sink == "file" and not self._current_file():
                self._keep(lines)
            elif lines:
                self._write(lines)
            if stopping:
                return

    # -- the file: reopened after rotation, its loss noticed ----------------------------------------

    def _open_file(self) -> bool:
        path = self._settings.path
        assert path is not None  # the settings model guarantees it
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:  # a removed directory, a read-only mount, no permission
            if not path.parent.is_dir():
                self._failed(f"cannot open {path}: its directory {path.parent} does not exist")
            else:
                self._failed(f"cannot open {path}: {exc.strerror or exc}")
            return False
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        stat = os.fstat(fd)
        self._opened = (stat.st_dev, stat.st_ino)
        return True

    def _current_file(self) -> bool:
        """Make the fd write to the file now at the configured path: reopen it after a rename
        (logrotate's default), a removal or SIGHUP. False when it cannot be opened."""
        if self._reopen or self._fd < 0:
            self._reopen = False
            return self._open_file()
        assert self._settings.path is not None
        try:
            stat = os.stat(self._settings.path)
        except OSError:
            return self._open_file()  # renamed or removed: a new file (or a report why not)
        if (stat.st_dev, stat.st_ino) != self._opened:
            return self._open_file()
        return True

    def _failed(self, error: str) -> None:
        if self.error is None:
            log.error("decision log failing: %s", error)
            self.failing_since = time.time()
        self.error = error

    def _recovered(self) -> None:
        if self.error is not None:
            log.warning("decision log recovered after: %s", self.error)
        self.error = None
        self.failing_since = None

    def _keep(self, lines: list[bytes]) -> None:
        """Hold lines that could not be written for the next attempt; beyond the queue's size
        the oldest are lost (and counted)."""
        excess = len(lines) - self._limit
        if excess > 0:
            self._lose(excess)
            lines = lines[excess:]
        self._retry = lines

    def _write(self, lines: list[bytes]) -> None:
        # Chunks of whole lines: at most PIPE_BUF bytes to stdout (workers sharing it do not
        # interleave lines); to a file, larger ones (fewer syscalls, fewer GIL hand-overs).
        limit = _CHUNK if self._settings.sink == "stdout" else _FILE_CHUNK
        start = size = 0
        for i in range(len(lines) + 1):
            if i == len(lines) or (i > start and size + len(lines[i]) > limit):
                written = self._write_all(b"".join(lines[start:i]))
                if written is not None:
                    self._keep(_unwritten(lines[start:], written))
                    return
                start, size = i, 0
            if i < len(lines):
                size += len(lines[i])
        self._recovered()

    def _write_all(self, data: bytes) -> int | None:
        """Write ``data``: ``None`` when all of it was written, else how many bytes were."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:  # a full disk fails the log, never a decision; the rest is retried
            self._failed(f"write failed: {exc.strerror or exc}")
            return len(data) - len(view)
        return None


def _unwritten(lines: list[bytes], written: int) -> list[bytes]:
    """The lines after the first ``written`` bytes; a torn line keeps only its unwritten tail, so
    the retry completes it instead of writing it twice."""
    for i, line in enumerate(lines):
        if written < len(line):
            return [line[written:]] + lines[i + 1:]
        written -= len(line)
    return []
