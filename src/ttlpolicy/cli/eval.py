"""``ttlpolicy eval 'CEL' --context ctx.json``: one expression (or one rule) against one context.

Like ``opa eval``: what a condition sees and gives, without writing a test case — the
expression is type-checked against the policy's declared attributes, evaluated on the
context (validated and with the derived attributes, exactly as a decision would see it), and
printed with its type, its value and the attributes it read.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any, Mapping

from .context_input import ContextInputError, in_context, read_context
from .output import fail, missing_policies_hint, report, write_json

EXAMPLES = (
    "ttlpolicy eval 'time.hour < 7 || time.weekday in [\"sat\", \"sun\"]' --context ctx.json --now 2025-03-08T12:00:00Z",
    "ttlpolicy eval --rule off-hours --context examples/contexts/finance-unmanaged-laptop-night.json",
    "echo '{\"user\": {\"risk\": 0.4}}' | ttlpolicy eval '1.0 - user.risk'   # a factor's value",
)

_ABSENT = object()


def register(sub: Any) -> None:
    parser = sub.add_parser("eval", help="evaluate one CEL expression or one rule against a context",
                            description="Type-check EXPRESSION against the policy's declared attributes, evaluate it "
                                        "on the context (validated, with derived attributes such as time.hour and "
                                        "location.zone) and print its type, value and the attributes it read. With "
                                        "--rule, the rule's condition and what the rule would do. Exit 0, 1 when "
                                        "the expression or context is refused or evaluation fails, 2 for usage or "
                                        "I/O errors.")
    parser.add_argument("expression", nargs="?", metavar="EXPRESSION", help="a CEL expression (quote it for the shell)")
    parser.add_argument("--rule", metavar="NAME", help="evaluate this rule's `when` instead of an expression")
    parser.add_argument("--context", default="-", metavar="FILE",
                        help="context JSON file; - or omitted: stdin ({} when stdin is a terminal)")
    parser.add_argument("--policies", default="policies", metavar="DIR", help="policy directory (default: policies/)")
    parser.add_argument("--policy", metavar="NAME", help="policy whose attributes apply (default: the default policy)")
    parser.add_argument("--now", metavar="RFC3339", help="the instant time.* is derived from (default: now)")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text for people (default) or json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import ContextError, PolicyError, UnknownPolicyError, load_policies
    from ..cel.native import compile_expression
    from ..cel.parse import CelSyntaxError, parse
    from ..cel.typecheck import check
    from ..errors import Location, Problem
    from ..policyset import resolve_now

    if (args.expression is None) == (args.rule is None):
        return fail("usage", "give an EXPRESSION or --rule NAME (one of them)")
    try:
        context = read_context(args.context, empty="{}", require_object=True)
    except ContextInputError as exc:
        return report([exc.problem], sources=exc.sources)
    try:
        policies = load_policies(args.policies)
        policy = policies.get(args.policy)
    except PolicyError as exc:
        return fail("policy-load-failed", f"cannot load policies from {args.policies}"
                    f"{missing_policies_hint(args.policies)}", found=exc)
    except UnknownPolicyError as exc:
        return fail("unknown-policy", str(exc))
    rule = None
    if args.rule is not None:
        rule = next((r for r in policy.rules if r.name == args.rule), None)
        if rule is None:
            from ..suggest import did_you_mean

            names = [r.name for r in policy.rules]
            return fail("unknown-rule", f"policy {policy.name} has no rule {args.rule!r}"
                        f"{did_you_mean(args.rule, names)} (rules: {', '.join(names)})")
    text = rule.when if rule is not None else args.expression
    source = f"rule {rule.name}" if rule is not None else "<expression>"
    try:
        now = resolve_now(args.now)
    except ValueError as exc:
        return fail("usage", f"--now: {exc}")
    try:
        tree = parse(text)
    except CelSyntaxError as exc:
        issue = exc.issue
        return report([Problem(issue.code, issue.message, Location(source, issue.line, issue.column))], 1,
                      {source: text})
    checked = check(tree, policy.attributes)
    if checked.issues:
        return report([Problem(i.code, i.message, Location(source, i.line, i.column)) for i in checked.issues], 1,
                      {source: text})
    try:
        activation = policy.context.activation(context, now)
    except ContextError as exc:
        return report(in_context(exc.problems), 1)
    reads = {name: _json_ready(_read(activation, name)) for name in sorted(checked.attributes)}
    try:
        value, error = compile_expression(tree)(activation), None
    except Exception as exc:  # noqa: BLE001 - an evaluation error is the answer here, not a crash
        value, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    result: dict[str, Any] = {"expression": text, "policy": policy.name, "type": str(checked.type),
                              "value": _json_ready(value), "error": error, "reads": reads}
    if rule is not None:
        result["rule"] = rule.name
        result["matched"] = value is True
        result["effects"] = _effects(policy, rule.name)
    if args.format == "json":
        write_json(result)
    else:
        print(_text(result))
    return 1 if error else 0


def _read(activation: Mapping[str, Any], name: str) -> Any:
    value: Any = activation
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _json_ready(value: Any) -> Any:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _effects(policy: Any, name: str) -> dict[str, Any]:
    for rule in policy.document.rules:
        if rule.name == name:
            data = rule.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
            return {k: v for k, v in data.items() if k not in ("name", "description", "when", "allow")}
    return {}


def _text(result: dict[str, Any]) -> str:
    lines = []
    if "rule" in result:
        lines.append(f"rule {result['rule']} (policy {result['policy']}): "
                     f"{'matches' if result['matched'] else 'does not match'}")
        lines.append(f"when:  {' '.join(result['expression'].split())}")
    if result["error"]:
        lines.append(f"error: {result['error']} (a rule with this condition applies only its tightening effects)")
    else:
        lines.append(f"type:  {result['type']}")
        lines.append(f"value: {json.dumps(result['value'], ensure_ascii=False)}")
    if result["reads"]:
        lines.append("reads:")
        width = max(map(len, result["reads"]))
        lines += [f"  {name:<{width}}  {json.dumps(value, ensure_ascii=False)}" for name, value in result["reads"].items()]
    else:
        lines.append("reads: nothing from the context")
    if result.get("matched") and result.get("effects"):
        lines.append("effects: " + json.dumps(result["effects"], ensure_ascii=False))
    return "\n".join(lines)
