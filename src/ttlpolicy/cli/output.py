"""Rendering shared by the subcommands: JSON, and decisions and problems as text."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterable, Iterator, Mapping, TextIO

from ..durations import format_duration
from ..errors import Location, PolicyError, Problem, render_lines, render_text, severity_of


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


# Whether the running command was asked for ``--format json``: its problems are then one JSON
# document on stdout instead of text on stderr. ``main`` sets it once from the parsed arguments
# (a context variable rather than a parameter threaded through every helper that can fail; it is
# reset when the command returns, so in-process callers and tests never see a stale value).
_PROBLEMS_AS_JSON: ContextVar[bool] = ContextVar("problems_as_json", default=False)


@contextmanager
def problems_as_json(enabled: bool) -> Iterator[None]:
    """Within this block, :func:`report` writes JSON (when ``enabled``) or text."""
    token = _PROBLEMS_AS_JSON.set(enabled)
    try:
        yield
    finally:
        _PROBLEMS_AS_JSON.reset(token)


def problem_text(problems: Iterable[Problem], sources: Mapping[str, str] | None = None) -> str:
    """Problems for people, as lint shows them: ``file:line:col: error[code]: message`` with the
    source line and a caret when located; ``PATH: error[code]: message`` at a path of the input
    (``context.user.risk``, ``y.values[1]``); else ``ttlpolicy: error[code]: message``."""
    return render_lines(problems, sources, unlocated="ttlpolicy")


def report(problems: Iterable[Problem], exit_code: int = 2, sources: Mapping[str, str] | None = None, *,
           listed: Iterable[Problem] = ()) -> int:
    """Show the problems that end a command and return its exit code: the one way the CLI reports.

    With ``--format json``: ``{"ok": false, "problems": [...]}`` on stdout (each problem's
    :meth:`~ttlpolicy.errors.Problem.to_dict`, as lint's JSON), so scripts match on ``code``.
    Otherwise text on stderr (:func:`problem_text`). ``listed``: the problems of policy or test
    files that led to these, shown first as lint shows them (with its summary line)."""
    problems, listed = list(problems), list(listed)
    if _PROBLEMS_AS_JSON.get():
        write_json({"ok": False, "problems": [p.to_dict() for p in [*listed, *problems]]})
        return exit_code
    parts = [render_text(listed, sources)] if listed else []
    if problems:
        parts.append(problem_text(problems, sources))
    print(colourise("\n".join(parts), sys.stderr), file=sys.stderr)
    return exit_code


def fail(code: str, message: str, exit_code: int = 2, *, location: Location | None = None, path: str = "",
         found: PolicyError | None = None) -> int:
    """Report one problem with a stable ``code`` of :data:`ttlpolicy.errors.CODES` (a test holds
    every call to that) and return ``exit_code``: 2 usage or I/O (the default), 1 findings.
    ``found``: the policy set's error that led to it; its problems are listed first."""
    problem = Problem(code, message, location, severity_of(code), path)
    if found is None:
        return report([problem], exit_code)
    return report([problem], exit_code, found.sources, listed=found.problems)


def warn(code: str, message: str, location: Location | None = None) -> None:
    """A warning that does not stop the command: always text on stderr, even with ``--format
    json``, because stdout then carries the command's result (which lists it where it has a place)."""
    print(colourise(problem_text([Problem(code, message, location, "warning")]), sys.stderr), file=sys.stderr)


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
