"""What state costs, counted rather than timed (benchmarks/state.py times it): a decision with a
rate limit and a revocation check is one store round trip on either backend; a revocation
check is none; revoking one at a time does the same work for the thousandth as for the first."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from store_work import counting

from ttlpolicy import load_sources
from ttlpolicy.state import open_store
from ttlpolicy.state.revocation import Revocation, TokenFacts
from ttlpolicy.state.runtime import StateRuntime

POLICY = """\
apiVersion: ttlpolicy/v1
name: rl
defaults: {access_ttl: 15m, refresh_ttl: 8h}
rate_limits:
  - name: refresh-per-user
    description: A runaway client or a stolen refresh token.
    key: user
    rate: [2 per 1m, 100 per 1d]
    on_exceed: {deny: too many refresh attempts}
"""
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "redis"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateRuntime]:
    url = f"sqlite://{tmp_path}/state.db" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    state = StateRuntime(open_store(url))  # not started: no poller thread, the test polls
    yield state
    state.close()


def test_a_decision_with_a_rate_limit_and_a_revocation_check_is_one_round_trip(runtime: StateRuntime) -> None:
    policies = load_sources({"rl.yaml": POLICY})
    now = time.time()
    for i in range(20):
        runtime.revocations.revoke("subject", f"gone-{i}", reason="INC-1", by="test", now=now)
    runtime.poll()
    context = {"user": {"id": "alice"}}
    runtime.decide(policies, context, now=T0)  # the connection's own set-up is not the decision's work
    answers = []
    for second in (1, 2):  # the second exceeds the limit: still one round trip
        facts = TokenFacts(subject="alice", client="web", jti=f"jti-{second}", issued_at=now - 60)
        with counting(runtime.store) as work:
            revoked = runtime.revoked(facts)
            decision = runtime.decide(policies, context, now=T0 + timedelta(seconds=second))
        assert revoked is None and work.round_trips == 1
        if runtime.store.backend == "redis":
            assert work.changes == 1  # one EVAL: nothing before it, nothing after
        answers.append(decision.allow)
    assert answers == [True, False]
    with counting(runtime.store) as work:
        assert runtime.revoked(TokenFacts(subject="gone-3", issued_at=now - 60)) is not None
    assert work.round_trips == 0  # answered from memory


def test_revoking_one_at_a_time_does_the_same_work_each_time(runtime: StateRuntime,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each revocation used to reload and decode every stored one (and, on SQLite, rewrite all
    their expiries): a thousand took minutes. Now the writer applies its own write in memory."""
    decoded = []
    from_record = Revocation.from_record.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Revocation, "from_record",
                        classmethod(lambda cls, *a: decoded.append(1) or from_record(cls, *a)))
    registry = runtime.revocations
    runtime.poll()
    now = time.time()
    samples = []
    for start in range(0, 200, 50):
        with counting(runtime.store) as work:
            for i in range(start, start + 50):
                registry.revoke("subject", f"user-{i}", reason="INC-2", by="test", now=now)
        samples.append(work)
    assert samples[0].round_trips == samples[-1].round_trips == 100  # per revocation: a version check, a write
    assert samples[0].changes == samples[-1].changes
    assert decoded == []  # nothing was read back from the store
    assert registry.check(TokenFacts(subject="user-199", issued_at=now - 1), now) is not None
    # Another process (or a fresh copy) still loads every one of them.
    other = StateRuntime(open_store(runtime.store.display_url))
    other.poll()
    assert len(other.revocations.index.selectors) == 200
    other.close()


def test_a_poll_that_finds_nothing_changed_is_one_round_trip(runtime: StateRuntime) -> None:
    """Every process polls a few times a second: revocations' and emergencies' versions together."""
    runtime.revocations.revoke("subject", "alice", reason="INC-3", by="test", now=time.time())
    runtime.poll()
    with counting(runtime.store) as work:
        for _ in range(5):
            assert runtime.poll()
    assert work.round_trips == 5
    other = StateRuntime(open_store(runtime.store.display_url))
    other.revocations.revoke("subject", "bob", reason="INC-3", by="test", now=time.time())
    other.close()
    runtime.poll()  # another process changed the revocations: this poll reloads them
    assert runtime.revoked(TokenFacts(subject="bob", issued_at=time.time() - 60)) is not None
