"""Policy sets in versions, and a client that keeps deciding, for the delivery and chaos tests.

Every version of the small ``app`` policy gives contractors a different access lifetime, and
its first half (cut at a rule boundary, valid YAML) gives them a longer one: a response with
that lifetime, or with a digest outside the complete versions, means a half-written set went live.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ttlpolicy import load_sources

HEAD = """apiVersion: ttlpolicy/v1
name: app
defaults: {access_ttl: 30m, refresh_ttl: 1d}
rules:
  - name: unmanaged-is-short
    when: device.trust == "unmanaged"
    access_ttl: {cap: 15m}
"""
TAIL = """  - name: contractors-are-short
    when: '"contractors" in user.groups'
    access_ttl: {{cap: {minutes}m}}
"""
CONTRACTOR = {"user": {"groups": ["contractors"]}}
TESTS = """policy: app
cases:
  - name: contractors get short tokens
    context: {{user: {{groups: [contractors]}}}}
    expect: {{access_ttl: {minutes}m}}
"""


def version(minutes: int) -> str:
    """A complete policy file: contractors get ``minutes`` minutes."""
    return HEAD + TAIL.format(minutes=minutes)


def digest(text: str) -> str:
    return load_sources({"app.yaml": text}).digest


HALF_DIGEST = digest(HEAD)


def write_set(directory: Path, minutes: int, tests: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.yaml").write_text(version(minutes))
    if tests:
        (directory / "tests").mkdir(exist_ok=True)
        (directory / "tests" / "app.yaml").write_text(TESTS.format(minutes=minutes))


@dataclass
class Load:
    """Threads deciding continuously against ``url``; every outcome is kept for the assertions."""

    url: str
    threads: int = 3
    results: list[tuple[int, str | None, int | None, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    readiness: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._decide) for _ in range(self.threads)]
        self._workers.append(threading.Thread(target=self._probe))
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    def _decide(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                try:
                    response = http.post("/v1/decide", json={"context": CONTRACTOR})
                    body = response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                reference = body.get("policy_set", {})
                with self._lock:
                    self.results.append((response.status_code, reference.get("digest"), body.get("access_ttl"),
                                         reference.get("revision")))

    def _probe(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                try:
                    self.readiness.append(http.get("/readyz").json())
                except (httpx.HTTPError, ValueError) as exc:
                    with self._lock:
                        self.failures.append(f"/readyz {type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_for_more(self, n: int = 20, timeout: float = 10) -> None:
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load stalled at {self.count()} decisions")
            time.sleep(0.02)

    def assert_whole(self, complete: dict[str, int]) -> None:
        """Zero failed requests; every response from one complete version (digest and lifetime agree)."""
        assert not self.failures, self.failures[:5]
        assert self.results, "no decisions were made"
        statuses = {status for status, _, _, _ in self.results}
        assert statuses == {200}, statuses
        seen = {(d, ttl) for _, d, ttl, _ in self.results}
        assert seen <= set(complete.items()), seen - set(complete.items())
