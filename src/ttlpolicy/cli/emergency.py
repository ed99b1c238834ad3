"""``ttlpolicy emergency start|list|end``: time-boxed ceilings on a running service.

    ttlpolicy emergency start --scope 'tier == "finance"' --access 5m --refresh 0s --for 24h --reason INC-42
    ttlpolicy emergency list
    ttlpolicy emergency end em_1a2b…
"""

from __future__ import annotations

import argparse
from typing import Any

from .output import write_json
from .service_client import ServiceError, add_connection_arguments, call, report_problem, show_entries


EXAMPLES = (
    "ttlpolicy emergency start --scope 'tier == \"finance\"' --access 5m --refresh 0s --for 24h --reason INC-42",
    "ttlpolicy emergency list   # what is in force, and until when",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("emergency", help="start, list or end emergency ceilings",
                            description="Emergency ceilings (POST/GET/DELETE /v1/emergencies): they only tighten, "
                                        "and they always end.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    start = actions.add_parser("start", help="start an emergency")
    start.add_argument("--scope", required=True, help="CEL over the policy's attributes, e.g. 'tier == \"finance\"'")
    start.add_argument("--reason", required=True, help="the incident id")
    end = start.add_mutually_exclusive_group(required=True)
    end.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 24h")
    end.add_argument("--until", metavar="RFC3339", help="when it ends")
    start.add_argument("--access", metavar="DURATION", help="ceiling on access tokens")
    start.add_argument("--refresh", metavar="DURATION", help="ceiling on refresh tokens (0s: none)")
    start.add_argument("--deny", metavar="REASON", help="deny issuance")
    start.add_argument("--step-up", metavar="REASON", help="require step-up authentication")
    start.add_argument("--policy", action="append", dest="policies", metavar="NAME",
                       help="only this policy (repeatable; default: every policy)")
    add_connection_arguments(start)
    start.set_defaults(run=run_start)
    listing = actions.add_parser("list", help="list emergencies")
    listing.add_argument("--status", choices=["active", "ended", "all"], default="active",
                         help="active (default), ended or all")
    add_connection_arguments(listing)
    listing.set_defaults(run=run_list)
    stop = actions.add_parser("end", help="end an emergency early")
    stop.add_argument("id")
    add_connection_arguments(stop)
    stop.set_defaults(run=run_end)


def describe(e: dict[str, Any]) -> str:
    return (f"{e['id']}  {e['status']}  {e['reason']}: {e['effects']} where {e['scope']}  "
            f"(until {e['ended_at'] or e['ends_at']}; by {e['created_by']})")


def run_start(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"scope": args.scope, "reason": args.reason}
    for field, value in (("duration", args.duration), ("ends_at", args.until), ("access_ttl", args.access),
                         ("refresh_ttl", args.refresh), ("deny", args.deny), ("step_up", args.step_up),
                         ("policies", args.policies)):
        if value is not None:
            body[field] = value
    try:
        entry = call(args, "POST", "/v1/emergencies", body)
    except ServiceError as exc:
        return report_problem(args, exc)
    if args.format == "json":
        write_json(entry)
    else:
        print(f"started: {describe(entry)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        entries = call(args, "GET", "/v1/emergencies", query={"status": args.status})["emergencies"]
    except ServiceError as exc:
        return report_problem(args, exc)
    return show_entries(args, "emergencies", entries, describe)


def run_end(args: argparse.Namespace) -> int:
    try:
        entry = call(args, "DELETE", f"/v1/emergencies/{args.id}")
    except ServiceError as exc:
        return report_problem(args, exc)
    if args.format == "json":
        write_json(entry)
    else:
        print(f"ended: {describe(entry)}")
    return 0
