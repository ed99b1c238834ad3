"""``ttlpolicy report LOG...``: a usage report over decision logs and event logs.

Exit 0 with a report (skipped lines are listed on stderr at their file:line and in the report),
2 for usage or I/O errors and unloadable policies.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from ..errors import Location, PolicyError
from .output import fail, warn, write_json


EXAMPLES = (
    "ttlpolicy report decisions.jsonl -o report.html           # who got which lifetimes, and why",
    "ttlpolicy report decisions.jsonl events.jsonl --from 2025-03-01T00:00:00Z --policies policies --format json",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("report", help="usage report over decision and event logs (HTML or JSON)",
                            description="Sum up decision logs and event logs (JSON lines, .gz too): usage over time, "
                                        "countries, clients, lifetimes by tier and policy, deny and step-up reasons, "
                                        "error patterns, the rules matched most and never. The HTML is one "
                                        "self-contained file.")
    parser.add_argument("logs", nargs="+", metavar="LOG", help="decision-log or event-log files")
    parser.add_argument("--from", dest="start", metavar="RFC3339", help="only records at or after this instant")
    parser.add_argument("--to", dest="end", metavar="RFC3339", help="only records before this instant")
    parser.add_argument("--policies", metavar="DIR", help="policy directory: also list the rules that never matched")
    parser.add_argument("--format", choices=["html", "json"], default="html",
                        help="html (default; a page to open in a browser) or json")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.set_defaults(run=run)


def _instant(flag: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    from ..context import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from ..report import build_report, render_html

    try:
        start, end = _instant("--from", args.start), _instant("--to", args.end)
    except ValueError as exc:
        return fail("usage", str(exc))
    if start is not None and end is not None and end <= start:
        return fail("usage", "--to must be after --from")
    known: dict[str, list[str]] | None = None
    if args.policies:
        from .. import load_policies

        try:
            policies = load_policies(args.policies)
        except PolicyError as exc:
            return fail("policy-load-failed", f"cannot load policies from {args.policies}", found=exc)
        known = {p.name: [r.name for r in p.rules] for p in policies}
    try:
        report = build_report(args.logs, start, end, known)
    except OSError as exc:
        return fail("io-error", f"cannot read {exc.filename or 'a log'}: {exc.strerror or exc}")
    for skipped in report["skipped"]["first"]:
        warn("report-skipped-line", skipped["message"], Location(skipped["file"], skipped["line"], 1))
    if report["skipped"]["total"] > len(report["skipped"]["first"]):
        warn("report-skipped-line", f"{report['skipped']['total']} lines skipped in all")
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as file:
                if args.format == "json":
                    write_json(report, file)
                else:
                    file.write(render_html(report))
        elif args.format == "json":
            write_json(report)
        else:
            sys.stdout.write(render_html(report))
    except OSError as exc:
        return fail("io-error", f"cannot write {args.output}: {exc.strerror or exc}")
    return 0
