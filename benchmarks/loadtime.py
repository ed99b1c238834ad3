"""Load and lint time for synthetic policies of 10, 100 and 1,000 rules, and memory after load.

*load*: ``load_sources`` in-process (parse YAML, JSON Schema, semantic checks, CEL type-check and
compile), median of a few runs. *lint*: the ``ttlpolicy lint`` command as CI runs it, wall time
including interpreter start-up. *RSS*: a fresh process that imports ttlpolicy and loads the
policy, resident memory from /proc.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import synthetic


@dataclass
class LoadResult:
    rules: int
    load_s: float
    lint_s: float | None
    lint_exit: int | None
    rss_mb: float | None


_RSS = """
import sys
from ttlpolicy import load_policies
load_policies(sys.argv[1])
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) / 1024)
"""


def run_load(sizes: tuple[int, ...], repeats: int) -> list[LoadResult]:
    from ttlpolicy import load_sources
    ttlpolicy = shutil.which("ttlpolicy", path=os.path.dirname(sys.executable)) or shutil.which("ttlpolicy")
    results = []
    with tempfile.TemporaryDirectory(prefix="ttlpolicy-load-") as tmp:
        for n in sizes:
            syn = synthetic.generate(n)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                load_sources({f"synthetic-{n}.yaml": syn.yaml})
                times.append(time.perf_counter() - start)
            path = Path(tmp) / f"synthetic-{n}.yaml"
            path.write_text(syn.yaml)
            lint_s = lint_exit = rss = None
            if ttlpolicy is not None:
                start = time.perf_counter()
                done = subprocess.run([ttlpolicy, "lint", str(path)], capture_output=True, text=True)
                lint_s, lint_exit = time.perf_counter() - start, done.returncode
            out = subprocess.run([sys.executable, "-c", _RSS, str(path)], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                rss = float(out.stdout.strip().splitlines()[-1])
            results.append(LoadResult(n, statistics.median(times), lint_s, lint_exit, rss))
    return results
