"""In-process decisions: correctness check across engines, then timing, round-robin.

Timing: each engine decides the same contexts in the same order, one ``perf_counter_ns`` pair per
decision. A *repeat* runs every engine once (round-robin, so a noisy neighbour hurts all engines
alike); the reported figures are medians over repeats of each repeat's mean, p50 and p99.
Slow engines get fewer iterations per repeat (sized from the correctness run to a time budget).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engines import FIELDS, Engine, dump, normalise

Contexts = list[tuple[dict[str, Any], datetime]]


class Mismatch(SystemExit):
    pass


@dataclass
class Timing:
    engine: str
    note: str
    iterations: int
    means_ns: list[float] = field(default_factory=list)
    p50s_ns: list[float] = field(default_factory=list)
    p99s_ns: list[float] = field(default_factory=list)

    @property
    def mean_us(self) -> float:
        return statistics.median(self.means_ns) / 1000

    @property
    def p50_us(self) -> float:
        return statistics.median(self.p50s_ns) / 1000

    @property
    def p99_us(self) -> float:
        return statistics.median(self.p99s_ns) / 1000

    @property
    def per_second(self) -> float:
        return 1e6 / self.mean_us


def check_agreement(engines: list[Engine], contexts: Contexts, slow_contexts: int,
                    fields: tuple[str, ...] = FIELDS) -> dict[str, float]:
    """Every engine decides ``contexts`` (slow ones the first ``slow_contexts``); abort on any
    difference. Returns each engine's mean µs per decision in this run, to size the timing."""
    reference = engines[0]
    expected = [normalise(reference, reference.decide(c, n), fields) for c, n in contexts]
    estimates: dict[str, float] = {}
    for engine in engines:
        subset = contexts[:slow_contexts] if engine.slow else contexts
        start = time.perf_counter()
        for k, (context, now) in enumerate(subset):
            got = normalise(engine, engine.decide(context, now), fields)
            common = [f for f in fields if got[f] is not None and expected[k][f] is not None]
            if any(got[f] != expected[k][f] for f in common) or not {"allow", "access_ttl", "refresh_ttl",
                                                                     "step_up"} <= set(common):
                raise Mismatch(
                    f"\nMISMATCH: {engine.name} disagrees with {reference.name} on context #{k}\n"
                    f"  context: {dump(context)}\n  now: {now.isoformat()}\n"
                    f"  {reference.name}: {dump(expected[k])}\n  {engine.name}: {dump(got)}\n"
                    "Benchmarks are only meaningful when every engine decides the same; fix the engine "
                    "(benchmarks/handwritten.py, benchmarks/rego/) to follow the policy.")
        estimates[engine.name] = (time.perf_counter() - start) / max(1, len(subset)) * 1e6
    return estimates


def _run_once(engine: Engine, contexts: Contexts, iterations: int) -> tuple[float, float, float]:
    decide = engine.decide
    clock = time.perf_counter_ns
    samples = [0] * iterations
    count = len(contexts)
    gc.collect()
    for k in range(iterations):
        context, now = contexts[k % count]
        start = clock()
        decide(context, now)
        samples[k] = clock() - start
    samples.sort()
    return sum(samples) / iterations, samples[iterations // 2], samples[min(iterations - 1, int(iterations * 0.99))]


def time_engines(engines: list[Engine], contexts: Contexts, estimates: dict[str, float], repeats: int,
                 budget_s: float, max_iterations: int, log: Any = sys.stderr) -> list[Timing]:
    timings = []
    for engine in engines:
        estimate_us = max(estimates.get(engine.name, 10.0), 0.1)
        iterations = int(min(max_iterations, max(20, budget_s * 1e6 / estimate_us)))
        timings.append(Timing(engine.name, engine.note, iterations))
    for repeat in range(repeats):
        for engine, timing in zip(engines, timings):
            # a short warm-up: caches, lazily built structures, the allocator
            _run_once(engine, contexts, min(timing.iterations, 50))
            mean, p50, p99 = _run_once(engine, contexts, timing.iterations)
            timing.means_ns.append(mean)
            timing.p50s_ns.append(p50)
            timing.p99s_ns.append(p99)
        print(f"    repeat {repeat + 1}/{repeats} done", file=log, flush=True)
    return timings
