"""The fast mutation subset CI runs: every mutant of the combination rules must be killed.

mutmut mutates the functions of ``ttlpolicy.evaluate`` that combine the effects of the matching
rules (factors, floors, caps, tier ceiling, limits, idle timeout, session, deny, the fail-safe
path of a rule whose condition failed) and runs tests/test_evaluate.py and
tests/test_strictest_wins.py against each mutant. A mutant that survives is a loosening bug
the suite would let through, unless tests/mutation/equivalent.txt explains why it cannot be
told apart from the original. The full run over the whole decision path is ``make mutation``
(docs/mutation.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_mutant_of_the_combination_rules_survives() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mutation.py"), "--check", "combination"],
                          capture_output=True, text=True, timeout=1800)
    survivors = [line for line in done.stdout.splitlines() if line.startswith("SURVIVED")]
    assert done.returncode == 0, "\n".join(survivors) or done.stdout[-3000:] + done.stderr[-3000:]
