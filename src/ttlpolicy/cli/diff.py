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
from typing import TYPE_CHECKING, Any, TextIO

from ..diffing import (DECISION_FIELDS, Change, DiffReport, Group, Outcome, Progress, ReplayError, diff_policies,
                        read_replay)
from ..durations import format_duration
from ..errors import Location, PolicyError
from ..policyset import POLICY_SUFFIXES, PolicySet, load_policies, load_sources
from .output import colourise, decision_text, fail, write_json

if TYPE_CHECKING:
    from ..prove.diff import PolicyProof


EXAMPLES = (
    'ttlpolicy diff --git origin/main --fail-on loosen   # what this branch changes; fail if a token lives longer',
    "ttlpolicy diff --prove policies-old policies --fail-on loosen   # prove it for every request (SMT), or show one",
    'ttlpolicy diff policies-old policies --format markdown > diff.md   # two directories, as a PR comment',
    "ttlpolicy diff --git HEAD~1 --replay decisions.jsonl   # also replay yesterday's decision log",
)


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
                        help="text for people (default), json, markdown for a pull-request comment, or html: one "
                             "self-contained page with change maps (see --x, --y) and every group")
    parser.add_argument("--prove", action="store_true",
                        help="also prove, field by field, that HEAD never loosens a decision for any valid request, "
                             "or show one that it does (SMT solver; see docs/proofs.md); --fail-on loosen then uses "
                             "the proof where it is complete and the grid elsewhere, and says which")
    parser.add_argument("--prove-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="with --prove: time limit per solver query; past it a field is 'unknown' (default: 10)")
    parser.add_argument("--x", default="time.hour", metavar="ATTR", help="html: change maps across ATTR (time.hour)")
    parser.add_argument("--y", default="device.trust", metavar="ATTR", help="html: change maps down ATTR (device.trust)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_scenarios < 1:
        return fail("usage", "--max-scenarios must be at least 1")
    if args.git is not None:
        if len(args.paths) > 1:
            return fail("usage", "with --git, give one policy directory (compared at REV and in the working tree)")
        directory = args.paths[0] if args.paths else "policies"
        try:
            base = load_git(args.git, directory)
        except GitError as exc:
            return fail("git-error", str(exc))
        except PolicyError as exc:
            return _policy_error(exc, f"{args.git}:{directory}")
        head_dir = directory
    else:
        if len(args.paths) != 2:
            return fail("usage", "give BASE and HEAD directories, or --git REV [DIR]")
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
        return fail("unknown-policy", f"policy {args.policy!r} is not on both sides")
    try:
        replay = [record for path in args.replay for record in read_replay(path)]
    except OSError as exc:
        return fail("io-error", f"cannot read replay log: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return fail("io-error", f"cannot read replay log: not UTF-8 ({exc.reason})")
    except ReplayError as exc:
        return fail("replay-record", exc.message, location=Location(exc.file, exc.line, 1))
    if args.prove_timeout <= 0:
        return fail("usage", "--prove-timeout must be more than 0 seconds")
    report = diff_policies(base, head, max_scenarios=args.max_scenarios, seed=args.seed, replay=replay,
                           only=args.policy, progress=terminal_progress(sys.stderr))
    proofs = None
    if args.prove:
        from ..prove.diff import prove_diff

        proofs = prove_diff(base, head, only=args.policy, timeout=args.prove_timeout, grid=report)
    verdict = loosening_verdict(report, proofs)
    if args.format == "json":
        out = report_dict(report)
        if proofs is not None:
            out["proof"] = [p.to_dict() for p in proofs]
            out["loosening_decided_by"] = verdict[1]
            out["loosening"] = verdict[0]
        write_json(out, sys.stdout)
    elif args.format == "markdown":
        sys.stdout.write(markdown(report))
        if proofs is not None:
            sys.stdout.write(proof_markdown(proofs, verdict))
    elif args.format == "html":
        from .diff_html import html_report

        sys.stdout.write(html_report(report, base, head, args.x, args.y, [report.headline(), *_summary_lines(report)],
                                     outcome_text))
    else:
        sys.stdout.write(colourise(text(report)))
        if proofs is not None:
            sys.stdout.write(colourise(proof_text(proofs, verdict)))
    if args.fail_on == "any" and report.changed:
        return 1
    return 1 if args.fail_on == "loosen" and verdict[0] else 0


def loosening_verdict(report: DiffReport, proofs: list[PolicyProof] | None) -> tuple[bool, dict[str, str]]:
    """Whether the change loosens, and for each policy what says so: ``proof`` where every field
    is proved or refuted, else ``grid`` (the sampled scenarios), with the reason."""
    if proofs is None:
        return report.loosening, {p.policy: "grid" for p in report.policies}
    by: dict[str, str] = {}
    loosens = bool(report.added)
    for proof in proofs:
        if proof.decided:
            by[proof.policy] = "proof"
            loosens = loosens or proof.loosens
        else:
            unknown = [f.field for f in proof.fields if f.status == "unknown"]
            by[proof.policy] = f"grid ({', '.join(unknown)} not decided by the proof)"
            loosens = loosens or proof.loosens or any(g.loosening for g in report.groups if g.policy == proof.policy)
    return loosens, by


_STATUS = {"equivalent": "equivalent", "never loosens": "never loosens (proved)", "loosens": "LOOSENS",
           "changes": "changes", "unknown": "unknown", "not proved": "not proved"}


def _proof_lines(proof: PolicyProof) -> list[str]:
    lines: list[str] = []
    for f in proof.fields:
        if f.status == "equivalent" and f.how in ("digest", "constant", "smt"):
            continue  # listed together below
        reason = f" — {f.location}: {f.reason}" if f.location is not None else f" — {f.reason}" if f.reason else ""
        how = {"smt": "solver", "grid": "grid"}.get(f.how, f.how)
        lines.append(f"  {f.field}: {_STATUS[f.status]}" + (f" [{how}]" if how else "") + reason)
        if f.counterexample is not None:
            ce = f.counterexample
            lines.append(f"    counterexample: {json.dumps(ce.context, sort_keys=True)} at {ce.now.isoformat()}")
            if ce.refused:
                lines.append(f"    {ce.refused}")
            for side, decision in (("base", ce.base), ("head", ce.head)):
                if decision is not None:
                    lines.append(f"    {side}:")
                    lines += ["      " + line for line in decision_text(decision.to_dict()).splitlines()]
    same = [f.field for f in proof.fields if f.status == "equivalent"]
    if same:
        lines.append(f"  equivalent (proved): {', '.join(same)}")
    return lines


def proof_text(proofs: list[PolicyProof], verdict: tuple[bool, dict[str, str]]) -> str:
    """The proof section of the text report: per policy, each field's verdict and counterexamples."""
    lines = ["", "proof (for every valid request; docs/proofs.md says what is and is not proved):"]
    for proof in proofs:
        state = ("LOOSENS" if proof.loosens else "equivalent" if proof.equivalent else
                 "never loosens" if proof.decided else "not fully decided")
        lines.append(f"policy {proof.policy}: {state} ({proof.seconds:.1f}s)")
        lines += _proof_lines(proof)
    lines.append("--fail-on loosen decided by: " + "; ".join(f"{k}: {v}" for k, v in verdict[1].items()))
    return "\n".join(lines) + "\n"


def proof_markdown(proofs: list[PolicyProof], verdict: tuple[bool, dict[str, str]]) -> str:
    lines = ["", "#### Proof (every valid request)", "", "| policy | field | verdict |", "|---|---|---|"]
    for proof in proofs:
        for f in proof.fields:
            lines.append(f"| {proof.policy} | {f.field} | {_STATUS[f.status]}{' — ' + f.reason if f.reason else ''} |")
    lines += ["", "`--fail-on loosen` decided by: " + "; ".join(f"{k}: {v}" for k, v in verdict[1].items()), ""]
    return "\n".join(lines)


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
    return fail("policy-load-failed", f"cannot load policies from {where}", found=exc)


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
    try:
        _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except GitError:  # --quiet: git says nothing, so say what is wrong and what usually fixes it
        raise GitError(f"--git {rev}: no commit named {rev!r} in the repository at {root} (is it spelled right? "
                       f"a remote branch needs `git fetch` first, and a shallow CI checkout needs fetch-depth: 0)"
                       ) from None
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
    return ", ".join(f"{k}: {describe_times(v)}" if k == "time.now" and isinstance(v, list) and describe_times(v)
                     else f"{k} in {json.dumps(v, default=str)}" if isinstance(v, list) and not k.endswith(("groups", "countries")) else f"{k}={json.dumps(v, default=str)}" for k, v in group.common.items())


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def describe_times(labels: list[Any]) -> str:
    """Grid instants ("mon 00:30", ...) as days and hour ranges: "mon–fri hours 0–6, 22–23; sat–sun all day".

    Returns "" when a label is not of that form (then the caller lists the values as they are).

    >>> describe_times(["mon 00:30", "mon 01:30", "mon 23:30", "tue 00:30", "tue 01:30", "tue 23:30"])
    'mon–tue hours 0–1, 23'
    """
    hours_by_day: dict[int, set[int]] = {}
    for label in labels:
        parts = str(label).split()
        if len(parts) != 2 or parts[0] not in _DAYS or not parts[1][:2].isdigit():
            return ""
        hours_by_day.setdefault(_DAYS.index(parts[0]), set()).add(int(parts[1][:2]))
    days_by_hours: dict[tuple[int, ...], list[int]] = {}
    for day in sorted(hours_by_day):
        days_by_hours.setdefault(tuple(sorted(hours_by_day[day])), []).append(day)
    phrases = []
    for hours, days in days_by_hours.items():
        when = "all day" if len(hours) == 24 else "hours " + ", ".join(_ranges(list(hours)))
        phrases.append(f"{', '.join(_ranges(days, _DAYS))} {when}")
    return "; ".join(phrases)


def _ranges(numbers: list[int], names: tuple[str, ...] | None = None) -> list[str]:
    """[0, 1, 2, 6, 22, 23] → ["0–2", "6", "22–23"] (with names: day numbers as day names)."""
    show = (lambda n: names[n]) if names else str
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return [show(a) if a == b else f"{show(a)}–{show(b)}" for a, b in spans]


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
