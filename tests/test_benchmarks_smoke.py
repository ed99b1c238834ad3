"""The benchmark harness can't rot: every available engine agrees on a few contexts.

Runs the correctness check of ``benchmarks/run.py`` (hand-written Python, ttlpolicy native and
reference, and whichever of Rego/regorus, OPA and Rust CEL are installed) on a handful of
contexts, then the timing loop with tiny iteration counts. No timing is asserted: benchmarks
are not tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import engines  # noqa: E402
import synthetic  # noqa: E402
from contexts import workforce_contexts  # noqa: E402
from inprocess import check_agreement, time_engines  # noqa: E402

from ttlpolicy.policyset import resolve_now  # noqa: E402


@pytest.mark.parametrize("which", ["workforce", "synthetic"])
def test_all_engines_agree_and_the_timing_loop_runs(which: str) -> None:
    failures: dict[str, str] = {}
    if which == "workforce":
        found = engines.workforce_engines(str(ROOT / "policies"), failures)
        contexts = [(c, resolve_now(n)) for c, n in workforce_contexts(8, seed=1)]
    else:
        found = engines.synthetic_engines(synthetic.generate(20), failures)
        contexts = [(c, resolve_now(n)) for c, n in synthetic.synthetic_contexts(8, seed=1)]
    names = [e.name for e in found]
    assert names[:3] == ["hand-written Python", "ttlpolicy (native CEL)", "ttlpolicy (cel-python interpreter)"]
    # Optional engines are skipped when their package is missing, but one that is installed must work.
    assert not [reason for reason in failures.values() if "not installed" not in reason], failures
    estimates = check_agreement(found, contexts, slow_contexts=2)  # raises SystemExit on any mismatch
    timings = time_engines(found, contexts, estimates, repeats=1, budget_s=0.0, max_iterations=20,
                           log=open("/dev/null", "w"))
    assert [t.engine for t in timings] == names and all(t.p99_us > 0 for t in timings)


def test_heatmap_benchmark_runs() -> None:
    import heatmap as heatmap_benchmark  # benchmarks/heatmap.py

    rows = heatmap_benchmark.run(repeats=1)
    assert len(rows) == 4 and all(median > 0 and cpu >= 0 for _, median, _, cpu in rows)
    assert "| heatmap(): 240 decisions with traces |" in heatmap_benchmark.report(rows, 1)


def test_state_benchmark_runs(tmp_path: Path, redis_url: str) -> None:
    """benchmarks/state.py on both stores with tiny rounds; the round trips it counts are exact."""
    import state as state_benchmark  # benchmarks/state.py

    stores = {"SQLite": f"sqlite://{tmp_path}/state.db", "Redis": redis_url}
    result = state_benchmark.in_process(stores, rounds=1, per_round=20, revocations_in_force=30)
    assert result.round_trips == {"SQLite": 1.0, "Redis": 1.0}
    assert result.commands["evalsha"] == 1.0 and not set(result.commands) & {"eval", "script|exists"}
    report = "\n".join(state_benchmark.in_process_report(result) + state_benchmark.revocation_report(result))
    for row in ("| policy only |", "| SQLite: revocation check + decision with rate limit |",
                "| Redis: one PING (one round trip, for comparison) |", "| the embedded store adds ≤ 50 µs",
                "| Redis adds one round trip and nothing else |", "| SQLite | ", "| Redis | "):
        assert row in report, row
    assert "wrk is not installed" in "\n".join(state_benchmark.http_report([], ["wrk is not installed"], 1, 1))


def test_the_http_report_states_each_issue_12_target_against_the_trivial_endpoint_of_the_same_run() -> None:
    from httpbench import HttpResult, http_markdown

    trivial = HttpResult("trivial Starlette endpoint", 1, 10_000, 4.0, 10.0, 34, 0, 100_000)
    fast = HttpResult("ttlpolicy serve, metrics + decision log", 1, 7_500, 5.0, 19.0, 70, 0, 75_000)
    slow = HttpResult("ttlpolicy serve, metrics + decision log + API key", 1, 6_000, 9.0, 25.0, 70, 0, 60_000)
    text = "\n".join(http_markdown([trivial, fast, slow], [], 10))
    assert "| ttlpolicy serve, metrics + decision log: ≥ 70% of trivial req/s | 75% | met |" in text
    assert "| ttlpolicy serve, metrics + decision log: p99 ≤ 2× the trivial endpoint's | 19.00 ms = 1.9× | met |" in text
    assert "| ttlpolicy serve, metrics + decision log + API key: ≥ 65% of trivial req/s | 60% | NOT met |" in text
    assert "25.00 ms = 2.5× | NOT met |" in text
