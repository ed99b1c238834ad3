"""The decision log: one JSON line per decision, written by a background thread.

The event loop only puts a tuple on a bounded queue (``put_nowait``); masking, serializing
and writing happen in the writer thread. A full queue drops the record and counts it, so a
slow disk never slows or fails a decision.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from .config import DecisionLogSettings

log = logging.getLogger("ttlpolicy.server")
_STOP = object()
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
    """Writes decision records to stdout or a file from a background thread; ``sink: off`` disables it."""

    def __init__(self, settings: DecisionLogSettings, on_drop: Callable[[], None]):
        self.enabled = settings.sink != "off"
        self._settings = settings
        self._on_drop = on_drop
        self._masker = Masker(settings.mask, settings.salt, settings.hash_length)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
        self._thread: threading.Thread | None = None
        self._fd = -1

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
        self._thread = threading.Thread(target=self._run, name="ttlpolicy-decision-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued and stop the writer."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None
        if self._settings.sink == "file" and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def submit(self, record: Record) -> None:
        """Queue one record; never blocks. A full queue drops it (counted)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._on_drop()

    def format(self, record: Record) -> bytes:
        """One JSON line for ``record`` (masking applied)."""
        decision_id, when, caller, name, digest, context, result, latency = record[:8]
        subject = record[8] if len(record) > 8 else None
        line: dict[str, Any] = {
            "decision_id": decision_id,
            "time": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "caller": caller,
            "policy": {"name": name, "digest": digest},
            "context": self._masker.apply(context),
            "result": {"allow": result["allow"], "access_ttl": result["access_ttl"],
                       "refresh_ttl": result["refresh_ttl"], "step_up": result["step_up"],
                       "deny_reason": result["deny_reason"]},
            "matched": result["matched"],
            "latency_ms": round(latency * 1000, 3),
        }
        if subject is not None:  # that a subject token was used, and whose: never the token itself
            line["subject_token"] = self._masker.apply({"subject_token": subject})["subject_token"]
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _run(self) -> None:
        pending: list[bytes] = []
        while True:
            item = self._queue.get()
            stop = item is _STOP
            if not stop:
                try:
                    pending.append(self.format(item))
                except Exception:  # one odd record must not kill the writer
                    log.exception("cannot format a decision-log record")
            if stop or self._queue.empty() or len(pending) >= 256:
                self._write(pending)
                pending = []
            if stop:
                return

    def _write(self, lines: list[bytes]) -> None:
        chunk = b""
        for line in lines:
            if chunk and len(chunk) + len(line) > _CHUNK:
                self._write_all(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write_all(chunk)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:  # a full disk loses log lines, never decisions
            log.error("decision log write failed: %s", exc)
