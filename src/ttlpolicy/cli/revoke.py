"""``ttlpolicy revoke KIND [VALUE] --reason R``: revoke tokens on a running service.

    ttlpolicy revoke subject alice --reason "INC-42: phished"
    ttlpolicy revoke all --issued-before 2026-12-01T02:10:00Z --reason "INC-42: signing key leaked"
    ttlpolicy revoke token 5bd1… --expires-at 2026-12-01T03:00:00Z --reason "lost laptop"
"""

from __future__ import annotations

import argparse
from typing import Any

from ..state.revocation import KINDS
from .output import fail, write_json
from .service_client import ServiceError, add_connection_arguments, call, report_problem


EXAMPLES = (
    'ttlpolicy revoke subject alice --reason "INC-42: phished"   # every token alice holds, on every replica',
    'ttlpolicy revoke all --issued-before 2026-12-01T02:10:00Z --reason "INC-42: signing key leaked"',
)


def register(sub: Any) -> None:
    parser = sub.add_parser("revoke", help="revoke a token, family, subject, client, tenant or everything",
                            description="Revoke tokens on a running service (POST /v1/revocations). Every kind but "
                                        "'token' revokes what was issued up to --issued-before (default: now).")
    parser.add_argument("kind", choices=KINDS, help="what to revoke: " + ", ".join(KINDS))
    parser.add_argument("value", nargs="?", help="the jti, sid, subject, client id or tenant (none for 'all')")
    parser.add_argument("--reason", required=True, help="why: an incident id, a ticket")
    parser.add_argument("--issued-before", metavar="RFC3339", help="revoke what was issued up to this instant")
    parser.add_argument("--expires-at", metavar="RFC3339", help="for a token: its exp (keeps the entry no longer)")
    add_connection_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.kind != "all" and not args.value:
        return fail("usage", f"revoke {args.kind} needs a value (the {args.kind}'s identifier)")
    if args.kind == "all" and args.value:
        return fail("usage", "revoke all takes no value")
    body: dict[str, Any] = {"kind": args.kind, "reason": args.reason}
    if args.value:
        body["value"] = args.value
    if args.issued_before:
        body["issued_before"] = args.issued_before
    if args.expires_at:
        body["expires_at"] = args.expires_at
    try:
        entry = call(args, "POST", "/v1/revocations", body)
    except ServiceError as exc:
        return report_problem(args, exc)
    if args.format == "json":
        write_json(entry)
    else:
        print(("revoked" if entry["created"] else "already revoked") + f": {describe(entry)}")
    return 0


def describe(entry: dict[str, Any]) -> str:
    what = "every token" if entry["kind"] == "all" else f"{entry['kind']} {entry['value']}"
    moment = f" issued up to {entry['issued_before']}" if entry.get("issued_before") else ""
    return f"{entry['id']}  {what}{moment}  ({entry['reason']}; by {entry['created_by']})"
