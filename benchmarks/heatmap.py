#!/usr/bin/env python3
"""How long does a heat-map take? The issue's target: a 24 × 10 grid (240 decisions, each with
its trace) in under 100 ms on the bundled policy.

    python benchmarks/heatmap.py                 # writes benchmarks/HEATMAP.md
    python benchmarks/heatmap.py --repeats 5 --no-write

Measured, each as the median and 90th percentile of ``--repeats`` runs after a warm-up:

* ``heatmap()``: the 240 decisions (context validation, derived attributes, every rule, the
  trace) for ``time.hour`` × ``user.risk`` (0.0, 0.1 … 0.9), tier finance fixed;
* ``+ to_dict()``: plus the JSON-ready document the API sends (every decision's dict, colours);
* ``POST /v1/playground/grid``: the whole request through the Starlette app in-process
  (credentials, body, thread hand-off, orjson), as the page calls it;
* ``heatmap SVG``: ``ttlpolicy heatmap --format svg`` without process start-up.
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
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_MS = 100.0
RISK = [round(i / 10, 1) for i in range(10)]


def measure(work: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median and p90 wall time, and median CPU time of this process (ms). On a shared machine the
    wall-clock tail is mostly other processes; CPU time is what the work itself costs."""
    work()  # warm-up: imports, caches
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    wall.sort()
    return statistics.median(wall), wall[min(len(wall) - 1, int(len(wall) * 0.9))], statistics.median(cpu)


def run(repeats: int) -> list[tuple[str, float, float, float]]:
    from starlette.testclient import TestClient

    from ttlpolicy import load_policies
    from ttlpolicy.heatmap import heatmap, make_axis
    from ttlpolicy.heatmap_svg import heatmap_svg
    from ttlpolicy.server import Settings, create_app

    policies = load_policies(ROOT / "policies")
    policy = policies.get()
    risk = make_axis(policy, "user.risk", RISK, "y")
    fixed = {"tier": "finance"}
    grid = heatmap(policy, "time.hour", risk, fixed)
    assert len(grid.cells) == 240 and all(c.decision is not None and c.decision.trace for c in grid.cells)
    app = create_app(Settings.model_validate({"policies": ROOT / "policies", "decision_log": {"sink": "off"},
                                              "reload": {"watch": False}}))
    body = {"x": "time.hour", "y": {"attribute": "user.risk", "values": RISK}, "fixed": fixed}
    with TestClient(app) as client:
        assert len(client.post("/v1/playground/grid", json=body).json()["cells"]) == 240
        return [
            ("heatmap(): 240 decisions with traces", *measure(lambda: heatmap(policy, "time.hour", risk, fixed),
                                                              repeats)),
            ("heatmap() + to_dict(): the API's document",
             *measure(lambda: heatmap(policy, "time.hour", risk, fixed).to_dict(), repeats)),
            ("POST /v1/playground/grid (in-process HTTP)",
             *measure(lambda: client.post("/v1/playground/grid", json=body), repeats)),
            ("heatmap() + SVG", *measure(lambda: heatmap_svg(heatmap(policy, "time.hour", risk, fixed)), repeats)),
        ]


def report(rows: list[tuple[str, float, float, float]], repeats: int) -> str:
    from ttlpolicy import __version__

    lines = ["# Heat-map benchmark", "",
             f"`python benchmarks/heatmap.py --repeats {repeats}` on {platform.python_implementation()} "
             f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs (shared), ttlpolicy "
             f"{__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
             f"{os.getloadavg()[0]:.1f} while it ran.", "",
             "A 24 × 10 grid: `time.hour` × `user.risk` (0.0 … 0.9) of the bundled `workforce` policy with "
             "`tier=finance` fixed; 240 decisions, each with its trace. Target: under "
             f"{TARGET_MS:g} ms.", "",
             "The verdict is on the median wall time; the p90 on a shared machine is mostly other "
             "processes, which the CPU time (this process only) leaves out.", "",
             "| what | median | p90 | CPU median | target (median) |", "|---|---:|---:|---:|---|"]
    for name, median, p90, cpu in rows:
        verdict = "" if "SVG" in name else ("met" if median < TARGET_MS else "**missed**")
        lines.append(f"| {name} | {median:.1f} ms | {p90:.1f} ms | {cpu:.1f} ms | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write HEATMAP.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    rows = run(args.repeats)
    text = report(rows, args.repeats)
    print(text)
    if not args.no_write:
        (HERE / "HEATMAP.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
