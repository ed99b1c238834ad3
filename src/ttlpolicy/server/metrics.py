"""Prometheus metrics, correct with one worker or many.

With ``--workers`` > 1, ``ttlpolicy serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports prometheus-client; each worker then writes its samples to files there and any worker
answers a scrape with the aggregate (``MultiProcessCollector``); labelled children are cached
so the hot path does a dict lookup and an increment. The per-decision metrics are plain
integers on the event loop either way: with one worker they are turned into metric families when
scraped; with several, a thread copies what was counted into the worker's files every
``FLUSH_EVERY`` seconds (and before the worker answers a scrape, and at shutdown), because
prometheus-client's multiprocess values take a lock and write a memory-mapped file per update:
~10 updates a decision cost 15-30 µs, a fifth of a request.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
import time
from bisect import bisect_left
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LAST_LOAD = "ttlpolicy_last_successful_load_timestamp_seconds"
_TTL_BUCKETS = (0, 60, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 604800, 1209600, 2592000,
                7776000)
# The reasons TokenInvalid gives for a subject token (anything else is counted as "other").
TOKEN_FAILURE_REASONS = frozenset({"expired", "not_yet_valid", "signature", "unknown_issuer", "audience",
                                   "algorithm", "unknown_key", "malformed", "missing_claim", "claim_type",
                                   "token_type", "revoked"})
FLUSH_EVERY = 0.25  # seconds between two copies of a worker's counts into the multiprocess files
_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class _Staleness(Collector):
    """``ttlpolicy_seconds_since_last_successful_load``, computed at scrape time.

    In multiprocess mode the timestamp is the oldest live worker's (``livemin``), so the
    gauge shows the most stale worker."""

    def __init__(self, source: Collector | None, local: Callable[[], float]):
        self._source, self._local = source, local

    def collect(self) -> Iterator[Metric]:
        last = None
        if self._source is None:
            last = self._local()
        else:
            for metric in self._source.collect():
                yield metric
                if metric.name == _LAST_LOAD and metric.samples:
                    last = min(s.value for s in metric.samples)
        gauge = GaugeMetricFamily("ttlpolicy_seconds_since_last_successful_load",
                                  "Seconds since the policy set was last loaded successfully.")
        if last is not None:
            gauge.add_metric([], max(0.0, time.time() - last))
        yield gauge


_HELP = {
    "decisions": "Decisions by policy and outcome (allow, deny, step_up, error).",
    "rules": "Rules that matched, by policy and rule.",
    "access": "Access-token lifetimes decided.",
    "refresh": "Refresh-token lifetimes decided (0 = none).",
    "latency": "Time to answer one decide request, from parsed body to serialized response.",
}


class _LocalHistogram:
    """A histogram kept in plain Python numbers: counts per bucket (not cumulative), sum, creation time."""

    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds  # upper bounds, ascending, without +Inf
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        buckets, total = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            total += count
            buckets.append((floatToGoString(bound), float(total)))
        family.add_metric(labels, buckets, self.sum)
        # generate_latest() turns *_created samples into their own gauge, as for a Histogram.
        family.samples.append(Sample(family.name + "_created", dict(zip(family._labelnames, labels)), self.created))


class _PolicyCounts:
    """Everything counted for one policy name; created on its first decision or error."""

    __slots__ = ("outcomes", "rules", "access", "refresh", "created")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.rules: dict[str, int] = {}
        self.access = _LocalHistogram(_TTL_BUCKETS)
        self.refresh = _LocalHistogram(_TTL_BUCKETS)
        self.created = time.time()


class _LocalDecisionMetrics(Collector):
    """The per-decision metrics of a single process, counted in plain dicts and lists.

    Why not prometheus-client's Counter/Histogram here: each ``inc``/``observe`` takes a lock
    and goes through a value object (~1 µs each, ~10 µs for one decision with its matched
    rules, histograms and latency). Every update happens on the event loop thread, so plain
    integer updates need no lock; a scrape (also on the loop) turns them into metric families
    with the same names, labels and samples as the prometheus-client objects would give.
    """

    def __init__(self) -> None:
        self.policies: dict[str, _PolicyCounts] = {}
        self.latency = _LocalHistogram(_LATENCY_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        policies = list(self.policies.items())
        decisions = CounterMetricFamily("ttlpolicy_decisions", _HELP["decisions"], labels=["policy", "outcome"])
        rules = CounterMetricFamily("ttlpolicy_rule_matches", _HELP["rules"], labels=["policy", "rule"])
        access = HistogramMetricFamily("ttlpolicy_access_ttl_seconds", _HELP["access"], labels=["policy"])
        refresh = HistogramMetricFamily("ttlpolicy_refresh_ttl_seconds", _HELP["refresh"], labels=["policy"])
        for name, counts in policies:
            for outcome, value in list(counts.outcomes.items()):
                decisions.add_metric([name, outcome], value, created=counts.created)
            for rule, value in list(counts.rules.items()):
                rules.add_metric([name, rule], value, created=counts.created)
            if any(counts.access.counts):  # as with prometheus-client: no histogram before the first TTL
                counts.access.add_to(access, [name])
                counts.refresh.add_to(refresh, [name])
        latency = HistogramMetricFamily("ttlpolicy_decision_duration_seconds", _HELP["latency"])
        self.latency.add_to(latency, [])
        yield from (decisions, rules, access, refresh, latency)


class Metrics:
    """Every metric of one app. ``render()`` answers ``GET /metrics``.

    One process (``--workers 1``): the per-decision metrics are plain counters read at scrape
    time (:class:`_LocalDecisionMetrics`). Several workers: prometheus-client's multiprocess
    values (mmap'd files), so that any worker's scrape sums all of them.
    """

    def __init__(self, last_success: Callable[[], float]):
        self.multiprocess_dir = multiprocess_dir()
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.reloads = Counter("ttlpolicy_reloads", "Policy reloads by result (success, unchanged, failure).",
                               ["result"], registry=registry)
        self.log_dropped = Counter("ttlpolicy_decision_log_dropped", "Decision-log records lost: the writer fell "
                                   "behind, or the sink failed (full disk, removed directory) beyond the retry queue.", registry=registry)
        self.last_load = Gauge(_LAST_LOAD, "Unix time of the last successful policy load.", registry=registry,
                               multiprocess_mode="livemin")
        self.policy_info = Gauge("ttlpolicy_policy_set_info", "The digest of the policy set being served (1).",
                                 ["digest"], registry=registry, multiprocess_mode="livemax")
        self.degraded = Gauge("ttlpolicy_policy_reload_degraded", "1 while /readyz says degraded because the last "
                              "policy reload failed (the last good set is served), else 0.", registry=registry,
                              multiprocess_mode="livemax")
        self.subject_token_failures = Counter("ttlpolicy_subject_token_failures", "Subject tokens refused, by "
                                              "reason (expired, signature, audience, ...).", ["reason"],
                                              registry=registry)
        self._token_failures: dict[str, Counter] = {}
        self.scrape_time: list[Collector] = []
        self._digest: str | None = None
        # Policy delivery (hot reload and bundles): the worst worker shows (livemin).
        self.watcher_up = Gauge("ttlpolicy_policy_watcher_up", "1 while the policy watcher or bundle poller works "
                                "(or is off by configuration), 0 while it waits for its path or fails.",
                                registry=registry, multiprocess_mode="livemin")
        self.watcher_restarts = Gauge("ttlpolicy_policy_watcher_restarts", "Times the policy watcher was "
                                      "restarted because its path was replaced or the watch failed.",
                                      registry=registry, multiprocess_mode="livesum")
        self.disk_in_sync = Gauge("ttlpolicy_policy_disk_in_sync", "1 when the policy files on disk are the ones "
                                  "being served, 0 when they differ (-1 not checked).", registry=registry,
                                  multiprocess_mode="livemin")
        self.bundle_info = Gauge("ttlpolicy_bundle_info", "The revision of the bundle or manifest being served (1).",
                                 ["revision"], registry=registry, multiprocess_mode="livemax")
        self.bundle_failures = Gauge("ttlpolicy_bundle_fetch_consecutive_failures", "Bundle fetches that failed "
                                     "in a row (0 after a good one).", registry=registry, multiprocess_mode="livemax")
        self._revision: str | None = None
        self.watcher_up.set(1)
        self.disk_in_sync.set(-1)
        # The per-decision metrics: plain counts on the event loop (see the module's docstring).
        self._local = _LocalDecisionMetrics()
        self.decision = self._local_decision  # type: ignore[method-assign]
        self.error = self._local_error  # type: ignore[method-assign]
        self._copied = _LocalDecisionMetrics()  # several workers: what flush() has copied so far
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self.multiprocess_dir is None:
            registry.register(self._local)
            registry.register(_Staleness(None, last_success))
        else:
            self.decisions = Counter("ttlpolicy_decisions", _HELP["decisions"], ["policy", "outcome"],
                                     registry=registry)
            self.rule_matches = Counter("ttlpolicy_rule_matches", _HELP["rules"], ["policy", "rule"],
                                        registry=registry)
            self.access_ttl = Histogram("ttlpolicy_access_ttl_seconds", _HELP["access"], ["policy"],
                                        buckets=_TTL_BUCKETS, registry=registry)
            self.refresh_ttl = Histogram("ttlpolicy_refresh_ttl_seconds", _HELP["refresh"], ["policy"],
                                         buckets=_TTL_BUCKETS, registry=registry)
            self.latency = Histogram("ttlpolicy_decision_duration_seconds", _HELP["latency"],
                                     buckets=_LATENCY_BUCKETS, registry=registry)
            _forget_dead_workers(self.multiprocess_dir)
        self.last_load.set(last_success())
        self.degraded.set(0)
        self.reloads.labels("success")  # precreate so a dashboard shows 0, not "no data"
        self.reloads.labels("failure")

    # -- plain numbers, no locks (event loop only) -----------------------------------------------

    def _counts(self, policy: str) -> _PolicyCounts:
        counts = self._local.policies.get(policy)
        if counts is None:
            counts = self._local.policies[policy] = _PolicyCounts()
        return counts

    def _local_decision(self, policy: str, allow: bool, step_up: bool, access_ttl: int, refresh_ttl: int,
                        matched: list[str], seconds: float) -> None:
        local = self._local
        counts = local.policies.get(policy) or self._counts(policy)
        outcomes = counts.outcomes
        outcome = "deny" if not allow else "step_up" if step_up else "allow"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        rules = counts.rules
        for rule in matched:
            rules[rule] = rules.get(rule, 0) + 1
        # bisect_left on the upper bounds: the first bucket with value <= bound ("le").
        histogram = counts.access
        histogram.counts[bisect_left(histogram.bounds, access_ttl)] += 1
        histogram.sum += access_ttl
        histogram = counts.refresh
        histogram.counts[bisect_left(histogram.bounds, refresh_ttl)] += 1
        histogram.sum += refresh_ttl
        histogram = local.latency
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds

    def _local_error(self, policy: str) -> None:
        outcomes = (self._local.policies.get(policy) or self._counts(policy)).outcomes
        outcomes["error"] = outcomes.get("error", 0) + 1

    # -- several workers: the counts copied into prometheus-client's multiprocess values ----------

    def decision(self, policy: str, allow: bool, step_up: bool, access_ttl: int, refresh_ttl: int,
                 matched: list[str], seconds: float) -> None:
        """Record one decision (replaced per instance by :meth:`_local_decision`)."""
        self._local_decision(policy, allow, step_up, access_ttl, refresh_ttl, matched, seconds)

    def error(self, policy: str) -> None:
        """A decide request answered with a problem; ``policy`` must be a known name or "unknown"."""
        self._local_error(policy)

    def start(self) -> None:
        """Several workers: start copying the counts into the multiprocess files."""
        if self.multiprocess_dir is None or self._flusher is not None:
            return
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="ttlpolicy-metrics", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def flush(self) -> None:
        """Copy what was counted since the last copy into this worker's multiprocess files.

        The event loop only ever adds to the counts and this only reads them (a list() of a
        dict or list is one step under the GIL), so no lock is taken on the hot path; a count
        that lands while this runs is copied the next time."""
        if self.multiprocess_dir is None:
            return
        local, copied = self._local, self._copied
        with self._flush_lock:
            for name, counts in list(local.policies.items()):
                done = copied.policies.get(name)
                if done is None:
                    done = copied.policies[name] = _PolicyCounts()
                for outcome, value in list(counts.outcomes.items()):
                    if value != done.outcomes.get(outcome, 0):
                        self.decisions.labels(name, outcome).inc(value - done.outcomes.get(outcome, 0))
                        done.outcomes[outcome] = value
                for rule, value in list(counts.rules.items()):
                    if value != done.rules.get(rule, 0):
                        self.rule_matches.labels(name, rule).inc(value - done.rules.get(rule, 0))
                        done.rules[rule] = value
                if any(counts.access.counts):
                    _copy(counts.access, done.access, self.access_ttl.labels(name))
                    _copy(counts.refresh, done.refresh, self.refresh_ttl.labels(name))
            _copy(local.latency, copied.latency, self.latency)

    def subject_token_failure(self, reason: str) -> None:
        """A ``subject_token`` that failed verification; ``reason`` is one of :data:`TOKEN_FAILURE_REASONS`."""
        if reason not in TOKEN_FAILURE_REASONS:
            reason = "other"  # the label set stays bounded whatever the SDK adds
        child = self._token_failures.get(reason)
        if child is None:
            child = self._token_failures[reason] = self.subject_token_failures.labels(reason)
        child.inc()

    def reloaded(self, result: str, digest: str, last_success: float, revision: str | None = None) -> None:
        self.reloads.labels(result).inc()
        self.degraded.set(1 if result == "failure" else 0)
        if result != "failure":
            self.last_load.set(last_success)
        self.serving(digest, revision)

    def serving(self, digest: str, revision: str | None = None) -> None:
        if revision != self._revision:
            if self._revision is not None:
                self.bundle_info.labels(self._revision).set(0)
            if revision is not None:
                self.bundle_info.labels(revision).set(1)
            self._revision = revision
        if digest == self._digest:
            return
        if self._digest is not None:
            self.policy_info.labels(self._digest).set(0)  # set, not remove: removal is not multiprocess-safe
        self.policy_info.labels(digest).set(1)
        self._digest = digest

    def track_delivery(self, holder: Any) -> None:
        """Follow the holder's watcher, disk check and bundle fetches (a :class:`~.reload.PolicyHolder`)."""
        def update(current: Any) -> None:
            self.watcher_up.set(1 if current.watcher.healthy else 0)
            self.watcher_restarts.set(current.watcher.restarts)
            in_sync = current.disk.in_sync
            self.disk_in_sync.set(-1 if in_sync is None else int(in_sync))
            status = getattr(current.source, "status", None)
            if status is not None:
                self.bundle_failures.set(status.failures)

        holder.on_health = update
        update(holder)

    def render(self) -> bytes:
        """The exposition text for a scrape: this process's registry, or every worker's aggregate."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.flush()  # this worker's own counts are current; the others' at most FLUSH_EVERY old
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Staleness(MultiProcessCollector(None, path=self.multiprocess_dir), lambda: 0.0))
        for collector in self.scrape_time:
            registry.register(collector)
        return generate_latest(registry)

    def add_scrape_time(self, collector: Collector) -> None:
        """A collector computed when scraped (e.g. counts read from the state store): served by any
        worker as it is, since it does not live in the per-worker multiprocess files."""
        self.scrape_time.append(collector)
        if self.multiprocess_dir is None:
            self.registry.register(collector)

    def close(self) -> None:
        """Copy the last counts and forget this worker's live gauges (called at shutdown)."""
        if self.multiprocess_dir is not None:
            self._stop.set()
            if self._flusher is not None:
                self._flusher.join(5)
                self._flusher = None
            self.flush()
            mark_process_dead(os.getpid(), self.multiprocess_dir)


def _copy(counted: _LocalHistogram, copied: _LocalHistogram, histogram: Histogram) -> None:
    """Add what ``counted`` holds beyond ``copied`` to a prometheus-client histogram child.

    prometheus-client has no call that adds n observations at once; its child keeps one value per
    bucket (not cumulative, +Inf last, as :class:`_LocalHistogram` does) and one for the sum,
    which are incremented here directly (tests/test_server_fastpath.py holds the result equal to
    observing each value)."""
    counts, total = list(counted.counts), counted.sum
    buckets = histogram._buckets  # noqa: SLF001 - see the docstring
    for index, count in enumerate(counts):
        if count != copied.counts[index]:
            buckets[index].inc(count - copied.counts[index])
            copied.counts[index] = count
    if total != copied.sum:
        histogram._sum.inc(total - copied.sum)  # noqa: SLF001
        copied.sum = total


def _forget_dead_workers(path: str) -> None:
    """Drop live-gauge files of workers that died without cleaning up (e.g. killed and restarted)."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = re.search(r"_(\d+)\.db$", file)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, someone else's
