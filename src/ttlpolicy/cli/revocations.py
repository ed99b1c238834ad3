"""``ttlpolicy revocations list|lift``: the revocations a running service holds.

    ttlpolicy revocations list --kind subject
    ttlpolicy revocations lift rev_abc… --reason "false alarm"
"""

from __future__ import annotations

import argparse
from typing import Any

from ..state.revocation import KINDS
from .output import write_json
from .revoke import describe
from .service_client import ServiceError, add_connection_arguments, call, report_problem, show_entries


EXAMPLES = (
    "ttlpolicy revocations list --kind subject   # who is revoked, newest first",
    'ttlpolicy revocations lift rev_abc… --reason "false alarm"   # audited',
)


def register(sub: Any) -> None:
    parser = sub.add_parser("revocations", help="list or lift revocations",
                            description="List (GET /v1/revocations, every page) or lift (DELETE) revocations.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="list revocations, newest first")
    listing.add_argument("--kind", choices=KINDS, help="only revocations of this kind")
    listing.add_argument("--value", help="only revocations of this subject, client, tenant ...")
    listing.add_argument("--status", choices=["active", "lifted", "all"], default="active",
                         help="active (default), lifted or all")
    add_connection_arguments(listing)
    listing.set_defaults(run=run_list)
    lift = actions.add_parser("lift", help="lift a revocation (audited)")
    lift.add_argument("id", help="the revocation's id, from the list")
    lift.add_argument("--reason", help="why it is lifted")
    add_connection_arguments(lift)
    lift.set_defaults(run=run_lift)


def run_list(args: argparse.Namespace) -> int:
    entries: list[dict[str, Any]] = []
    cursor = None
    try:
        while True:
            page = call(args, "GET", "/v1/revocations", query={"kind": args.kind, "value": args.value,
                                                               "status": args.status, "limit": "1000",
                                                               "cursor": cursor})
            entries += page["revocations"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    except ServiceError as exc:
        return report_problem(args, exc)
    return show_entries(args, "revocations", entries, listed)


def listed(entry: dict[str, Any]) -> str:
    """A revocation's line in a listing: who lifted it, if it was lifted."""
    return describe(entry) + (f"  lifted by {entry['lifted_by']}" if entry["status"] == "lifted" else "")


def run_lift(args: argparse.Namespace) -> int:
    try:
        entry = call(args, "DELETE", f"/v1/revocations/{args.id}", query={"reason": args.reason})
    except ServiceError as exc:
        return report_problem(args, exc)
    if args.format == "json":
        write_json(entry)
    else:
        print(f"lifted: {describe(entry)}")
    return 0
