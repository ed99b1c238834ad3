"""``ttlpolicy verify [PATH...]``: prove the invariants of policy test files.

Each invariant is proved for every valid request, or refuted with a request that breaks it
(replayed through the real evaluator), or left ``unknown`` with the reason and the place
(see :mod:`ttlpolicy.prove.invariants` and docs/proofs.md). Exit 0 when every invariant is
proved, 1 when one is refuted, unknown or wrong, 2 for usage, I/O and invalid files.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import test as test_command

EXAMPLES = (
    "ttlpolicy verify                                # the invariants in policies/tests/",
    "ttlpolicy verify policies --format junit > invariants.xml   # as a CI test report",
    "ttlpolicy verify --run finance --timeout 30     # invariants whose name says 'finance', 30s per query",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("verify", help="prove the invariants of policy test files (SMT solver)",
                            description="Prove every invariant of the test files for every valid request, or "
                                        "show a request that breaks it. Exit 0 all proved, 1 refuted, unknown or "
                                        "wrong invariants, 2 usage, I/O or invalid test or policy files.")
    test_command.add_test_files(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="list proved invariants too")
    parser.add_argument("--run", metavar="PATTERN", dest="run_pattern",
                        help="only the invariants whose name matches: a glob such as 'finance*', else a "
                             "substring (case-insensitive)")
    test_command.add_timeout(parser)
    parser.set_defaults(run=run, min_coverage=0.0)


def run(args: argparse.Namespace) -> int:
    return test_command.run_once(args, cases=False)
