"""``ttlpolicy lint [PATH...]``: load, validate and type-check policies; report every problem."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .. import PolicyError, load_policies
from ..errors import Problem, render_text
from . import lint_formats
from .output import write_json

# Machine formats register here (github and sarif live in their own modules).
FORMATS: dict[str, Callable[[list[Problem], dict[str, Any]], str]] = {}
FORMATS.update(lint_formats.FORMATS)


def register(sub: Any) -> None:
    parser = sub.add_parser("lint", help="validate and type-check policy files",
                            description="Validate policies against the schema, type-check their CEL and run the "
                                        "semantic checks. Exit 0 clean (warnings allowed unless --strict), "
                                        "1 errors found, 2 usage or I/O error.")
    parser.add_argument("paths", nargs="*", default=["policies"], metavar="PATH",
                        help="policy directories or files (default: policies/)")
    parser.add_argument("--format", choices=["text", "json", *FORMATS], default="text")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) on warnings too, e.g. loosening rules that need a reviewer's sign-off; "
                             "a rule acknowledges an intended warning with `allow: [{code, reason}]`")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        policies = load_policies(*args.paths)
        problems, sources, summary = list(policies.warnings), policies.sources, [p.summary() for p in policies]
    except PolicyError as exc:
        problems, sources, summary = exc.problems, exc.sources, []
    io_only = problems and all(p.code in ("io-error", "no-policies") for p in problems)
    # Notes (warnings a rule acknowledges with a reason) are shown but never fail, not even --strict.
    errors = [p for p in problems if p.severity == "error" or (args.strict and p.severity == "warning")]
    if args.format == "json":
        write_json({"ok": not errors, "problems": [p.to_dict() for p in problems], "policies": summary})
    elif args.format in FORMATS:
        sys.stdout.write(FORMATS[args.format](problems, sources))
    else:
        if problems:
            print(render_text(problems, sources))
        for policy in summary:
            print(f"ok: policy {policy['name']} ({policy['rules']} rules, {policy['digest'][:19]})")
    if io_only:
        return 2
    return 1 if errors else 0
