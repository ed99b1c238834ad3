"""The state layer at run time: one object per process that the service (or a library user) asks.

:class:`StateRuntime` owns the store, the revocation and emergency registries (kept in memory
and refreshed from the store by a background poller) and the store's health. Its
:meth:`~StateRuntime.after_policy` is the step after the policy's own evaluation: it counts the
decision against the policy's rate limits (one store round trip for all of them), finds the
live emergencies whose scope matches, and applies both with :func:`~.tighten.tighten`.

Failure never opens anything (promise 8). When the store does not answer:

* the runtime is *degraded*: every decision is held under the degraded ceiling, marked
  ``"state": "degraded"`` and explained in the trace; rate limits are not skipped silently;
* emergencies and revocations already read stay in memory and keep applying until they end;
* a revocation check says it cannot vouch for a token (never "active");
* the poller keeps probing, and the runtime recovers by itself when the store answers.

While degraded the hot path does not touch the store at all (no timeout per request); only the
poller probes it.

>>> runtime = StateRuntime(open_store("sqlite:///var/lib/ttlpolicy/state.db"))     # doctest: +SKIP
>>> runtime.start()                                                                  # doctest: +SKIP
>>> decision = runtime.decide(policies, context, caller="api_key:issuer")           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import ContextError
from ..decision import Decision
from .emergency import Emergencies, EmergencyMatch
from .ratelimit import RateLimitOutcome, hashed_key, key_digest, retry_after_seconds, store_key
from .revocation import Revocation, Revocations, TokenFacts
from .store import Batch, StateStore, StoreUnavailable, Window
from .tighten import Ceiling, tighten

if TYPE_CHECKING:
    from ..program import CompiledPolicy
    from ..policyset import PolicySet

log = logging.getLogger("ttlpolicy.state")
DAY = 86400


@dataclass
class Health:
    """Whether the store answers; ``reason`` and ``since`` when it does not."""

    ok: bool = True
    reason: str | None = None
    since: float | None = None
    failures: int = 0  # times the store failed to answer, since start
    on_change: Callable[[bool], None] | None = field(default=None, repr=False)

    def failed(self, reason: str, now: float) -> None:
        self.failures += 1
        if self.ok:
            log.warning("state store unavailable, decisions are held under the degraded ceiling: %s", reason)
            self.ok, self.reason, self.since = False, reason, now
            if self.on_change is not None:
                self.on_change(False)
        else:
            self.reason = reason

    def recovered(self, now: float) -> None:
        if not self.ok:
            log.warning("state store answers again after %.1fs; leaving degraded mode", now - (self.since or now))
            self.ok, self.reason, self.since = True, None, None
            if self.on_change is not None:
                self.on_change(True)

    def to_dict(self) -> dict[str, Any]:
        from .timefmt import rfc3339

        return {"status": "ok" if self.ok else "degraded", "reason": self.reason,
                "since": rfc3339(self.since) if self.since is not None else None}


class StateRuntime:
    """Rate limits, revocations and emergencies for one process. Thread-safe.

    ``degraded_access`` / ``degraded_refresh``: the ceilings while the store cannot answer.
    ``retention``: the longest any token lives (how long revocations are kept).
    ``emergency_max_duration``: the longest an emergency may last.
    """

    def __init__(self, store: StateStore, *, poll_interval: float = 0.25, degraded_access: int = 600,
                 degraded_refresh: int = 3600, retention: float = 90 * DAY, emergency_max_duration: float = 7 * DAY,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.poll_interval = poll_interval
        self.degraded_access, self.degraded_refresh = degraded_access, degraded_refresh
        self.clock = clock
        self.revocations = Revocations(store, retention=retention)
        self.emergencies = Emergencies(store, max_duration=emergency_max_duration)
        self.health = Health()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> StateRuntime:
        """Read the store once, then keep in step with it from a background thread."""
        self.poll()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ttlpolicy-state-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> bool:
        """Stop the poller; False when a poll is still running after 5 s (stuck in the store)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            if self._thread.is_alive():
                return False
            self._thread = None
        return True

    def close(self) -> None:
        # Closing a store under a poll still running in it can crash the process (SQLite closes
        # connections other threads are using): such a store is left to the process's exit.
        if self.stop():
            self.store.close()
        else:
            log.warning("state poller still busy in the store after 5s; the store is left open")

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll()

    def poll(self) -> bool:
        """Sync revocations and emergencies; track health. True when the store answered."""
        now = self.clock()
        try:
            batch = self.store.batch()  # both versions in one round trip; a collection reloads only if changed
            batch.get(self.revocations.collection.version_key)
            batch.get(self.emergencies.collection.version_key)
            revocations, emergencies = batch.execute()
            self.revocations.sync(now, version=revocations)
            self.emergencies.sync(now, version=emergencies)
        except StoreUnavailable as exc:
            self.health.failed(str(exc), now)
            return False
        self.health.recovered(now)
        return True

    def guarded(self, action: Callable[[], Any]) -> Any:
        """Run a store action for the API; a failure marks the store degraded and re-raises."""
        try:
            result = action()
        except StoreUnavailable as exc:
            self.health.failed(str(exc), self.clock())
            raise
        return result

    # -- decisions -------------------------------------------------------------------------------

    def decide(self, policies: PolicySet, context: Mapping[str, Any], policy: str | None = None,
               now: datetime | str | None = None, explain: bool = False, *, caller: str | None = None,
               consume: bool = True) -> Decision:
        """``policies.decide(...)`` followed by :meth:`after_policy`: the library's stateful decide.

        ``consume=False`` reads state (emergencies, a degraded store) without counting rate limits."""
        from ..policyset import resolve_now

        instant = resolve_now(now)
        compiled = policies.get(policy)
        decision = compiled.decide(context, instant, explain)
        return self.after_policy(decision, compiled, context, instant, policies.rate_limits.get(compiled.name, ()),
                                 caller=caller, consume=consume)

    def after_policy(self, decision: Decision, compiled: CompiledPolicy, context: Mapping[str, Any],
                     instant: datetime, limits: tuple[Any, ...] = (), *, caller: str | None = None,
                     consume: bool = True, counted: LimitCount | None = None) -> Decision:
        """Apply rate limits, emergencies and a degraded store to a decision; only ever tightens.

        ``counted``: the limits' hits, already counted in another round trip (see :class:`LimitCount`);
        if it did not run, they are counted here."""
        now = self.clock()
        live = self.emergencies.live(now)
        if not limits and not live and self.health.ok:
            return decision  # the common case: nothing to read, nothing to add
        done = counted is not None and counted.done
        # The policy has validated the context, and its program hands over the activation its rules
        # saw; it is built again only for a decision that does not carry one, when something needs
        # it (an emergency's scope, a rate limit's condition or a key that is more than a string
        # attribute as sent).
        activation = None
        if live or (not done and any(limit.needs_activation for limit in limits)):
            activation = decision.activation
            if activation is None:
                activation = compiled.context.activation(context, instant)
        ceilings: list[Ceiling] = []
        extra: dict[str, Any] = {}
        if limits and consume:
            if done:
                assert counted is not None
                outcomes = counted.outcomes
            else:
                outcomes = self._count(compiled.name, limits, activation, context, caller, instant.timestamp())
            if outcomes is not None:
                extra["rate_limits"] = [o.to_dict() for o in outcomes]
                exceeded = [o for o in outcomes if not o.hit.allowed]
                for outcome in exceeded:
                    ceilings.append(outcome.limit.ceiling(outcome.hit.retry_after))
                if exceeded:
                    retry = [retry_after_seconds(o.hit.retry_after) for o in exceeded]
                    extra["retry_after"] = None if None in retry else max(r for r in retry if r is not None)
        if live:
            assert activation is not None  # built above whenever an emergency is live
            matches = self.emergencies.matching(compiled, activation, now)
            if matches:
                extra["emergencies"] = [_emergency_entry(m) for m in matches]
            for match in matches:
                e = match.emergency
                source = e.label() + (f" ({match.error}; applied to be safe)" if match.error else "")
                ceilings.append(Ceiling("emergency", source, e.access_ttl, e.refresh_ttl, e.deny, e.step_up))
        if not self.health.ok:
            extra["state"] = "degraded"
            ceilings.append(Ceiling("degraded", f"state store unavailable ({self.health.reason})",
                                    self.degraded_access, self.degraded_refresh))
        return tighten(decision, ceilings, extra)

    def counting(self, compiled: CompiledPolicy, context: Mapping[str, Any], instant: datetime,
                 limits: tuple[Any, ...], caller: str | None = None) -> LimitCount | None:
        """A decision's rate-limit hits, to be queued on a batch that runs before the policy
        (the activity's, for a policy reading ``activity.*``), so that the decision makes one
        store round trip, not two; ``None`` when there is nothing to count."""
        return LimitCount(self, compiled, context, instant, limits, caller) if limits else None

    def _matching(self, limits: tuple[Any, ...], activation: Mapping[str, Any] | None, context: Mapping[str, Any],
                  caller: str | None) -> list[tuple[Any, str]]:
        """The limits whose condition holds (or cannot be evaluated: fail safe, it counts), with their key's digest."""
        matching = []
        for limit in limits:
            try:
                holds = limit.condition(activation) if activation is not None else True  # None: `when` is "true"
            except Exception:  # noqa: BLE001 - fail safe: a limit whose condition errs counts
                holds = True
            if holds is not False:
                matching.append((limit, key_digest(limit.key_values(activation, caller, context))))
        return matching

    def _count(self, policy: str, limits: tuple[Any, ...], activation: Mapping[str, Any] | None,
               context: Mapping[str, Any], caller: str | None, at: float) -> list[RateLimitOutcome] | None:
        """Count one event per matching limit, in one round trip; None when the store is down."""
        matching = self._matching(limits, activation, context, caller)
        if not matching:
            return []
        if not self.health.ok:
            return None  # the degraded ceiling stands in for limits that cannot be counted
        batch = self.store.batch()
        _queue_hits(batch, policy, matching, at)
        try:
            hits = batch.execute()
        except StoreUnavailable as exc:
            self.health.failed(str(exc), self.clock())
            return None
        return _outcomes(matching, hits)

    # -- callers of the API ----------------------------------------------------------------------

    def limit_caller(self, caller: str, windows: tuple[Window, ...]) -> float | None:
        """Count one request of an API caller; seconds to wait when over its rate, else None.

        When the store cannot answer, callers are not limited (the decisions they get are held
        under the degraded ceiling instead): refusing every caller would take the service down."""
        if not self.health.ok:
            return None
        try:
            hit = self.store.window_hit(f"caller:{caller}", self.clock(), windows)
        except StoreUnavailable as exc:
            self.health.failed(str(exc), self.clock())
            return None
        return None if hit.allowed else hit.retry_after

    # -- revocation ------------------------------------------------------------------------------

    def revoked(self, facts: TokenFacts) -> Revocation | None:
        """The revocation covering a token, from memory (kept while the store is down)."""
        return self.revocations.check(facts, self.clock())

    def can_vouch(self) -> bool:
        """Whether "not revoked" can be trusted: the store answered within a few poll intervals."""
        synced = self.revocations.synced_at
        return self.health.ok and synced is not None and self.clock() - synced <= max(1.0, 4 * self.poll_interval)

    def is_revoked(self, family: str) -> bool:
        """:class:`ttlpolicy.tokens.Revocations` for a family id (the ``sid`` claim)."""
        return self.revoked(TokenFacts(family=family)) is not None

    def is_token_revoked(self, claims: Mapping[str, Any]) -> bool:
        """For :class:`ttlpolicy.tokens.TokenVerifier`: any revocation covering these claims."""
        return self.revoked(TokenFacts.from_claims(claims)) is not None


class LimitCount:
    """A decision's rate-limit hits, queued on a batch that runs before the policy does.

    Counting does not depend on the decision (every matching request counts, allowed or not),
    only on the request; so the hits can share the round trip that reads the activity of a
    policy reading ``activity.*``. They cannot when a limit itself reads ``activity.*`` (its
    values are what that round trip fetches) or when the context does not validate (the policy
    refuses it and nothing is counted): then :meth:`queue` queues nothing and
    :meth:`StateRuntime.after_policy` counts as usual, in a round trip of its own.
    """

    def __init__(self, runtime: StateRuntime, compiled: CompiledPolicy, context: Mapping[str, Any],
                 instant: datetime, limits: tuple[Any, ...], caller: str | None):
        self._runtime, self._compiled, self._context = runtime, compiled, context
        self._instant, self._limits, self._caller = instant, limits, caller
        self._matching: list[tuple[Any, str]] = []
        self.done = False  # True once the hits are counted (or their round trip failed)
        self.outcomes: list[RateLimitOutcome] | None = None  # None: the store did not answer

    def queue(self, batch: Batch) -> int:
        """Queue the hits on ``batch``; returns how many operations (0: they are counted later)."""
        if any(_reads_activity(limit) for limit in self._limits):
            return 0
        activation = None
        if any(limit.needs_activation for limit in self._limits):
            try:
                activation = self._compiled.context.activation(self._context, self._instant)
            except ContextError:
                return 0
        self._matching = self._runtime._matching(self._limits, activation, self._context, self._caller)
        if not self._matching:
            self.done, self.outcomes = True, []
            return 0
        _queue_hits(batch, self._compiled.name, self._matching, self._instant.timestamp())
        return len(self._matching)

    def take(self, hits: Sequence[Any]) -> None:
        """The results of the operations :meth:`queue` queued, in order."""
        self.done, self.outcomes = True, _outcomes(self._matching, hits)

    def failed(self) -> None:
        """The batch did not run: the store did not answer (the caller marks it degraded)."""
        if self._matching:
            self.done, self.outcomes = True, None


def _reads_activity(limit: Any) -> bool:
    return _ACTIVITY.search(limit.when) is not None or any(_ACTIVITY.search(p.text) for p in limit.key)


_ACTIVITY = re.compile(r"\bactivity\.")


def _queue_hits(batch: Batch, policy: str, matching: list[tuple[Any, str]], at: float) -> None:
    for limit, digest in matching:
        batch.window_hit(store_key(policy, limit.name, (), digest), at, limit.windows)


def _outcomes(matching: list[tuple[Any, str]], hits: Sequence[Any]) -> list[RateLimitOutcome]:
    return [RateLimitOutcome(limit, hashed_key((), digest), hit) for (limit, digest), hit in zip(matching, hits)]


def _emergency_entry(match: EmergencyMatch) -> dict[str, Any]:
    from .timefmt import rfc3339

    e = match.emergency
    entry: dict[str, Any] = {"id": e.id, "reason": e.reason, "ends_at": rfc3339(e.ends_at), "effects": e.effects()}
    if match.error:
        entry["error"] = match.error
    return entry
