"""Rendering shared by the subcommands: JSON, and decisions and problems as text."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from ..durations import format_duration


def write_json(data: Any, stream: TextIO | None = None) -> None:
    # Resolve sys.stdout at call time: it is replaced under test capture and redirection.
    (stream or sys.stdout).write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def fail(message: str, code: int = 2) -> int:
    print(f"ttlpolicy: error: {message}", file=sys.stderr)
    return code


def _value(target: str, value: Any) -> str:
    if isinstance(value, float) and target.endswith("ttl"):
        return f"× {value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return format_duration(value)
    return "" if value is None else str(value)


def decision_text(d: dict[str, Any]) -> str:
    """A decision for people: the verdict, the lifetimes, and the trace behind each number."""
    policy = d["policy"]
    lines = [f"policy {policy['name']} ({policy['digest'][:19]})" + (f"  tier {d['tier']}" if d.get("tier") else "")]
    verdict = "ALLOW" if d["allow"] else "DENY"
    refresh = d["refresh"]
    settings = [f"rotation {'on' if refresh['rotation'] else 'off'}"]
    if refresh["idle_timeout"]:
        settings.append(f"idle {format_duration(refresh['idle_timeout'])}")
    if refresh["max_session"]:
        settings.append(f"session {format_duration(refresh['max_session'])}")
    if refresh.get("sender_constrained"):
        settings.append("sender-constrained")
    refresh_text = format_duration(d["refresh_ttl"]) if d["refresh_ttl"] else "none"
    lines.append(f"{verdict}  access {format_duration(d['access_ttl'])}  refresh {refresh_text}  "
                 f"({', '.join(settings)})")
    if d.get("deny_reason"):
        lines.append(f"deny: {d['deny_reason']}")
    if d.get("step_up"):
        lines.append("step-up required: " + "; ".join(d["step_up_reasons"]))
    lines.append("matched: " + (", ".join(d["matched"]) or "no rules"))
    for error in d.get("errors", []):
        lines.append(f"error in rule {error['rule']}: {error.get('message')} — {error.get('applied', '')}")
    lines.append("trace:")
    for step in d["trace"]:
        operand = _value(step["target"], step["value"])
        by = step.get("rule") or step.get("source") or ""
        lines.append(f"  {step['target']:<12} {step['step']:<13} {operand:<10} → "
                     f"{format_duration(step['result']):<8} {by}")
    for outcome in d.get("rules") or []:
        if outcome["outcome"] == "no_match":
            lines.append(f"  (rule {outcome['rule']}: no match)")
    return "\n".join(lines)
