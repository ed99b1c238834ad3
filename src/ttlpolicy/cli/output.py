"""Rendering shared by the subcommands: JSON, and decisions and problems as text."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, TextIO

from ..durations import format_duration


def write_json(data: Any, stream: TextIO | None = None) -> None:
    # Resolve sys.stdout at call time: it is replaced under test capture and redirection.
    (stream or sys.stdout).write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def missing_policies_hint(path: str | os.PathLike[str], how: str = "pass --policies DIR") -> str:
    """What to do when the policy directory is not there (usually: run from elsewhere), else ""."""
    if os.path.exists(path):
        return ""
    return (f"; there is no {os.fspath(path)!r} here ({os.getcwd()}): {how}, run from the directory "
            f"that holds it, or start one with `ttlpolicy init`")


# Words that carry the verdict in the text outputs, and their colours (ANSI SGR codes).
_HIGHLIGHTS = (
    (re.compile(r"\berror(?=\[)|^FAIL\b|^DENY\b|\[LOOSENS\]|\b[1-9]\d* failed\b", re.M), "1;31"),
    (re.compile(r"\bwarning(?=\[)", re.M), "33"),
    (re.compile(r"^ALLOW\b|^ok\b|\[tightens\]|\b0 failed\b", re.M), "32"),
)


def colour_enabled(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colourise(text: str, stream: TextIO | None = None) -> str:
    """``text`` with its verdict words coloured when ``stream`` (default stdout) is a terminal."""
    if not colour_enabled(stream or sys.stdout):
        return text
    for pattern, code in _HIGHLIGHTS:
        text = pattern.sub(lambda match: f"\033[{code}m{match.group(0)}\033[0m", text)
    return text


def plural(count: int, word: str) -> str:
    """``1 rule``, ``2 rules``, ``0 rules``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


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
