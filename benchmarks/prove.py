"""How long proofs take: invariants and ``diff --prove`` on synthetic 10 / 100 / 1,000-rule
policies (``synthetic.py``) and on the bundled policies, written to RESULTS-prove.md.

    python benchmarks/prove.py            # 3 repeats, medians; --quick: 1 repeat, 10 and 100 rules

Every timing is wall-clock seconds of the library call a CLI run makes (``prove_diff``,
``check_invariant``), policy loading excluded; the verdicts are recorded next to the times, since
an "unknown" at the time limit is a result too. Nothing here is asserted: benchmarks are not tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402

from ttlpolicy import load_policies, load_sources  # noqa: E402
from ttlpolicy.durations import parse_duration  # noqa: E402
from ttlpolicy.errors import Location  # noqa: E402
from ttlpolicy.prove.diff import prove_diff  # noqa: E402
from ttlpolicy.prove.invariants import check_invariant  # noqa: E402

TIMEOUT = 10.0
INVARIANTS = [  # (name, when, always)
    ("no access token outlives the global limit", "true", 'decision.access_ttl <= duration("12h")'),
    ("high risk never gets more than an hour", "user.risk > 0.7", 'decision.access_ttl <= duration("1h")'),
]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def one_rule_change(text: str, loosen: bool) -> str:
    """The first rule with an access cap gets a cap twice as long (loosen) or half as long."""
    data = yaml.safe_load(text)
    for rule in data["rules"]:
        effect = rule.get("access_ttl")
        if isinstance(effect, dict) and "cap" in effect:
            cap = parse_duration(effect["cap"])
            effect["cap"] = cap * 2 if loosen else max(60, cap // 2)
            if "floor" in effect and parse_duration(effect["floor"]) > effect["cap"]:
                effect["floor"] = effect["cap"]
            break
    return yaml.safe_dump(data, sort_keys=False)


def verdict(proofs: list[Any]) -> str:
    p = proofs[0]
    fields = {f.field: f.status for f in p.fields}
    unknown = sorted(k for k, v in fields.items() if v == "unknown")
    state = "LOOSENS" if p.loosens else "equivalent" if p.equivalent else "never loosens" if p.decided else "undecided"
    return state + (f" ({len(unknown)} unknown: {', '.join(unknown)})" if unknown else "")


def invariant_rows(label: str, policies: Any, policy: str, repeats: int, grid: int) -> list[str]:
    rows = []
    for name, when, always in INVARIANTS:
        seconds, result = timed(lambda: check_invariant(
            policies, policy, name, when, always, Location("bench", 1, 1), lambda *_: Location("bench", 1, 1),
            timeout=TIMEOUT, grid_scenarios=grid), repeats)
        how = f" by {result.how}" if result.how else ""
        rows.append(f"| {label} | invariant: {name} | {seconds:.2f} | {result.status}{how} |")
    return rows


def diff_rows(label: str, base: Any, head_text: Callable[[bool], Any], policy: str, repeats: int,
              grid: int) -> list[str]:
    rows = []
    for loosen in (True, False):
        head = head_text(loosen)
        seconds, proofs = timed(lambda: prove_diff(base, head, only=policy, timeout=TIMEOUT,
                                                   grid_scenarios=grid), repeats)
        change = "one cap doubled" if loosen else "one cap halved"
        rows.append(f"| {label} | diff --prove: {change} | {seconds:.2f} | {verdict(proofs)} |")
    return rows


def run(sizes: tuple[int, ...], repeats: int, bundled_policies: bool = True) -> list[str]:
    """The table rows: the bundled policies (unless told not to), then each synthetic size."""
    rows: list[str] = []
    if bundled_policies:
        rows += bundled_rows(repeats)
    for n in sizes:
        text = synthetic.generate(n).yaml
        base = load_sources({"synthetic.yaml": text})
        name = base.names[0]
        rows += diff_rows(f"synthetic, {n} rules", base,
                          lambda loosen: load_sources({"synthetic.yaml": one_rule_change(text, loosen)}),
                          name, repeats, grid=0)
        rows += invariant_rows(f"synthetic, {n} rules", base, name, repeats, grid=0)
    return rows


def bundled_rows(repeats: int) -> list[str]:
    bundled = load_policies(HERE.parent / "policies")
    sources = dict(bundled.sources)
    workforce = next(k for k in sources if k.endswith("workforce.yaml"))

    def bundled_head(loosen: bool) -> Any:
        changed = dict(sources)
        changed[workforce] = sources[workforce].replace(
            "access_ttl: {cap: 5m}", "access_ttl: {cap: 10m}" if loosen else "access_ttl: {cap: 3m}")
        return load_sources(changed)

    rows: list[str] = []
    for grid in (2000, 0):
        label = "bundled workforce" + ("" if grid else ", solver only")
        rows += diff_rows(label, bundled, bundled_head, "workforce", repeats, grid)
    for grid in (2000, 0):
        label = "bundled workforce" + ("" if grid else ", solver only")
        rows += invariant_rows(label, bundled, "workforce", repeats, grid)
    specs = yaml.safe_load((HERE.parent / "policies/tests/invariants.yaml").read_text())["invariants"]
    seconds, result = timed(lambda: [check_invariant(bundled, spec.get("policy", "workforce"), spec["name"],
                                                     spec.get("when", "true"), spec["always"], Location("b", 1, 1),
                                                     lambda *_: Location("b", 1, 1)) for spec in specs], repeats)
    proved = sum(r.status == "proved" for r in result)
    rows.append(f"| bundled | all {len(result)} invariants of policies/tests/invariants.yaml | {seconds:.2f} | "
                f"{proved} proved |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat; 10 and 100 rules only")
    parser.add_argument("--output", default=str(HERE / "RESULTS-prove.md"))
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    rows = run((10, 100) if args.quick else (10, 100, 1000), repeats)

    import z3

    cpu = platform.processor() or platform.machine()
    header = [
        "# Proof times",
        "",
        "Written by `python benchmarks/prove.py` (see its docstring). Wall-clock seconds, median of "
        f"{repeats} run{'s' * (repeats != 1)}, time limit {TIMEOUT:g}s per solver query; policy loading excluded. "
        "\"solver only\" skips the scenario grid that `diff --prove` and invariants try first; the synthetic "
        "policies are always solver only. What is proved: [docs/proofs.md](../docs/proofs.md).",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs (shared with other jobs)",
        f"- Python {platform.python_version()}, z3 {z3.get_version_string()}",
        "",
        "| policy | question | seconds | verdict |",
        "|---|---|---|---|",
    ]
    Path(args.output).write_text("\n".join(header + rows) + "\n")
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
