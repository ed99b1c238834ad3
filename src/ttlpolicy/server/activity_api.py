"""Activity in the service: events in, ``activity.*`` for decisions, detectors and their automatic
responses, shared security signals (SETs), signed webhooks out, and their metrics.

=================================  ==============  ==============================================
``POST /v1/events``                decide, admin   a batch of issuer events (idempotent by id)
``POST /v1/security-events``       decide, admin   one Security Event Token (RFC 8935 push)
``GET /v1/actions``                admin           automatic actions (``?subject=``, ``?client=``,
                                                   ``?active=true``)
``DELETE /v1/actions/{id}``        admin           undo one
=================================  ==============  ==============================================

The decide path asks :meth:`ActivityAPI.observe` before the policy and
:meth:`ActivityAPI.after_decision` after it (actions applied as trace steps that only tighten;
counting). For a policy that reads ``activity.*``, ``observe`` is one store round trip: the
recordings still waiting (below), the activity values, the actions in force, and the recording of
this request, so the policy sees every request before it. For a policy that reads none, it
makes no round trip at all: the actions in force come from a copy in memory (reloaded when
``actions:version`` changes, polled once a second and right after this service takes or undoes
one; without a loaded copy they are read from the store) and the recording goes to a writer
thread that records the waiting requests in one transaction every ``WRITE_EVERY`` seconds
(bounded: what does not fit, or what the store refuses, is counted in
``ttlpolicy_activity_unrecorded``; the rest is written on shutdown). When the store cannot answer,
the activity is absent — every rule reading it fails safe — and the decision says so under
``activity``.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..activity.detectors import Detectors, Firing
from ..activity.events import Event, parse_event
from ..activity.detectors import EmergencyCeiling
from ..activity.responses import Action, ActionStore, apply_actions
from ..activity.security_events import SET_MEDIA_TYPE, SecurityEvent, SetRejected, SetVerifier
from ..activity.tracker import ActivityTracker, Request as ActivityRequest
from ..alerts import WebhookDispatcher
from ..decision import Decision
from ..errors import Problem
from ..state import StateStore, StoreUnavailable
from ..vocabulary import ACTIVITY
from ..state.emergency import EmergencyInputError
from ..state.revocation import RevocationInputError
from .auth import Caller
from .config import DecisionLogSettings
from .decisionlog import DecisionLog
from .problems import Refusal, problem

if TYPE_CHECKING:
    from ..compile import CompiledPolicy
    from ..state.runtime import LimitCount, StateRuntime
    from .parts import ServiceParts
    from .config import Settings

log = logging.getLogger("ttlpolicy.server")
EVENT_SCOPES = ("decide", "admin")
ADMIN_SCOPES = ("admin",)
MAX_EVENTS_BODY = 4 * 1024 * 1024
MAX_LABELS = 200  # distinct client labels per metric; the rest are counted as "other"
_ACTIVE_KEEP = 400 * 86_400.0  # longest token lifetime tracked for active-token counts
_UTC = timezone.utc
MAX_PENDING = 10_000  # decided requests waiting for the writer thread; more are counted, not kept
# Allowed decisions' expiry times waiting for the once-a-second flush, and (client, second) counts
# kept while the store does not answer; beyond either bound they are counted, not kept.
MAX_TOKENS = 100_000
WRITE_EVERY = 0.1  # seconds between the writer thread's transactions


class ActivityMetrics:
    """The activity layer's metrics (multiprocess-safe prometheus-client objects)."""

    def __init__(self, registry: Any):
        self.tokens_created = Counter("ttlpolicy_tokens_created", "Allowed decisions (token creations) by policy "
                                      "and client.", ["policy", "client"], registry=registry)
        self.events = Counter("ttlpolicy_events", "Issuer events accepted, by type (token.refreshed is the "
                              "refresh rate, auth.failed the failed authentications).", ["type"], registry=registry)
        self.duplicate_events = Counter("ttlpolicy_events_duplicate", "Events ignored because their id was "
                                        "already counted.", registry=registry)
        self.detector_firings = Counter("ttlpolicy_detector_firings", "Anomaly detector firings.", ["detector"],
                                        registry=registry)
        self.actions = Counter("ttlpolicy_automatic_actions", "Automatic actions taken, by kind and cause.",
                               ["action", "cause"], registry=registry)
        self.actions_undone = Counter("ttlpolicy_automatic_actions_undone", "Automatic actions undone.",
                                      registry=registry)
        self.security_events = Counter("ttlpolicy_security_events", "Security Event Tokens received, by event "
                                       "and result (applied, or the reason for refusing).", ["event", "result"],
                                       registry=registry)
        self.webhooks = Counter("ttlpolicy_webhook_deliveries", "Webhook attempts by endpoint and result "
                                "(delivered, retry, dead_letter).", ["endpoint", "result"], registry=registry)
        self.unavailable = Counter("ttlpolicy_activity_unavailable", "Decisions made without activity because "
                                   "the state store could not answer.", registry=registry)
        self.unrecorded = Counter("ttlpolicy_activity_unrecorded", "Decided requests whose recording (country, IP, "
                                  "last activity) was dropped, by reason (queue_full, store_unavailable).",
                                  ["reason"], registry=registry)
        self.unrecorded.labels("queue_full")
        self.unrecorded.labels("store_unavailable")
        self.tokens_uncounted = Counter("ttlpolicy_active_tokens_uncounted", "Allowed decisions left out of the "
                                        "active-token counts (too many waiting while the store did not answer).",
                                        registry=registry)
        self._clients: set[str] = set()
        self.events.labels("token.refreshed")  # precreate so dashboards show 0 rather than "no data"
        self.events.labels("auth.failed")

    def client_label(self, client: str | None) -> str:
        if client is None:
            return "none"
        if client in self._clients or len(self._clients) < MAX_LABELS:
            self._clients.add(client)
            return client
        return "other"


class _ActiveTokens(Collector):
    """``ttlpolicy_active_tokens{client}`` and ``ttlpolicy_token_expirations_5m{client}``, read from
    the store at scrape time (the same on every replica: aggregate with max, not sum)."""

    def __init__(self, api: ActivityAPI):
        self.api = api

    def collect(self) -> list[Metric]:
        active = GaugeMetricFamily("ttlpolicy_active_tokens", "Access tokens allowed and not yet expired, per "
                                   "client (from the state store).", labels=["client"])
        expired = GaugeMetricFamily("ttlpolicy_token_expirations_5m", "Access tokens that expired in the last "
                                    "5 minutes, per client (from the state store).", labels=["client"])
        try:
            for client, (live, gone) in self.api.token_counts().items():
                active.add_metric([client], live)
                expired.add_metric([client], gone)
        except StoreUnavailable:
            pass  # no samples rather than made-up ones
        return [active, expired]


class EventLog(DecisionLog):
    """Accepted events as JSON lines (the decision log's writer thread, another format)."""

    def format(self, record: tuple[Any, ...]) -> bytes:
        return orjson.dumps(record[0], option=orjson.OPT_APPEND_NEWLINE)


@dataclass
class Observation:
    """What the store said about one decision's subject and client."""

    values: dict[str, Any] | None
    actions: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    client: str | None = None


class ActivityAPI:
    """The activity endpoints and the hooks of the decide path, for one service."""

    def __init__(self, service: ServiceParts, settings: Settings, runtime: StateRuntime):
        self.service = service
        self.settings = settings.activity
        self.runtime = runtime  # the state layer's: one store, one health for everything
        self.metrics = ActivityMetrics(service.metrics.registry)
        self.webhooks = WebhookDispatcher(settings.webhooks, on_result=self._webhook_result)
        transmitters = self.settings.security_events.transmitters
        self.sets = SetVerifier(transmitters) if transmitters else None
        log_settings = self.settings.event_log
        self.event_log = EventLog(DecisionLogSettings(sink=log_settings.sink, path=log_settings.path),
                                  lambda lost: None)  # lost lines show in its health()
        # Allowed decisions' (client, expiry) from the decide path (deque.append and popleft are
        # atomic: no lock), summed by the flusher into {(client, expiry second): count}.
        self._tokens: collections.deque[tuple[str, float]] = collections.deque()
        self._token_counts: dict[tuple[str, int], int] = {}
        self._created: dict[tuple[str, str], Any] = {}  # (policy, client label) -> tokens_created child
        self._used: dict[tuple[str, str], frozenset[str]] = {}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        # Recordings of decided requests waiting for the writer thread. _write_lock is held from
        # taking them to their commit, by the writer and by observe's synchronous path alike, so a
        # policy reading activity.* always sees every request recorded before its own.
        self._pending: list[ActivityRequest] = []
        self._pending_lock = threading.Lock()
        self._unlogged: dict[str, tuple[float, int]] = {}  # reason -> (last logged, dropped since)
        self._write_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._writer_stop = threading.Event()
        # The actions in force in memory, {(per, key): [(id, kind, until)]}, and the version they
        # were read at; None until loaded (the decide path then reads them from the store).
        self._actions: dict[tuple[str, str], list[tuple[str, str, float]]] | None = None
        self._actions_version: str | None = None
        self._actions_lock = threading.Lock()
        service.metrics.add_scrape_time(_ActiveTokens(self))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.webhooks.start()
        self.event_log.start()
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="ttlpolicy-active-tokens", daemon=True)
        self._flusher.start()
        if self.settings.enabled:
            self.refresh_actions()
            self._writer_stop.clear()
            self._writer = threading.Thread(target=self._write_loop, name="ttlpolicy-activity-writer", daemon=True)
            self._writer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
            self._flusher = None
        writer, self._writer = self._writer, None  # from now on observe records synchronously
        if writer is not None:
            self._writer_stop.set()
            writer.join(5)
        self.write_pending()
        self.flush_tokens()
        self.event_log.stop()
        self.webhooks.stop()

    def _webhook_result(self, endpoint: str, result: str) -> None:
        self.metrics.webhooks.labels(endpoint, result).inc()

    def alert(self, alert_type: str, data: dict[str, Any]) -> None:
        """Queue a signed webhook (never blocks)."""
        self.webhooks.publish(alert_type, data)

    # -- the decide path ------------------------------------------------------------------------

    def observe(self, context: dict[str, Any], compiled: CompiledPolicy | None = None,
                limits: LimitCount | None = None) -> Observation | None:
        """Activity and actions for a decision's subject and client (one round trip), and record it.

        ``None`` when activity is off, no store is configured, or the request names neither a
        user nor a client. The activity is read and recorded at the real time, whatever the
        request's ``now`` says: ``now`` moves the policy's clock, not what happened. When
        ``compiled`` reads no ``activity.*`` the values are not read (``{}``) and the recording
        goes to the writer thread (see the module's docstring). Otherwise the decision's
        rate-limit hits (``limits``) go in the same round trip, when they can (see
        :class:`~ttlpolicy.state.runtime.LimitCount`).
        """
        if not self.settings.enabled:
            return None
        user, client, location = context.get("user"), context.get("client"), context.get("location")
        subject = user.get("id") if isinstance(user, dict) else None
        client_id = client.get("id") if isinstance(client, dict) else None
        subject = subject if isinstance(subject, str) and subject else None
        client_id = client_id if isinstance(client_id, str) and client_id else None
        if subject is None and client_id is None:
            return None
        country = location.get("country") if isinstance(location, dict) else None
        ip = location.get("ip") if isinstance(location, dict) else None
        request = ActivityRequest(subject, client_id, country if isinstance(country, str) else None,
                                  ip if isinstance(ip, str) else None, time.time())
        health = self.runtime.health
        if not health.ok:  # degraded: the state layer's poller probes the store, requests do not
            self.metrics.unavailable.inc()
            return Observation(None, error=health.reason or "the state store does not answer", client=client_id)
        store = self.runtime.store
        if compiled is not None and self._writer is not None and not self._reads(compiled):
            known = self._actions
            if not known and known is not None:
                in_force = []  # no action in force anywhere: the usual case
            elif known is not None:  # no round trip
                in_force = sorted((action_id, kind) for per, key in (("subject", subject), ("client", client_id))
                                  if key is not None for action_id, kind, until in known.get((per, key), ())
                                  if request.now < until)
            else:
                batch = store.batch()  # reads only: no write transaction on the event loop
                ActionStore(store).queue_in_force(batch, subject, client_id)
                try:
                    results = batch.execute()
                except StoreUnavailable as exc:
                    return self._unavailable_observation(exc, client_id)
                in_force = ActionStore.in_force(results, request.now)
            self._enqueue(request)
            return Observation({}, in_force, client=client_id)
        tracker = ActivityTracker(store)
        with self._write_lock:
            pending = self._take_pending()
            batch = store.batch()
            offset = tracker.queue_requests(batch, pending)
            queued = ActionStore(store).queue_in_force(batch, subject, client_id)
            reads = tracker.queue_observe(batch, request, offset=offset + queued)
            hits = limits.queue(batch) if limits is not None else 0
            try:
                results = batch.execute()
            except StoreUnavailable as exc:
                self._count_unrecorded("store_unavailable", len(pending))
                if limits is not None:
                    limits.failed()
                return self._unavailable_observation(exc, client_id)
        if hits:
            assert limits is not None
            limits.take(results[len(results) - hits:])
        return Observation(reads.values(results), ActionStore.in_force(results[offset:offset + queued], request.now),
                           client=client_id)

    def refresh_actions(self, force: bool = False) -> None:
        """Reload the actions in force into memory when their version changed (or ``force``).
        When the store cannot answer, the copy in memory keeps applying (actions only tighten)."""
        store = self.runtime.store
        with self._actions_lock:
            try:
                actions = ActionStore(store)
                if not force and self._actions is not None and actions.version() == self._actions_version:
                    return
                self._actions_version, self._actions = actions.all_in_force(time.time())
            except StoreUnavailable:
                return  # the state layer's poller reports the store; the next tick tries again
            except Exception:  # e.g. an unreadable record: keep the copy, say so, never kill the caller
                log.exception("automatic actions not reloaded")

    def _unavailable_observation(self, exc: StoreUnavailable, client_id: str | None) -> Observation:
        self.metrics.unavailable.inc()
        reason = str(exc) or "the state store did not answer"
        self.runtime.health.failed(reason, time.time())  # the whole state layer goes degraded until the store is back
        return Observation(None, error=reason, client=client_id)

    # -- the recording of decided requests (batched off the request path) -----------------------

    def _enqueue(self, request: ActivityRequest) -> None:
        if request.subject is None:
            return  # nothing to record: the recording is the subject's country, IP and last activity
        with self._pending_lock:
            if len(self._pending) < MAX_PENDING:
                self._pending.append(request)
                return
        self._count_unrecorded("queue_full", 1)

    def _take_pending(self) -> list[ActivityRequest]:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        return pending

    def _count_unrecorded(self, reason: str, n: int) -> None:
        """Count requests whose recording is dropped; say so in the log at most once a second per
        reason, with how many since the last line (a full queue drops one per request: a log line
        each, on the event loop, slowed the overloaded service down further)."""
        if not n:
            return
        self.metrics.unrecorded.labels(reason).inc(n)
        now = time.monotonic()
        since, waiting = self._unlogged.get(reason, (float("-inf"), 0))
        if now - since < 1.0:
            self._unlogged[reason] = (since, waiting + n)
            return
        self._unlogged[reason] = (now, 0)
        log.warning("%d decided request(s) not recorded in the activity (%s)", waiting + n, reason.replace("_", " "))

    def write_pending(self) -> int:
        """Record the requests waiting for the writer thread (one transaction); returns how many.
        While the store is degraded or when it cannot answer they are counted as unrecorded."""
        with self._write_lock:
            pending = self._take_pending()
            if not pending:
                return 0
            if not self.runtime.health.ok:
                self._count_unrecorded("store_unavailable", len(pending))
                return 0
            batch = self.runtime.store.batch()
            ActivityTracker(self.runtime.store).queue_requests(batch, pending)
            try:
                batch.execute()
            except StoreUnavailable as exc:
                self._count_unrecorded("store_unavailable", len(pending))
                self.runtime.health.failed(str(exc) or "the state store did not answer", time.time())
                return 0
        return len(pending)

    def _write_loop(self) -> None:
        while not self._writer_stop.wait(WRITE_EVERY):
            try:
                self.write_pending()
            except Exception:  # never let the writer die: the next tick tries again
                log.exception("activity writer failed")

    def _reads(self, compiled: CompiledPolicy) -> frozenset[str]:
        """The activity attributes ``compiled`` reads (from its rules' text; cached per policy version)."""
        key = (compiled.name, compiled.digest)
        found = self._used.get(key)
        if found is None:
            text = compiled.document.model_dump_json()
            found = frozenset(name.partition(".")[2] for name in ACTIVITY if re.search(re.escape(name) + r"\b", text))
            if len(self._used) > 1000:
                self._used.clear()
            self._used[key] = found
        return found

    def after_decision(self, decision: Decision, observation: Observation | None, compiled: CompiledPolicy) -> None:
        """Apply the actions in force (tighten only), show the activity values the policy used (or
        why there were none), count the creation. A policy that reads no activity and no action
        that changed the decision add nothing to it."""
        client = observation.client if observation is not None else None
        if observation is not None:
            applied = apply_actions(decision, observation.actions) if observation.actions else []
            used = self._reads(compiled)
            if used or applied:  # else the decision shows nothing of it
                info: dict[str, Any] = {"available": observation.values is not None}
                if observation.values is not None:
                    info["values"] = {k: v for k, v in observation.values.items() if k in used}
                else:
                    info["reason"] = observation.error
                if applied:
                    info["actions"] = applied
                decision.extra["activity"] = info
        if decision.allow:
            label = self.metrics.client_label(client)
            created = self._created.get((decision.policy_name, label))
            if created is None:  # .labels() costs more than the increment: look each child up once
                created = self._created[(decision.policy_name, label)] = \
                    self.metrics.tokens_created.labels(decision.policy_name, label)
            created.inc()
            if client is not None and decision.access_ttl > 0:
                if len(self._tokens) < MAX_TOKENS:
                    self._tokens.append((client, time.time() + decision.access_ttl))
                else:
                    self.metrics.tokens_uncounted.inc()

    # -- active tokens (batched off the request path) -------------------------------------------

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):
            if self.settings.enabled:
                self.refresh_actions()
            self.flush_tokens()
            self._announce_ended_emergencies()

    def emergency_ended(self, emergency: Any, now: float) -> None:
        """Announce an emergency's end once, whichever replica sees it first (a claim in the store)."""
        if not self.webhooks.enabled:
            return
        try:
            first = self.runtime.store.put_if_absent(f"alert:emergency.ended:{emergency.id}", "1", 30 * 86_400.0)
        except StoreUnavailable:
            return  # the next tick tries again
        if first:
            self.alert("emergency.ended", emergency.to_dict(now))

    def _announce_ended_emergencies(self) -> None:
        """Emergencies end by themselves at their end time: say so (once) when that time has come."""
        if not self.webhooks.enabled or not self.runtime.health.ok:
            return
        now = time.time()
        for emergency in self.runtime.emergencies.all():
            ended_at = emergency.ended_at if emergency.ended_at is not None else emergency.ends_at
            if ended_at <= now and now - ended_at < 86_400:
                self.emergency_ended(emergency, now)

    def flush_tokens(self) -> None:
        """Write the allowed decisions' expiry times for the active-token counts: one window entry
        per client and expiry second, holding how many tokens expire then (rounded up to the whole
        second: a token counts as active at most a second longer). At thousands of decisions a
        second this is a handful of rows per flush, where a row per decision kept the thread busy
        for a tenth of the CPU. Kept (bounded) until the store answers again."""
        counts, tokens = self._token_counts, self._tokens
        try:
            while True:
                client, expires = tokens.popleft()
                key = (client, math.ceil(expires))
                if key in counts:
                    counts[key] += 1
                elif len(counts) < MAX_TOKENS:
                    counts[key] = 1
                else:
                    self.metrics.tokens_uncounted.inc()
        except IndexError:
            pass
        if not counts or not self.runtime.health.ok:
            return
        batch = self.runtime.store.batch()
        for (client, second), n in counts.items():
            batch.window_add(f"act:active:{client}", float(second), _ACTIVE_KEEP, n)
        batch.set_add("act:clients", {client for client, _ in counts}, _ACTIVE_KEEP)
        try:
            batch.execute()
        except StoreUnavailable:
            log.warning("active-token counts not recorded: the state store did not answer")
            return
        counts.clear()

    def token_counts(self) -> dict[str, tuple[int, int]]:
        """``client -> (active tokens, expired in the last 5 minutes)`` from the store."""
        store = self.runtime.store
        if not self.runtime.health.ok:
            return {}
        clients = sorted(store.set_members("act:clients"))[:MAX_LABELS]
        now = time.time()
        batch = store.batch()
        for client in clients:
            batch.window_count(f"act:active:{client}", now + _ACTIVE_KEEP, _ACTIVE_KEEP)
            batch.window_count(f"act:active:{client}", now, 300)
        results = batch.execute()
        return {c: (results[2 * i], results[2 * i + 1]) for i, c in enumerate(clients)}

    # -- endpoints ------------------------------------------------------------------------------

    def _caller(self, request: Request, scopes: tuple[str, ...]) -> Caller | Response:
        try:
            return self.service.gate.request_caller(request, scopes)
        except Refusal as refusal:
            return refusal.response

    async def _body(self, request: Request, limit: int) -> bytes | Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return problem("body-too-large", f"request body exceeds {limit} bytes", max_bytes=limit)
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a lying Content-Length does not help
            size += len(chunk)
            if size > limit:
                return problem("body-too-large", f"request body exceeds {limit} bytes", max_bytes=limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _unavailable(self, exc: Exception) -> Response:
        self.runtime.health.failed(str(exc), time.time())
        return problem("state-unavailable", f"the state store did not answer ({exc}); nothing was recorded, "
                       "retry later (events are idempotent by id)", headers={"Retry-After": "5"})

    def _degraded(self) -> Response:
        reason = self.runtime.health.reason or "the state store does not answer"
        return problem("state-unavailable", f"the state store is unavailable ({reason}); nothing was recorded, "
                       "retry later (events are idempotent by id)", headers={"Retry-After": "5"})

    async def post_events(self, request: Request) -> Response:
        """POST /v1/events"""
        caller = self._caller(request, EVENT_SCOPES)
        if isinstance(caller, Response):
            return caller
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            return problem("unsupported-media-type", f"send the events as application/json, not {media or 'nothing'}")
        raw = await self._body(request, MAX_EVENTS_BODY)
        if isinstance(raw, Response):
            return raw
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return problem("invalid-json", f"body is not valid JSON: {exc}")
        items = body.get("events") if isinstance(body, dict) else None
        extra = [k for k in body if k != "events"] if isinstance(body, dict) else []
        if not isinstance(items, list) or extra:
            errors = [Problem.field(k, "unknown-field", "unknown field") for k in extra]
            if not isinstance(items, list):
                errors.append(Problem.field("events", "invalid-field", "expected a list of events"))
            return problem("invalid-request", 'a batch of events is {"events": [...]}', errors=errors)
        limit = self.settings.max_events
        if len(items) > limit:
            return problem("invalid-request", f"a batch holds at most {limit} events, not {len(items)}",
                           errors=[Problem.field("events", "too-many-items", f"at most {limit}")])
        now = datetime.now(_UTC)
        events: list[Event] = []
        problems: list[Problem] = []
        for index, item in enumerate(items):
            event, found = parse_event(item, f"events[{index}]", now)
            problems += found
            if event is not None:
                events.append(event)
        seen: set[str] = set()
        for index, event in enumerate(events):
            if event.id in seen:
                problems.append(Problem.field(f"events[{index}].id", "duplicate-id", f"id {event.id!r} appears twice in the batch"))
            seen.add(event.id)
        if problems:
            return problem("invalid-request", f"{len(problems)} problem(s) in the events; nothing was recorded",
                           errors=problems)
        if not self.runtime.health.ok:
            return self._degraded()
        store = self.runtime.store
        try:
            fresh, firings = await run_in_threadpool(self._record, store, events)
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        for event in fresh:
            self.metrics.events.labels(event.type).inc()
            if self.event_log.enabled:
                self.event_log.submit((event.to_dict(),))
            if event.type == "refresh.failed" and event.reason == "reuse":
                self.alert("refresh.reuse_detected", event.to_dict())
        self.metrics.duplicate_events.inc(len(events) - len(fresh))
        responses = await run_in_threadpool(self._respond, store, firings, caller)
        return Response(orjson.dumps({"accepted": len(fresh), "duplicates": len(events) - len(fresh),
                                      "detections": responses}), media_type="application/json")

    def _record(self, store: StateStore, events: list[Event]) -> tuple[list[Event], list[Firing]]:
        tracker = ActivityTracker(store)
        claims = tracker.claim(events)
        fresh = [e for e, new in zip(events, claims) if new]
        if not fresh:
            return [], []
        batch = store.batch()
        queued = tracker.queue_events(batch, fresh)
        firings = Detectors(self.settings.detectors, store).evaluate(fresh, batch, queued)
        return fresh, firings

    def _take(self, store: StateStore, kind: str, per: str, key: str, cause: str, evidence: dict[str, Any],
              seconds: float, sessions: list[str], ceiling: EmergencyCeiling, source: str) -> Action:
        """One automatic action: applied here (disable_refresh, step_up) or through the state layer
        (a revocation, an emergency ceiling scoped to this one subject or client), and recorded."""
        now, by = time.time(), f"ttlpolicy:{cause}"
        refs: list[str] = []
        evidence = dict(evidence)
        try:
            self._through_state(kind, per, key, cause, seconds, sessions, ceiling, now, by, refs, evidence)
        except (RevocationInputError, EmergencyInputError) as exc:  # e.g. `for` beyond the emergency cap
            log.warning("automatic %s for %s %s not made: %s", kind, per, key, exc)
            evidence["error"] = f"the state layer refused the {kind}: {exc}"
        action = ActionStore(store).take(kind, per, key, cause, evidence, now, seconds, refs)
        self.refresh_actions(force=True)  # in force here from the next decision on
        self.metrics.actions.labels(kind, source).inc()
        self.alert("action.applied", action.to_dict())
        return action

    def _through_state(self, kind: str, per: str, key: str, cause: str, seconds: float, sessions: list[str],
                       ceiling: EmergencyCeiling, now: float, by: str, refs: list[str],
                       evidence: dict[str, Any]) -> None:
        if kind == "revoke_family":
            for session in sessions:
                revocation, _ = self.runtime.revocations.revoke("family", session, reason=cause, by=by, now=now)
                refs.append(revocation.id)
                self.alert("revocation.created", revocation.to_dict())
            if not sessions:
                evidence["note"] = "no session (refresh family) was named, so none was revoked"
        elif kind == "revoke_subject":
            revocation, _ = self.runtime.revocations.revoke(per, key, reason=cause, by=by, now=now)
            refs.append(revocation.id)
            self.alert("revocation.created", revocation.to_dict())
        elif kind == "emergency":
            attribute = "user.id" if per == "subject" else "client.id"
            body = {"scope": f"{attribute} == {orjson.dumps(key).decode()}", "reason": cause,
                    "duration": f"{int(seconds)}s", "access_ttl": f"{ceiling.access_ttl}s",
                    "refresh_ttl": f"{ceiling.refresh_ttl}s"}
            emergencies = self.runtime.emergencies
            emergency = emergencies.start(emergencies.prepare(body, self.service.holder.current.policies, by, now),
                                          now)
            refs.append(emergency.id)
            self.alert("emergency.started", emergency.to_dict(now))

    def _respond(self, store: StateStore, firings: list[Firing], caller: Caller) -> list[dict[str, Any]]:
        out = []
        for firing in firings:
            detector = firing.detector
            self.metrics.detector_firings.labels(detector.name).inc()
            taken = []
            for kind in detector.respond:
                action = self._take(store, kind, detector.per, firing.key, f"detector {detector.name}",
                                    firing.evidence, detector.for_, firing.sessions, detector.emergency, "detector")
                taken.append(action.to_dict())
            record = {**firing.to_dict(), "actions": [a["id"] for a in taken], "reported_by": caller.id}
            self.alert("detector.fired", record)
            log.warning("detector %s fired for %s %s: %s", detector.name, detector.per, firing.key,
                        orjson.dumps(firing.evidence).decode())
            out.append(record)
        return out

    async def post_security_event(self, request: Request) -> Response:
        """POST /v1/security-events: one SET (RFC 8935 push); 202 when applied."""
        caller = self._caller(request, EVENT_SCOPES)
        if isinstance(caller, Response):
            return caller
        if self.sets is None:
            return self._set_refused(SetRejected("access_denied", "this service accepts no security events (no "
                                                 "activity.security_events.transmitters configured)",
                                                 "not_configured"), status=422)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != SET_MEDIA_TYPE:
            return self._set_refused(SetRejected("invalid_request", f"send the SET as {SET_MEDIA_TYPE}",
                                                 "media_type"), status=415)
        raw = await self._body(request, 64 * 1024)
        if isinstance(raw, Response):
            return raw
        try:
            event = self.sets.verify(raw)
        except SetRejected as exc:
            return self._set_refused(exc)
        if not self.runtime.health.ok:
            self.sets.replay.discard(event.issuer, event.jti)
            return self._degraded()
        store = self.runtime.store
        try:
            taken = await run_in_threadpool(self._apply_set, store, event)
        except StoreUnavailable as exc:
            self.sets.replay.discard(event.issuer, event.jti)  # not applied: the transmitter may retry it
            self.metrics.security_events.labels(event.type, "store_unavailable").inc()
            return self._unavailable(exc)
        self.metrics.security_events.labels(event.type, "applied").inc()
        self.alert("security_event.applied", {**event.evidence(), "subject": event.subject, "actions": taken,
                                              "received_by": caller.id})
        return Response(status_code=202)

    def _apply_set(self, store: StateStore, event: SecurityEvent) -> list[str]:
        settings = self.settings.security_events
        taken = []
        for kind in settings.respond.get(event.type, ()):
            action = self._take(store, kind, "subject", event.subject, f"security event {event.type}",
                                event.evidence(), settings.for_, [event.session] if event.session else [],
                                settings.emergency, "security_event")
            taken.append(action.id)
        return taken

    def _set_refused(self, exc: SetRejected, status: int = 400) -> Response:
        # RFC 8935 §2.3: {"err", "description"}; the same body is also an RFC 9457 problem.
        self.metrics.security_events.labels("unknown", exc.reason).inc()
        body = {"type": "https://ttlpolicy.dev/problems/invalid-security-event", "title": "Security event refused",
                "status": status, "detail": exc.description, "code": "invalid-security-event",
                "reason": exc.reason, **exc.to_dict()}
        return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json")

    async def list_actions(self, request: Request) -> Response:
        """GET /v1/actions"""
        caller = self._caller(request, ADMIN_SCOPES)
        if isinstance(caller, Response):
            return caller
        store = self.runtime.store
        query = request.query_params
        unknown = sorted(set(query) - {"subject", "client", "active"})
        if unknown:
            return problem("invalid-request", f"unknown query parameter {unknown[0]}",
                           errors=[Problem.field(unknown[0], "unknown-field", "unknown parameter")])
        per, key = ("subject", query["subject"]) if "subject" in query else \
            ("client", query["client"]) if "client" in query else (None, None)
        active = query.get("active")
        if active not in (None, "true", "false"):
            return problem("invalid-request", "active is true or false",
                           errors=[Problem.field("active", "invalid-field", "expected true or false")])
        try:
            found = await run_in_threadpool(ActionStore(store).list, per, key,
                                            time.time() if active == "true" else None)
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        return Response(orjson.dumps({"actions": [a.to_dict() for a in found]}), media_type="application/json")

    async def undo_action(self, request: Request) -> Response:
        """DELETE /v1/actions/{id}"""
        caller = self._caller(request, ADMIN_SCOPES)
        if isinstance(caller, Response):
            return caller
        store = self.runtime.store
        action_id = request.path_params["id"]
        try:
            undone = await run_in_threadpool(self._undo, store, action_id, f"{caller.kind}:{caller.id}")
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        if undone is None:
            return problem("not-found", f"no automatic action {action_id}")
        self.metrics.actions_undone.inc()
        self.alert("action.undone", undone.to_dict())
        return Response(orjson.dumps(undone.to_dict()), media_type="application/json")

    def _undo(self, store: StateStore, action_id: str, by: str) -> Action | None:
        """Undo an action: stop applying it, and lift what it revoked or end the emergency it started."""
        now = time.time()
        undone = ActionStore(store).undo(action_id, by, now)
        if undone is None or undone.undone_at != now:
            return undone  # unknown, or undone before (idempotent)
        self.refresh_actions(force=True)
        for ref in undone.refs:
            if undone.kind == "emergency":
                ended = self.runtime.emergencies.end(ref, by=by, now=now)
                if ended is not None:
                    self.emergency_ended(ended, now)
            else:
                self.runtime.revocations.lift(ref, by=by, reason=f"automatic action {action_id} undone", now=now)
        return undone

    def routes(self) -> list[Route]:
        return [Route("/v1/events", self.post_events, methods=["POST"]),
                Route("/v1/security-events", self.post_security_event, methods=["POST"]),
                Route("/v1/actions", self.list_actions, methods=["GET"]),
                Route("/v1/actions/{id}", self.undo_action, methods=["DELETE"])]
