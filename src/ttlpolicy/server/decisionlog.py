"""The decision log: one JSON line per decision, written by a background thread.

The event loop masks and serializes the record (orjson, a few microseconds) and appends the
line to a bounded in-memory queue; a writer thread woken by a timer writes the lines. A full
queue drops the record and counts it, so a slow disk never slows or fails a decision.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from .config import DecisionLogSettings

log = logging.getLogger("ttlpolicy.server")
_FLUSH_INTERVAL = 0.02  # seconds between two writes: lines reach the sink within ~20 ms
_CHUNK = 4096  # writes of at most PIPE_BUF bytes are atomic, so workers sharing stdout do not interleave lines

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

    def __init__(self, settings: DecisionLogSettings, on_drop: Callable[[], None]):
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
        self._second = -1  # the whole second whose "YYYY-MM-DDTHH:MM:SS" is cached in _second_text
        self._second_text = ""

    def start(self) -> None:
        """Open the sink and start the writer thread."""
        if not self.enabled or self._thread is not None:
            return
        if self._settings.sink == "file":
            assert self._settings.path is not None  # the settings model guarantees it
            self._settings.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._settings.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
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
        if self._settings.sink == "file" and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def submit(self, record: Record) -> None:
        """Serialize one record and queue the line; never blocks. A full queue drops it (counted)."""
        pending = self._pending
        if len(pending) >= self._limit:
            self._on_drop()
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
        micros = round(when * 1_000_000)  # as datetime.fromtimestamp rounds
        second, micro = divmod(micros, 1_000_000)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{micro // 1000:03d}Z"

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
            "latency_ms": round(latency * 1000, 3),
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
            lines: list[bytes] = []
            try:
                while True:
                    lines.append(pending.popleft())
            except IndexError:
                pass
            if lines:
                self._write(lines)
            if stopping:
                return

    def _write(self, lines: list[bytes]) -> None:
        if self._settings.sink == "file":  # one append per batch: fewer syscalls, fewer GIL hand-overs
            self._write_all(b"".join(lines))
            return
        chunk: list[bytes] = []
        size = 0
        for line in lines:  # whole lines, at most PIPE_BUF per write where possible
            if chunk and size + len(line) > _CHUNK:
                self._write_all(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write_all(b"".join(chunk))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:  # a full disk loses log lines, never decisions
            log.error("decision log write failed: %s", exc)
