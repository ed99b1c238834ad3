"""The state layer at run time: what the step after the policy does when the store fails, the
store's health, revocation and caller checks, and the counting of rate-limit hits.

Every policy and runtime is built inside its test (never at import), so that mutation testing
sees the code that builds them (docs/mutation.md)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ttlpolicy import load_sources
from ttlpolicy.state import StoreUnavailable, open_store
from ttlpolicy.state.ratelimit import hashed_key, store_key
from ttlpolicy.state.runtime import Health, StateRuntime
from ttlpolicy.state.settings import DegradedSettings
from ttlpolicy.state.emergency import Emergency
from ttlpolicy.state.store import Window, WindowHit

T0 = 1_800_000_000.0
AT = datetime.fromtimestamp(T0, timezone.utc)
POLICY = """\
apiVersion: ttlpolicy/v1
name: {name}
defaults: {{access_ttl: 1h, refresh_ttl: 8h}}
"""
LIMITED = POLICY + """\
rate_limits:
  - name: refresh-per-user
    description: A stolen refresh token refreshes far too often.
    when: grant.type == "refresh_token"
    key: user
    rate: 2 per 1h
    on_exceed: {{deny: too many refresh attempts}}
  - name: per-caller
    key: caller
    rate: 3 per 1m
    on_exceed: {{access_ttl: 5m}}
"""
REFRESH = {"grant": {"type": "refresh_token"}, "user": {"id": "alice"}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def runtime(tmp_path: Path, clock: Clock) -> Iterator[StateRuntime]:
    state = StateRuntime(open_store(f"sqlite://{tmp_path}/state.db"), degraded_access=300, degraded_refresh=1800,
                         clock=clock)
    yield state
    state.close()


def store_down(monkeypatch: pytest.MonkeyPatch, runtime: StateRuntime, reason: str = "connection refused") -> list[str]:
    """Every store operation of ``runtime`` fails from now on; returns the operations tried."""
    tried: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            tried.append(name)
            raise StoreUnavailable(reason)
        return refused

    real_batch = runtime.store.batch

    def batch(*args: Any, **kwargs: Any) -> Any:
        tried.append("batch")
        queued = real_batch(*args, **kwargs)
        monkeypatch.setattr(queued, "execute", refuse("execute"))
        return queued

    monkeypatch.setattr(runtime.store, "batch", batch)
    monkeypatch.setattr(runtime.store, "window_hit", refuse("window_hit"))
    return tried


# -- the degraded store ------------------------------------------------------------------------------

def test_a_store_that_cannot_be_read_holds_every_decision_under_the_degraded_ceiling(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    assert runtime.poll() is True
    healthy = runtime.decide(policies, {}, now=AT)
    assert (healthy.access_ttl, healthy.refresh_ttl) == (3600, 28800) and "state" not in healthy.extra
    store_down(monkeypatch, runtime, "connection refused")
    assert runtime.poll() is False and runtime.health.since == T0
    decision = runtime.decide(policies, {}, now=AT)
    assert (decision.allow, decision.access_ttl, decision.refresh_ttl) == (True, 300, 1800)
    out = decision.to_dict()
    assert out["state"] == "degraded"
    steps = [(s["target"], s["result"], s["source"]) for s in out["trace"] if s["step"] == "degraded"]
    assert steps == [("access_ttl", 300, "state store unavailable (connection refused): access ≤ 5m"),
                     ("refresh_ttl", 1800, "state store unavailable (connection refused): refresh ≤ 30m")]


def test_the_degraded_ceiling_never_lengthens_and_a_zero_refresh_turns_refresh_off(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"), degraded_access=7200, degraded_refresh=0,
                           clock=clock)
    store_down(monkeypatch, runtime)
    runtime.poll()
    decision = runtime.decide(policies, {}, now=AT)
    assert (decision.access_ttl, decision.refresh_ttl) == (3600, 0)
    runtime.close()


def test_while_degraded_a_rate_limit_is_not_counted_and_the_ceiling_stands_in_for_it(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    tried = store_down(monkeypatch, runtime)
    runtime.poll()
    tried.clear()
    for _ in range(5):  # more than either limit allows: nothing is counted, nothing opens
        decision = runtime.decide(policies, REFRESH, now=AT, caller="issuer")
        assert (decision.allow, decision.access_ttl, decision.refresh_ttl) == (True, 300, 1800)
        assert decision.extra["state"] == "degraded" and "rate_limits" not in decision.extra
    assert tried == []  # the hot path does not wait for a store known to be down


def test_a_count_that_fails_marks_the_store_degraded_and_holds_that_decision(
        runtime: StateRuntime, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    runtime.poll()
    store_down(monkeypatch, runtime, "timed out")
    clock.now = T0 + 5
    decision = runtime.decide(policies, REFRESH, now=AT, caller="issuer")
    assert (decision.access_ttl, decision.refresh_ttl) == (300, 1800)
    assert decision.extra["state"] == "degraded" and "rate_limits" not in decision.extra
    assert (runtime.health.ok, runtime.health.reason, runtime.health.since, runtime.health.failures) == (
        False, "timed out", T0 + 5, 1)


def test_the_runtime_recovers_by_itself_when_the_store_answers_again(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    with monkeypatch.context() as outage:
        store_down(outage, runtime)
        assert runtime.poll() is False and not runtime.health.ok
    assert runtime.poll() is True and runtime.health.ok
    decision = runtime.decide(policies, {}, now=AT)
    assert decision.access_ttl == 3600 and "state" not in decision.extra


def test_a_decision_with_nothing_to_apply_is_returned_as_the_policy_made_it(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    compiled = policies.get("p")
    decision = compiled.decide({}, AT, False)
    assert runtime.after_policy(decision, compiled, {}, AT) is decision


# -- rate-limit outcomes -----------------------------------------------------------------------------

def test_every_exceeded_limit_applies_and_the_longest_wait_is_the_retry_after(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    answers = [runtime.decide(policies, REFRESH, now=datetime.fromtimestamp(T0 + i, timezone.utc), caller="issuer")
               for i in range(4)]
    assert [a.allow for a in answers] == [True, True, False, False]
    last = answers[-1]
    assert (last.access_ttl, last.refresh_ttl) == (0, 0)
    out = last.to_dict()
    assert [(e["name"], e["exceeded"], e["retry_after"]) for e in out["rate_limits"]] == [
        ("per-caller", True, 57), ("refresh-per-user", True, 3597)]
    assert out["retry_after"] == 3597  # the longest wait: retrying before it would be refused again
    assert answers[2].to_dict()["retry_after"] == 3598 and "retry_after" not in answers[1].to_dict()


def test_a_limit_that_can_never_admit_again_says_retry_after_none(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    counted = runtime.counting(compiled, REFRESH, AT, limits, caller="issuer")
    assert counted is not None and counted.queue(runtime.store.batch()) == 2
    counted.take([WindowHit(False, (3,), 57.0, (0,)), WindowHit(False, (2,), float("inf"), (0,))])
    decision = runtime.after_policy(compiled.decide(REFRESH, AT, False), compiled, REFRESH, AT, limits,
                                    caller="issuer", counted=counted)
    assert decision.extra["retry_after"] is None and not decision.allow  # never, not "in 57 s"


def vars_of(limit: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(limit, f.name) for f in dataclasses.fields(limit)}


def test_a_limit_whose_condition_fails_counts_and_one_whose_condition_is_false_does_not(
        runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    limits = policies.rate_limits["p"]
    by_name = {limit.name: limit for limit in limits}

    def failing(activation: Any) -> bool:
        raise RuntimeError("no such attribute")

    erring = type(by_name["per-caller"])(**{**vars_of(by_name["per-caller"]), "condition": failing})
    false = type(by_name["per-caller"])(**{**vars_of(by_name["per-caller"]), "condition": lambda a: False})
    matching = runtime._matching((erring, false), {"grant": {}}, {}, "issuer")
    assert [limit for limit, _ in matching] == [erring]
    assert runtime._matching((false,), {}, {}, "issuer") == []
    assert runtime._count("p", (false,), {}, {}, "issuer", T0) == []


def test_reading_without_consuming_counts_nothing(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    for _ in range(5):
        decision = runtime.decide(policies, REFRESH, now=AT, caller="issuer", consume=False)
        assert decision.allow and "rate_limits" not in decision.extra
    assert runtime.decide(policies, REFRESH, now=AT, caller="issuer").to_dict()["rate_limits"][0]["counts"] == [1]


SEPARATE = POLICY + """\
attributes:
  user.id: {{type: string}}
rate_limits:
  - name: per-user
    key: user
    rate: 2 per 1m
    on_exceed: {{deny: too many}}
  - name: per-caller
    key: caller
    rate: 2 per 1m
    on_exceed: {{deny: too many}}
  - name: per-user-expression
    key: ['user.id + "!"']
    rate: 2 per 1m
    on_exceed: {{deny: too many}}
"""


def test_counts_are_kept_apart_per_policy_limit_and_key_under_the_store_key_every_replica_uses(
        runtime: StateRuntime) -> None:
    policies = load_sources({"a.yaml": SEPARATE.format(name="a") + "default: true\n",
                             "b.yaml": SEPARATE.format(name="b")})

    def counts(policy: str, user: str, caller: str) -> tuple[bool, list[tuple[str, str, list[int]]]]:
        decision = runtime.decide(policies, {"user": {"id": user}}, policy, now=AT, caller=caller)
        assert decision.policy_name == policy
        return decision.allow, [(e["name"], e["key"], e["counts"]) for e in decision.extra["rate_limits"]]

    # alice calling as "alice": the user and caller limits have equal key values, yet separate counts
    alice, alice_bang = hashed_key(["alice"]), hashed_key(["alice!"])
    assert counts("a", "alice", "alice") == (True, [("per-caller", alice, [1]), ("per-user", alice, [1]),
                                                   ("per-user-expression", alice_bang, [1])])
    assert counts("a", "alice", "alice") == (True, [("per-caller", alice, [2]), ("per-user", alice, [2]),
                                                   ("per-user-expression", alice_bang, [2])])
    # another policy with limits of the same names counts apart; so does another user and caller
    assert counts("b", "alice", "alice")[0] and counts("a", "bob", "issuer")[0]
    assert runtime.store.window_count(store_key("a", "per-user", ["alice"]), T0, 60) == 2
    assert runtime.store.window_count(store_key("a", "per-user-expression", ["bob!"]), T0, 60) == 1
    assert runtime.store.window_count(store_key("b", "per-caller", ["alice"]), T0, 60) == 1


def test_a_key_read_from_the_context_as_sent_counts_each_user_apart(runtime: StateRuntime) -> None:
    """No limit needs the activation (no `when`, the key a string attribute): the key is read from
    the validated context, before and after the policy alike."""
    text = POLICY + """\
attributes:
  user.id: {{type: string}}
rate_limits:
  - {{name: per-user, key: user, rate: 2 per 1m, on_exceed: {{deny: too many}}}}
"""
    policies = load_sources({"p.yaml": text.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    assert not limits[0].needs_activation
    for user in ("alice", "bob", "carol"):
        decision = runtime.decide(policies, {"user": {"id": user}}, now=AT)
        assert decision.extra["rate_limits"][0]["counts"] == [1]
        counted = runtime.counting(compiled, {"user": {"id": user}}, AT, limits)
        assert counted is not None and counted.queue(batch := runtime.store.batch()) == 1
        counted.take(batch.execute())
        assert counted.outcomes is not None and counted.outcomes[0].hit.counts == (2,)
        assert counted.outcomes[0].key == hashed_key([user])


def test_decide_is_the_policy_set_s_decide_then_the_state(runtime: StateRuntime) -> None:
    policies = load_sources({"a.yaml": POLICY.format(name="a") + "default: true\n", "b.yaml": LIMITED.format(name="b")})
    plain = runtime.decide(policies, REFRESH, "b", now=AT, caller="issuer")
    assert plain.rules is None and plain.extra["rate_limits"][0]["counts"] == [1]
    explained = runtime.decide(policies, REFRESH, "b", now=AT, explain=True, caller="issuer")
    assert explained.rules is not None and explained.to_dict() == {
        **policies.decide(REFRESH, "b", now=AT, explain=True).to_dict(), "rate_limits": explained.extra["rate_limits"]}


def test_the_library_s_degraded_ceilings_are_the_service_s_defaults(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"))
    store_down(monkeypatch, runtime)
    runtime.poll()
    decision = runtime.decide(policies, {}, now=AT)
    assert (decision.access_ttl, decision.refresh_ttl) == (600, 3600)
    assert (decision.access_ttl, decision.refresh_ttl) == (DegradedSettings().access_ttl, DegradedSettings().refresh_ttl)
    runtime.close()


# -- emergencies read from the store ---------------------------------------------------------------------

def _emergency(scope: str) -> Emergency:
    return Emergency(id="em_1", scope=scope, policies=None, access_ttl=300, refresh_ttl=0, deny=None,
                     step_up="verify", reason="INC-7", created_by="t", starts_at=T0, ends_at=T0 + 3600)


def test_an_emergency_started_elsewhere_applies_after_a_poll_and_one_that_does_not_fit_applies_to_be_safe(
        runtime: StateRuntime, tmp_path: Path) -> None:
    policies = load_sources({"p.yaml": POLICY.format(name="p")})
    runtime.poll()
    other = StateRuntime(open_store(f"sqlite://{tmp_path}/state.db"))
    other.emergencies.start(_emergency('tenant.id == "acme"'), T0)  # p declares no tenant.id
    assert runtime.decide(policies, {}, now=AT).access_ttl == 3600  # not read yet
    assert runtime.poll() is True
    decision = runtime.decide(policies, {}, now=AT)
    assert (decision.access_ttl, decision.refresh_ttl, decision.step_up) == (300, 0, True)
    [entry] = decision.extra["emergencies"]
    assert entry == {"id": "em_1", "reason": "INC-7", "ends_at": "2027-01-15T09:00:00Z",
                     "effects": "access ≤ 5m, refresh off, step-up (verify)", "error": entry["error"]}
    assert entry["error"].startswith("the scope does not fit policy p")
    sources = {s.source for s in decision.trace if s.step == "emergency"}
    assert sources and all(f"({entry['error']}; applied to be safe)" in source for source in sources)
    other.close()


# -- counting in the round trip before the policy ------------------------------------------------------

def test_hits_counted_before_the_policy_are_the_outcomes_it_applies(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    assert runtime.counting(compiled, REFRESH, AT, ()) is None
    outcomes = []
    for _ in range(3):
        counted = runtime.counting(compiled, REFRESH, AT, limits, caller="issuer")
        assert counted is not None and (counted.done, counted.outcomes) == (False, None)  # nothing known yet
        batch = runtime.store.batch()
        assert counted.queue(batch) == 2
        counted.take(batch.execute())
        assert counted.done
        decision = runtime.after_policy(compiled.decide(REFRESH, AT, False), compiled, REFRESH, AT, limits,
                                        caller="issuer", counted=counted)
        outcomes.append((decision.allow, [e["counts"] for e in decision.extra["rate_limits"]]))
    assert outcomes == [(True, [[1], [1]]), (True, [[2], [2]]), (False, [[3], [2]])]
    # counted ahead under the same key as counted after the policy: this policy, this limit, this caller
    assert runtime.store.window_count(store_key("p", "per-caller", ["issuer"]), T0, 60) == 3
    assert runtime.store.window_count(store_key("p", "refresh-per-user", ["alice"]), T0, 3600) == 2


def test_nothing_to_count_is_done_at_once_and_a_failed_round_trip_holds_under_the_ceiling(
        runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    only_user = tuple(limit for limit in limits if limit.name == "refresh-per-user")
    nothing = runtime.counting(compiled, {"grant": {"type": "password"}}, AT, only_user)
    assert nothing is not None and nothing.queue(runtime.store.batch()) == 0
    assert (nothing.done, nothing.outcomes) == (True, [])
    nothing.failed()  # nothing was queued: still counted, with nothing to apply
    assert (nothing.done, nothing.outcomes) == (True, [])
    counted = runtime.counting(compiled, REFRESH, AT, limits, caller="issuer")
    assert counted is not None and counted.queue(runtime.store.batch()) == 2
    counted.failed()
    assert (counted.done, counted.outcomes) == (True, None)
    runtime.health.failed("connection refused", T0)
    decision = runtime.after_policy(compiled.decide(REFRESH, AT, False), compiled, REFRESH, AT, limits,
                                    caller="issuer", counted=counted)
    assert (decision.access_ttl, decision.refresh_ttl) == (300, 1800) and "rate_limits" not in decision.extra


def test_a_context_the_policy_refuses_is_not_counted_ahead(runtime: StateRuntime) -> None:
    policies = load_sources({"p.yaml": LIMITED.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    counted = runtime.counting(compiled, {"grant": {"type": 7}}, AT, limits)
    assert counted is not None and counted.queue(runtime.store.batch()) == 0 and not counted.done
    counted.failed()
    assert not counted.done  # nothing was queued: after_policy counts it (and the policy refuses it first)


def test_a_limit_that_reads_the_activity_is_counted_after_it(runtime: StateRuntime) -> None:
    text = LIMITED.replace('when: grant.type == "refresh_token"', "when: activity.countries_24h > 1")
    policies = load_sources({"p.yaml": text.format(name="p")})
    compiled, limits = policies.get("p"), policies.rate_limits["p"]
    counted = runtime.counting(compiled, REFRESH, AT, limits)
    assert counted is not None and counted.queue(runtime.store.batch()) == 0 and not counted.done


# -- health, guarded actions, API callers, revocation -----------------------------------------------

def test_health_reports_the_first_failure_and_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    changes: list[bool] = []
    health = Health(on_change=changes.append)
    assert health.to_dict() == {"status": "ok", "reason": None, "since": None}
    with caplog.at_level("WARNING", logger="ttlpolicy.state"):
        health.failed("connection refused", T0)
        health.failed("timed out", T0 + 1)
        assert (health.ok, health.reason, health.since, health.failures) == (False, "timed out", T0, 2)
        assert health.to_dict() == {"status": "degraded", "reason": "timed out", "since": "2027-01-15T08:00:00Z"}
        health.recovered(T0 + 12.5)
        health.recovered(T0 + 13)
    assert (health.ok, health.reason, health.since, health.failures) == (True, None, None, 2)
    assert changes == [False, True]
    assert [r.getMessage() for r in caplog.records] == [
        "state store unavailable, decisions are held under the degraded ceiling: connection refused",
        "state store answers again after 12.5s; leaving degraded mode"]
    Health().failed("no callback", T0)  # without on_change, failing and recovering need no listener
    quiet = Health(ok=False)
    quiet.recovered(T0)
    assert quiet.ok


def test_a_guarded_store_action_marks_the_store_degraded_and_re_raises(runtime: StateRuntime, clock: Clock) -> None:
    assert runtime.guarded(lambda: 42) == 42 and runtime.health.ok

    def down() -> None:
        raise StoreUnavailable("disk full")

    clock.now = T0 + 9
    with pytest.raises(StoreUnavailable, match="disk full"):
        runtime.guarded(down)
    assert (runtime.health.ok, runtime.health.reason, runtime.health.since) == (False, "disk full", T0 + 9)


def test_api_callers_are_limited_and_not_refused_while_the_store_is_down(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    windows = (Window(2, 60),)
    assert [runtime.limit_caller("batch", windows) for _ in range(2)] == [None, None]
    assert runtime.limit_caller("batch", windows) == pytest.approx(60)
    tried = store_down(monkeypatch, runtime, "gone")
    clock.now = T0 + 3
    assert runtime.limit_caller("batch", windows) is None
    assert (runtime.health.ok, runtime.health.reason, runtime.health.since) == (False, "gone", T0 + 3)
    assert runtime.limit_caller("batch", windows) is None and tried == ["window_hit"]  # not asked again


def test_not_revoked_is_vouched_for_only_while_the_store_answers(runtime: StateRuntime, clock: Clock,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert not runtime.can_vouch()  # never read
    runtime.poll()
    assert runtime.can_vouch()
    clock.now = T0 + 1.0  # within max(1 s, 4 poll intervals of 0.25 s)
    assert runtime.can_vouch()
    clock.now = T0 + 1.001
    assert not runtime.can_vouch()
    runtime.poll_interval = 2.0
    clock.now = T0 + 8.0
    assert runtime.can_vouch()
    clock.now = T0 + 8.01
    assert not runtime.can_vouch()
    runtime.poll()
    store_down(monkeypatch, runtime)
    runtime.guarded(lambda: None)
    runtime.health.failed("gone", clock.now)
    assert not runtime.can_vouch()  # read just now, but the store is down


def test_a_revoked_family_and_token_are_refused_from_memory_while_the_store_is_down(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.poll()
    runtime.revocations.revoke("family", "fam-1", reason="reuse", by="t", now=T0)
    runtime.poll()
    store_down(monkeypatch, runtime)
    assert runtime.poll() is False
    assert runtime.is_revoked("fam-1") and not runtime.is_revoked("fam-2")
    assert runtime.is_token_revoked({"sid": "fam-1", "iat": int(T0) - 10})
    assert not runtime.is_token_revoked({"sid": "fam-2", "iat": int(T0) - 10})


def test_the_poller_keeps_in_step_and_stops(runtime: StateRuntime) -> None:
    runtime.poll_interval = 0.01
    assert runtime.start() is runtime
    thread = runtime._thread
    assert thread is not None and thread.is_alive() and thread.daemon and thread.name == "ttlpolicy-state-poller"
    assert runtime.start()._thread is thread  # started once
    runtime.stop()
    assert runtime._thread is None and not thread.is_alive()


def test_the_poller_polls_every_interval_until_stopped(runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    polls: list[float] = []

    def poll() -> bool:
        polls.append(time.monotonic())
        if len(polls) == 3:
            runtime._stop.set()
        return True

    monkeypatch.setattr(runtime, "poll", poll)
    runtime.poll_interval = 0.02
    started = time.monotonic()
    runtime._run()  # the poller thread's loop, here in the test's thread
    assert len(polls) == 3 and polls[0] - started >= 0.02  # it waits an interval before each poll


def test_closing_waits_at_most_five_seconds_and_never_closes_the_store_under_a_running_poll(
        runtime: StateRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    waited: list[float | None] = []
    closed: list[bool] = []

    class Stuck:  # a poller thread whose poll is stuck in the store
        def join(self, timeout: float | None = None) -> None:
            waited.append(timeout)

        def is_alive(self) -> bool:
            return True

    real_close = runtime.store.close
    monkeypatch.setattr(runtime.store, "close", lambda: closed.append(True))
    stuck = Stuck()
    runtime._thread = stuck  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="ttlpolicy.state"):
        runtime.close()
    assert waited == [5] and closed == [] and runtime._thread is stuck
    assert [r.getMessage() for r in caplog.records] == [
        "state poller still busy in the store after 5s; the store is left open"]
    runtime._thread = None
    assert runtime.stop() is True
    runtime.close()
    assert closed == [True]
    real_close()
