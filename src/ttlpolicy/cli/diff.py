"""``ttlpolicy diff``: which decisions a policy change alters, and how.

Two forms::

    ttlpolicy diff OLD_DIR NEW_DIR               # two policy directories
    ttlpolicy diff --git origin/main [DIR]       # DIR (default policies/) at a git revision
                                                 # against the same DIR in the working tree

Exit 0 when nothing fails ``--fail-on``, 1 when it does, 2 for usage, I/O, git or policy errors.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from ..diffing import (DECISION_FIELDS, Change, DiffReport, Group, Outcome, Progress, diff_policies,
                        read_replay)
from ..durations import format_duration
from ..errors import PolicyError, render_text
from ..policyset import POLICY_SUFFIXES, PolicySet, load_policies, load_sources
from .output import fail, write_json


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "diff", help="compare the decisions of two versions of the policies",
        description="Decide a grid of scenarios (and replayed contexts) with two versions of the policies and "
                    "report the decisions that change, grouped by the attributes that explain them. Exit 0, or 1 "
                    "when --fail-on matches; 2 for usage, I/O, git or policy errors.")
    parser.add_argument("paths", nargs="*", metavar="DIR",
                        help="BASE and HEAD policy directories; with --git, one directory (default: policies/)")
    parser.add_argument("--git", metavar="REV",
                        help="compare DIR as of git revision REV (base) with DIR in the working tree (head)")
    parser.add_argument("--policy", metavar="NAME", help="compare only this policy")
    parser.add_argument("--replay", metavar="FILE", action="append", default=[],
                        help="also replay a decision log (JSON lines with `context` and `time`); repeatable")
    parser.add_argument("--max-scenarios", type=int, default=20000, metavar="N",
                        help="grid scenarios per policy; larger grids are sampled (default: 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    parser.add_argument("--fail-on", choices=["loosen", "any", "never"], default="never",
                        help="exit 1 when any token would live longer or a deny becomes an allow (loosen), or "
                             "when anything changes (any)")
    parser.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text",
                        help="html: one self-contained page with change maps (see --x, --y) and every group")
    parser.add_argument("--x", default="time.hour", metavar="ATTR", help="html: change maps across ATTR (time.hour)")
    parser.add_argument("--y", default="device.trust", metavar="ATTR", help="html: change maps down ATTR (device.trust)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_scenarios < 1:
        return fail("--max-scenarios must be at least 1")
    if args.git is not None:
        if len(args.paths) > 1:
            return fail("with --git, give one policy directory (compared at REV and in the working tree)")
        directory = args.paths[0] if args.paths else "policies"
        try:
            base = load_git(args.git, directory)
        except GitError as exc:
            return fail(str(exc))
        except PolicyError as exc:
            return _policy_error(exc, f"{args.git}:{directory}")
        head_dir = directory
    else:
        if len(args.paths) != 2:
            return fail("give BASE and HEAD directories, or --git REV [DIR]")
        try:
            base = load_policies(args.paths[0])
        except PolicyError as exc:
            return _policy_error(exc, args.paths[0])
        head_dir = args.paths[1]
    try:
        head = load_policies(head_dir)
    except PolicyError as exc:
        return _policy_error(exc, head_dir)
    if args.policy is not None and (args.policy not in head or args.policy not in base):
        return fail(f"policy {args.policy!r} is not on both sides")
    try:
        replay = [record for path in args.replay for record in read_replay(path)]
    except OSError as exc:
        return fail(f"cannot read replay log: {exc.strerror or exc}")
    except ValueError as exc:
        return fail(str(exc))
    report = diff_policies(base, head, max_scenarios=args.max_scenarios, seed=args.seed, replay=replay,
                           only=args.policy, progress=terminal_progress(sys.stderr))
    if args.format == "json":
        write_json(report_dict(report), sys.stdout)
    elif args.format == "markdown":
        sys.stdout.write(markdown(report))
    elif args.format == "html":
        from .diff_html import html_report

        sys.stdout.write(html_report(report, base, head, args.x, args.y, [report.headline(), *_summary_lines(report)],
                                     outcome_text))
    else:
        sys.stdout.write(text(report))
    if args.fail_on == "any" and report.changed:
        return 1
    return 1 if args.fail_on == "loosen" and report.loosening else 0


def terminal_progress(stream: TextIO) -> Progress | None:
    """A one-line progress indicator on a terminal (``None`` elsewhere: CI logs stay clean)."""
    if not stream.isatty():
        return None

    def show(policy: str, done: int, planned: int) -> None:
        end = "\n" if done >= planned else ""
        stream.write(f"\r\033[Kdiff {policy}: {done:,} of {planned:,} scenarios decided{end}")
        stream.flush()

    return show


def _policy_error(exc: PolicyError, where: str) -> int:
    print(render_text(exc.problems, exc.sources), file=sys.stderr)
    return fail(f"cannot load policies from {where}")


# -- git ----------------------------------------------------------------------------------------

class GitError(Exception):
    pass


def _git(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def load_git(rev: str, directory: str | Path) -> PolicySet:
    """The policies in ``directory`` as of ``rev``, read with ``git ls-tree``/``git show``.

    The working tree and the index are never touched.

    >>> load_git("origin/main", "policies").names                          # doctest: +SKIP
    ['machine', 'workforce']
    """
    path = Path(directory)
    if not path.is_dir():
        raise GitError(f"{directory}: not a directory")
    prefix = _git(path, "rev-parse", "--show-prefix").decode().strip()
    root = Path(_git(path, "rev-parse", "--show-toplevel").decode().strip())
    _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    listing = _git(root, "ls-tree", "-z", "--name-only", f"{rev}:{prefix}" if prefix else f"{rev}:")
    names = [n for n in listing.decode().split("\0") if n and PurePosixPath(n).suffix in POLICY_SUFFIXES]
    if not names:
        raise GitError(f"{rev}:{prefix or '.'} holds no *.yaml policy files")
    sources = {f"{rev}:{prefix}{name}": _git(root, "show", f"{rev}:{prefix}{name}") for name in names}
    return load_sources(sources)


# -- rendering ----------------------------------------------------------------------------------

def _ttl(seconds: int) -> str:
    return format_duration(seconds) if seconds else "0s"


def outcome_text(o: Outcome) -> str:
    if o.refused:
        return f"context refused ({o.refused})"
    if not o.allow:
        return "DENY"
    extra = " +step-up" if o.step_up else ""
    return f"access {_ttl(o.access_ttl)}, refresh {_ttl(o.refresh_ttl)}{extra}"


def field_changes(base: Outcome, head: Outcome) -> list[str]:
    """``refresh.rotation: true → false`` for each compared field that differs (beyond the
    lifetimes ``outcome_text`` shows), so that every change has a visible example."""
    if base.refused or head.refused or not (base.allow and head.allow):
        return []
    old, new = dict(base.values), dict(head.values)
    return [f"{key}: {_show(old.get(key))} → {_show(new.get(key))}" for key in DECISION_FIELDS
            if key not in ("allow", "access_ttl", "refresh_ttl") and old.get(key) != new.get(key)]


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return json.dumps(value if not isinstance(value, tuple) else list(value), default=str)


def _magnitude(group: Group) -> str:
    if math.isinf(group.magnitude):
        return "—"
    return f"up to {format_duration(int(group.magnitude))}" if group.magnitude else "—"


def _conditions(group: Group) -> str:
    if not group.common:
        return "(no single attribute value explains it)"
    return ", ".join(f"{k} in {json.dumps(v, default=str)}" if isinstance(v, list) and not k.endswith(("groups", "countries")) else f"{k}={json.dumps(v, default=str)}" for k, v in group.common.items())


def _example(change: Change) -> dict[str, Any]:
    return {"context": change.context, "now": change.now.isoformat(), "source": change.source,
            "base": outcome_text(change.base), "head": outcome_text(change.head)}


def report_dict(report: DiffReport) -> dict[str, Any]:
    """The JSON form: a summary per policy and every group with an example context."""
    return {
        "headline": report.headline(),
        "changed": report.changed,
        "loosening": report.loosening,
        "policies": [vars(p) for p in report.policies],
        "added_policies": report.added,
        "removed_policies": report.removed,
        "groups": [{"policy": g.policy, "kind": g.kind, "loosening": g.loosening, "count": g.count,
                    "max_change_seconds": None if math.isinf(g.magnitude) else g.magnitude,
                    "rules": list(g.rules), "when": g.common, "example": _example(g.example())}
                   for g in report.groups],
        "seconds": round(report.seconds, 3),
    }


def _summary_lines(report: DiffReport) -> list[str]:
    lines = []
    for p in report.policies:
        src = f"{p.scenarios} scenarios" + (f" of {p.grid_size}" if p.grid_size > p.scenarios else "")
        if p.replayed:
            src += f" + {p.replayed} replayed"
        lines.append(f"policy {p.policy}: {p.changed} of {src} decide differently")
    lines += [f"policy {n}: added (not compared; every decision is new)" for n in report.added]
    lines += [f"policy {n}: removed" for n in report.removed]
    return lines


def text(report: DiffReport) -> str:
    """The report for a terminal: the headline, the summary, then each group, loosening first."""
    lines = [report.headline(), *_summary_lines(report)]
    if not report.groups:
        lines.append("no decision changes")
    for g in report.groups:
        flag = "LOOSENS" if g.loosening else "tightens" if g.tightening else "changes"
        lines.append(f"\n[{flag}] {g.policy}: {g.kind} in {g.count} scenario{'s' * (g.count != 1)} "
                     f"({_magnitude(g)})")
        if g.rules:
            lines.append(f"  rules: {' '.join(g.rules)}")
        lines.append(f"  when: {_conditions(g)}")
        ex = g.example()
        lines.append(f"  example: {json.dumps(ex.context, sort_keys=True)} at {ex.now.isoformat()}")
        lines.append(f"    before: {outcome_text(ex.base)}")
        lines.append(f"    after:  {outcome_text(ex.head)}")
        lines += [f"    {line}" for line in field_changes(ex.base, ex.head)]
    return "\n".join(lines) + "\n"


def markdown(report: DiffReport) -> str:
    """For a pull-request comment: a summary table and one collapsible section per group."""
    lines = ["### ttlpolicy diff", "", f"**{report.headline()}**", ""]
    if report.loosening:
        lines.append("> [!WARNING]\n> This change makes some tokens live longer or allows what was denied.\n")
    lines += [f"- {line}" for line in _summary_lines(report)]
    if not report.groups:
        lines += ["", "No decision changes."]
        return "\n".join(lines) + "\n"
    lines += ["", "| | policy | change | scenarios | size | rules |", "|---|---|---|---|---|---|"]
    for g in report.groups:
        icon = "🔓" if g.loosening else "🔒"
        lines.append(f"| {icon} | {g.policy} | {g.kind} | {g.count} | {_magnitude(g)} | "
                     f"{' '.join(f'`{r}`' for r in g.rules) or '—'} |")
    lines.append("")
    for g in report.groups:
        ex = g.example()
        lines += [f"<details><summary>{g.policy}: {g.kind} ({g.count})</summary>", "",
                  f"**When:** {_conditions(g)}", "",
                  f"**Before:** {outcome_text(ex.base)}  ", f"**After:** {outcome_text(ex.head)}", "",
                  f"Example at `{ex.now.isoformat()}`:", "", "```json",
                  json.dumps(ex.context, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(lines)
