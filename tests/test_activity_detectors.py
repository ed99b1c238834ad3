"""Detectors on synthetic traffic (a burst, a slow ramp, a steady load) on both store backends,
and each automatic response applied to a decision and undone."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pydantic
import pytest

from ttlpolicy import load_policies
from ttlpolicy.activity.detectors import Baseline, Detector, Detectors, Spike
from ttlpolicy.activity.events import Event
from ttlpolicy.activity.responses import ActionStore, apply_actions
from ttlpolicy.state import StateStore, open_store

T0 = 1_800_000_000.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    url = f"sqlite:///{tmp_path}/state.db" if request.param == "sqlite" else str(request.getfixturevalue("redis_url"))
    with open_store(url) as opened:
        yield opened


_ids = iter(range(10**9))


def refresh(at: float, subject: str = "alice", **kw: Any) -> Event:
    return Event(id=f"e{next(_ids)}", type="token.refreshed", time=datetime.fromtimestamp(at, timezone.utc),
                 subject=subject, **kw)


def detector(**kw: Any) -> Detector:
    return Detector.model_validate({"name": "refresh-burst", "events": ["token.refreshed"], **kw})


def run(detectors: Detectors, stream: list[Event], batch_size: int = 10) -> list[Any]:
    fired = []
    for i in range(0, len(stream), batch_size):
        fired += detectors.evaluate(stream[i:i + batch_size])
    return fired


# -- threshold ------------------------------------------------------------------------------------


def test_threshold_fires_once_at_the_count_and_respects_the_cooldown(store: StateStore) -> None:
    detectors = Detectors([detector(threshold={"count": 5, "within": "10m"}, cooldown="15m")], store)
    assert detectors.evaluate([refresh(T0 + i) for i in range(4)]) == []
    [firing] = detectors.evaluate([refresh(T0 + 10)])
    assert (firing.key, firing.evidence["count"], firing.evidence["threshold"]) == ("alice", 5, 5)
    assert len(firing.evidence["events"]) == 1
    assert detectors.evaluate([refresh(T0 + 11)]) == []  # cooling down (a claim in the store)


def test_threshold_window_edge(store: StateStore) -> None:
    detectors = Detectors([detector(threshold={"count": 3, "within": "60s"})], store)
    detectors.evaluate([refresh(T0), refresh(T0 + 30)])
    assert detectors.evaluate([refresh(T0 + 60)]) == []  # the event at T0 stopped counting at T0 + 60
    assert len(detectors.evaluate([refresh(T0 + 61)])) == 1


def test_threshold_keys_are_separate(store: StateStore) -> None:
    detectors = Detectors([detector(threshold={"count": 3, "within": "10m"}, per="client")], store)
    stream = [refresh(T0 + i, subject=f"u{i}", client="web" if i % 2 else "cli") for i in range(5)]
    [firing] = detectors.evaluate(stream)
    assert firing.key == "cli" and firing.detector.per == "client"  # cli: i = 0, 2, 4


# -- spike: burst, slow ramp, steady load ---------------------------------------------------------


SPIKE = {"interval": "1m", "alpha": 0.3, "factor": 4, "min_count": 10, "warmup": 5}


def steady(minutes: int, per_minute: int, start: float = T0, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    return [refresh(start + m * 60 + rng.uniform(0, 59.9)) for m in range(minutes)
            for _ in range(max(0, per_minute + rng.choice([-2, -1, 0, 1, 2])))]


def test_spike_steady_load_does_not_fire(store: StateStore) -> None:
    detectors = Detectors([detector(spike=SPIKE)], store)
    assert run(detectors, sorted(steady(60, 12), key=lambda e: e.time)) == []


def test_spike_slow_ramp_does_not_fire(store: StateStore) -> None:
    detectors = Detectors([detector(spike=SPIKE)], store)
    stream = [refresh(T0 + m * 60 + k * (59.0 / (10 + m // 3))) for m in range(60) for k in range(10 + m // 3)]
    assert run(detectors, stream) == []  # 10/min rising to 29/min over an hour: the baseline follows


def test_spike_burst_fires_with_its_evidence(store: StateStore) -> None:
    detectors = Detectors([detector(spike=SPIKE)], store)
    calm = sorted(steady(20, 12), key=lambda e: e.time)
    assert run(detectors, calm) == []
    burst = [refresh(T0 + 20 * 60 + i * 0.5) for i in range(80)]
    [firing] = run(detectors, burst)
    evidence = firing.evidence
    assert evidence["kind"] == "spike" and evidence["count"] >= 10
    assert evidence["count"] > evidence["baseline_mean"] + 4 * max(evidence["baseline_deviation"], 1)
    assert 8 <= evidence["baseline_mean"] <= 16


def test_spike_needs_its_warmup(store: StateStore) -> None:
    detectors = Detectors([detector(spike=SPIKE)], store)
    assert run(detectors, [refresh(T0 + i * 0.1) for i in range(200)]) == []  # no baseline yet


def test_baseline_folds_empty_intervals() -> None:
    baseline = Baseline(interval=0)
    for minute in range(10):
        baseline.advance(minute, 0.5)
        baseline.count += 10
    assert 9 < baseline.mean <= 10
    baseline.advance(30, 0.5)  # twenty empty minutes
    assert baseline.mean < 0.01 and baseline.seen == 30
    assert not Baseline(0, count=50, mean=0, var=0, seen=2).spiking(Spike(min_count=10, warmup=5))
    assert Baseline(0, count=50, mean=1, var=0, seen=6).spiking(Spike(min_count=10, warmup=5))


def test_detector_settings_are_checked() -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of threshold or spike"):
        detector()
    with pytest.raises(pydantic.ValidationError, match="unknown event type"):
        Detector.model_validate({"name": "x", "events": ["token.stolen"], "threshold": {"count": 1, "within": 60}})
    with pytest.raises(pydantic.ValidationError, match="can only alert"):
        detector(per="country", threshold={"count": 1, "within": 60}, respond=["step_up"])
    assert detector(threshold={"count": 1, "within": "5m"}, **{"for": "2h"}).for_ == 7200


# -- responses ------------------------------------------------------------------------------------


def decision() -> Any:
    policies = load_policies(ROOT / "policies")
    return policies.decide({"tier": "standard", "device": {"trust": "managed"}, "user": {"mfa": True},
                            "location": {"ip": "10.1.2.3"}}, now="2026-03-02T10:00:00Z")


def test_disable_refresh_and_step_up_apply_and_undo(store: StateStore) -> None:
    actions = ActionStore(store)
    off = actions.take("disable_refresh", "subject", "alice", "detector refresh-burst", {"count": 25}, T0, 3600)
    up = actions.take("step_up", "client", "web", "detector failures", {"count": 9}, T0, 600)
    batch = store.batch()
    assert actions.queue_in_force(batch, "alice", "web") == 2
    in_force = ActionStore.in_force(batch.execute(), T0 + 1)
    assert sorted(in_force) == sorted([(off.id, "disable_refresh"), (up.id, "step_up")])
    before = decision()
    assert before.refresh_ttl > 0 and not before.step_up
    tightened = decision()
    changed = apply_actions(tightened, in_force, {off.id: off.cause})
    assert sorted(changed) == sorted([off.id, up.id])
    assert tightened.refresh_ttl == 0 and tightened.access_ttl == before.access_ttl
    assert tightened.step_up and any(up.id in r for r in tightened.step_up_reasons)
    step = tightened.trace[-1].to_dict() if tightened.trace[-1].step == "automatic" else None
    assert step is not None and step["result"] == 0 and off.id in step["source"]
    # The action expires by itself ...
    batch = store.batch()
    actions.queue_in_force(batch, "alice", "web")
    assert [k for _, k in ActionStore.in_force(batch.execute(), T0 + 601)] == ["disable_refresh"]
    # ... or is undone, with who and when on the record.
    undone = actions.undo(off.id, "admin:alice-oncall", T0 + 5)
    assert undone is not None and undone.undone_by == "admin:alice-oncall" and undone.undone_at == T0 + 5
    batch = store.batch()
    actions.queue_in_force(batch, "alice", None)
    assert ActionStore.in_force(batch.execute(), T0 + 6) == []
    assert actions.undo(off.id, "someone-else", T0 + 7) == undone  # idempotent
    listed = actions.list()
    assert {a.id for a in listed} == {off.id, up.id}
    assert [a.id for a in actions.list(active_at=T0 + 6)] == [up.id]
    assert actions.undo("act_missing", "x", T0) is None


def test_actions_only_ever_tighten() -> None:
    denied = load_policies(ROOT / "policies").decide({"tier": "standard", "user": {"risk": 0.95}},
                                                      now="2026-03-02T10:00:00Z")
    assert not denied.allow
    assert apply_actions(denied, [("act_1", "step_up"), ("act_2", "disable_refresh")]) == []
    assert denied.refresh_ttl == 0 and not denied.allow
