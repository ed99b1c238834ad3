"""``ttlpolicy decide``: one decision for a context read from a file or stdin."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import ContextError, PolicyError, PolicySet, UnknownPolicyError, load_policies
from ..decision import Decision
from ..state import StoreUnavailable, StoreURLError, open_store
from .context_input import ContextInputError, in_context, read_context
from .output import colourise, decision_text, fail, missing_policies_hint, problem_text, report, write_json


EXAMPLES = (
    'ttlpolicy decide --context examples/contexts/managed-laptop-office-mfa.json --format text',
    'echo \'{"tier": "finance"}\' | ttlpolicy decide --now 2025-03-08T23:00:00+01:00   # at a weekend night',
    "ttlpolicy decide --context ctx.json --policy machine --explain   # every rule's outcome too",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("decide", help="decide token lifetimes for one context",
                            description="Decide lifetimes for a context (JSON). Exit 0 with a decision (allow or "
                                        "deny), 1 when the context violates the declared attributes, 2 for usage, "
                                        "I/O or policy errors.")
    parser.add_argument("--policies", default="policies", metavar="DIR", help="policy directory (default: policies/)")
    parser.add_argument("--context", default="-", metavar="FILE", help="context JSON file; - or omitted: stdin")
    parser.add_argument("--policy", metavar="NAME", help="policy to use (default: the set's default policy)")
    parser.add_argument("--now", metavar="RFC3339", help="decision instant (default: now)")
    parser.add_argument("--explain", action="store_true", help="include every rule's outcome, matched or not")
    # default None, read as json: a decision is JSON unless text is asked for, but only an explicit
    # --format json turns the command's problems into JSON as well (docs/errors.md#the-command-line).
    parser.add_argument("--format", choices=["json", "text"], default=None,
                        help="json (default; what the API returns) or text (the verdict and its trace, for people)")
    parser.add_argument("--state", metavar="URL", help="also apply a state store (sqlite:///… or redis://…): its "
                        "emergencies, and count the policy's rate limits (docs/state.md); default: no state")
    parser.add_argument("--dry-run", action="store_true", help="with --state: read state but count nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    args.format = args.format or "json"
    if args.context == "-" and sys.stdin.isatty():  # waiting silently for a context nobody is typing helps no one
        return fail("usage", "no context: pass --context FILE (a JSON object, see examples/contexts/), or pipe one "
                             "in: echo '{\"tier\": \"finance\"}' | ttlpolicy decide")
    try:
        context = read_context(args.context)
    except ContextInputError as exc:
        return report([exc.problem], sources=exc.sources)
    try:
        policies = load_policies(args.policies)
    except PolicyError as exc:
        return fail("policy-load-failed", f"cannot load policies from {args.policies}"
                    f"{missing_policies_hint(args.policies)}", found=exc)
    if args.dry_run and not args.state:
        return fail("usage", "--dry-run only means something with --state (without it nothing is ever counted)")
    try:
        if args.state:
            decision = _decide_with_state(args, policies, context)
        else:
            decision = policies.decide(context, policy=args.policy, now=args.now, explain=args.explain)
    except StoreURLError as exc:
        return fail("state-url", f"--state: {exc}")
    except UnknownPolicyError as exc:
        return fail("unknown-policy", str(exc))
    except ContextError as exc:
        if args.format == "json":
            write_json({"ok": False, "error": "invalid-context", **exc.to_dict()})
        else:  # the answer for this context (exit 1), so on stdout
            print(colourise(problem_text(in_context(exc.problems))))
        return 1
    except ValueError as exc:  # --now that is not RFC 3339
        return fail("usage", f"--now: {exc}")
    if args.format == "json":
        write_json(decision.to_dict())
    else:
        print(colourise(decision_text(decision.to_dict())))
    return 0


def _decide_with_state(args: argparse.Namespace, policies: PolicySet, context: Any) -> Decision:
    """The service's decision: the policy, then the store's emergencies and rate limits (a store
    that cannot answer gives the degraded ceiling, as in the service)."""
    from ..state.runtime import StateRuntime

    try:
        store = open_store(args.state)
    except StoreUnavailable as exc:
        raise StoreURLError(str(exc)) from None
    runtime = StateRuntime(store)
    try:
        runtime.poll()
        return runtime.decide(policies, context, policy=args.policy, now=args.now, explain=args.explain,
                              caller="cli", consume=not args.dry_run)
    finally:
        runtime.close()
