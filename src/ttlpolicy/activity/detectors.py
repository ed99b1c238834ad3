"""Anomaly detectors: declared in the service config, fed by events, firing with their evidence.

Two kinds, each counted per key (the event's ``subject``, ``client``, ``tenant`` or ``country``):

* **threshold** — at least ``count`` matching events within a sliding window (``within``), exact
  on every backend and across replicas (a store sliding window);
* **spike** — the count in the current ``interval`` is far above this key's own baseline: an
  exponentially weighted moving mean and variance of past intervals (weight ``alpha``), firing
  when ``count >= min_count`` and ``count > mean + factor * max(deviation, 1)`` after ``warmup``
  intervals. A steady load or a slow ramp moves the baseline along and does not fire; a burst does.

A detector fires at most once per key per ``cooldown`` (an atomic claim in the store, so two
replicas never both fire), and its configured responses are applied by
:mod:`ttlpolicy.activity.responses`.

.. code-block:: yaml

    activity:
      detectors:
        - name: refresh-burst
          events: [token.refreshed]
          per: subject
          threshold: {count: 20, within: 10m}
          respond: [disable_refresh]
          for: 1h
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Sequence

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ..durations import parse_duration
from ..state import Batch, StateStore
from .events import EVENT_TYPES, Event

Seconds = Annotated[int, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, (str, int)) else v)]
RESPONSES = ("disable_refresh", "step_up", "revoke_family", "revoke_subject", "emergency")
Per = Literal["subject", "client", "tenant", "country"]
_STATE_TTL = 30 * 86_400.0  # a key's baseline is forgotten after a month without events
_MAX_GAP = 200  # intervals folded in one go; after that many empty intervals the baseline is ~0 anyway


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Model):
    count: int = Field(ge=1, le=1_000_000)
    within: Seconds = Field(ge=1, le=7 * 86_400)


class Spike(_Model):
    interval: Seconds = Field(300, ge=10, le=86_400)
    alpha: float = Field(0.3, gt=0, le=1, description="weight of the newest interval in the baseline")
    factor: float = Field(4.0, gt=0, le=100, description="deviations above the mean that count as a spike")
    min_count: int = Field(10, ge=1, description="never fire below this many events in an interval")
    warmup: int = Field(6, ge=1, le=1000, description="intervals seen before the baseline is trusted")


class EmergencyCeiling(_Model):
    """The ceilings of an ``emergency`` response (an emergency scoped to the one subject or client)."""

    access_ttl: Seconds = Field(300, ge=0)
    refresh_ttl: Seconds = Field(0, ge=0)


class Detector(_Model):
    """One declared detector; exactly one of ``threshold`` and ``spike``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    events: tuple[str, ...] = Field(min_length=1)
    per: Per = "subject"
    threshold: Threshold | None = None
    spike: Spike | None = None
    respond: tuple[Literal["disable_refresh", "step_up", "revoke_family", "revoke_subject", "emergency"], ...] = ()
    for_: Seconds = Field(3600, alias="for", ge=60, le=30 * 86_400, description="how long a response lasts")
    cooldown: Seconds = Field(900, ge=1, le=7 * 86_400, description="fire at most once per key this often")
    emergency: EmergencyCeiling = EmergencyCeiling()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> Detector:
        unknown = [e for e in self.events if e not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
        if (self.threshold is None) == (self.spike is None):
            raise ValueError("give exactly one of threshold or spike")
        if self.per not in ("subject", "client") and self.respond:
            raise ValueError(f"responses act on a subject or a client; a detector per {self.per} can only alert")
        if "revoke_family" in self.respond and self.per != "subject":
            raise ValueError("revoke_family needs per: subject (the families are the sessions its events name)")
        return self

    def key_of(self, event: Event) -> str | None:
        value = getattr(event, self.per)
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Firing:
    """A detector that fired for one key, with the evidence that made it fire."""

    detector: Detector
    key: str
    at: float
    evidence: dict[str, Any]
    events: tuple[Event, ...] = field(default=(), repr=False)

    @property
    def sessions(self) -> list[str]:
        """The sessions (refresh families) named by the events that made it fire."""
        return sorted({e.session for e in self.events if e.session is not None})

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.name, "per": self.detector.per, "key": self.key, "at": self.at,
                "evidence": self.evidence, "respond": list(self.detector.respond)}


@dataclass(slots=True)
class Baseline:
    """The EWMA state of one key: the interval being counted, its count, and the baseline of the past."""

    interval: int
    count: int = 0
    mean: float = 0.0
    var: float = 0.0
    seen: int = 0

    def advance(self, interval: int, alpha: float) -> None:
        """Close the intervals before ``interval``: fold their counts (zeros for empty ones) into the baseline."""
        steps = min(interval - self.interval, _MAX_GAP)
        for step in range(steps):
            x = float(self.count) if step == 0 else 0.0
            delta = x - self.mean
            self.mean += alpha * delta
            self.var = (1 - alpha) * (self.var + alpha * delta * delta)
            self.seen += 1
        if steps > 0:
            self.interval, self.count = interval, 0

    def spiking(self, spike: Spike) -> bool:
        limit = self.mean + spike.factor * max(math.sqrt(self.var), 1.0)
        return self.seen >= spike.warmup and self.count >= spike.min_count and self.count > limit

    def dump(self) -> str:
        return orjson.dumps([self.interval, self.count, self.mean, self.var, self.seen]).decode()

    @classmethod
    def load(cls, text: str | None, interval: int) -> Baseline:
        if text is None:
            return cls(interval)
        try:
            i, c, m, v, n = orjson.loads(text)
            return cls(int(i), int(c), float(m), float(v), int(n))
        except (ValueError, TypeError):
            return cls(interval)  # an unreadable baseline starts over rather than failing the events


class Detectors:
    """Evaluates every declared detector on a batch of fresh events (two store round trips)."""

    def __init__(self, detectors: Sequence[Detector], store: StateStore):
        self.detectors = tuple(detectors)
        self.store = store

    def evaluate(self, events: Sequence[Event], before: Batch | None = None, offset: int = 0) -> list[Firing]:
        """Record ``events`` in every detector and return the firings. ``before`` is a batch with
        ``offset`` operations already queued (e.g. the activity recording): they run in the same
        first round trip."""
        batch = before if before is not None else self.store.batch()
        thresholds: list[tuple[Detector, str, float, list[Event]]] = []
        spikes: list[tuple[Detector, str, list[Event]]] = []
        for detector in self.detectors:
            groups: dict[str, list[Event]] = {}
            for event in events:
                key = detector.key_of(event) if event.type in detector.events else None
                if key is not None:
                    groups.setdefault(key, []).append(event)
            for key, group in groups.items():
                group.sort(key=lambda e: e.time)
                if detector.threshold is not None:
                    window = f"det:{detector.name}:{key}"
                    for event in group:
                        batch.window_add(window, event.time.timestamp(), detector.threshold.within)
                    latest = group[-1].time.timestamp()
                    batch.window_count(window, latest, detector.threshold.within)
                    thresholds.append((detector, key, latest, group))
                else:
                    batch.get(f"det:{detector.name}:{key}:ewma")
                    spikes.append((detector, key, group))
        if not thresholds and not spikes:
            if before is not None:
                batch.execute()
            return []
        results = batch.execute()[offset:]
        candidates: list[Firing] = []
        position = 0
        writes = self.store.batch()
        for detector, key, latest, group in thresholds:
            position += len(group)  # the window_add results (None)
            count = results[position]
            position += 1
            assert detector.threshold is not None
            if count >= detector.threshold.count:
                candidates.append(Firing(detector, key, latest, {
                    "kind": "threshold", "count": count, "threshold": detector.threshold.count,
                    "within": detector.threshold.within, "events": [e.id for e in group[-20:]]}, tuple(group)))
        for detector, key, group in spikes:
            spike = detector.spike
            assert spike is not None
            first = int(group[0].time.timestamp()) // spike.interval
            baseline = Baseline.load(results[position], first)
            position += 1
            fired: Firing | None = None
            for event in group:
                at = event.time.timestamp()
                interval = int(at) // spike.interval
                if interval < baseline.interval:
                    continue  # an event for an interval already closed: too late to count
                baseline.advance(interval, spike.alpha)
                baseline.count += 1
                if fired is None and baseline.spiking(spike):
                    fired = Firing(detector, key, at, {
                        "kind": "spike", "count": baseline.count, "interval": spike.interval,
                        "baseline_mean": round(baseline.mean, 3),
                        "baseline_deviation": round(math.sqrt(baseline.var), 3), "factor": spike.factor,
                        "events": [e.id for e in group[-20:]]}, tuple(group))
            writes.put(f"det:{detector.name}:{key}:ewma", baseline.dump(), _STATE_TTL)
            if fired is not None:
                candidates.append(fired)
        for firing in candidates:
            writes.put_if_absent(f"det:{firing.detector.name}:{firing.key}:fired", repr(firing.at),
                                 firing.detector.cooldown)
        done = writes.execute()
        claims = done[len(done) - len(candidates):]
        return [firing for firing, claimed in zip(candidates, claims) if claimed]

