"""``ttlpolicy test [PATH...]``: run policy test files and report rule coverage.

Exit 0 when every case passes (and coverage reaches ``--min-coverage``), 1 for failed
cases or low coverage, 2 for usage or I/O errors, invalid test files and unloadable policies.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Callable

from ..durations import format_duration
from ..errors import PolicyError, Problem, UnknownPolicyError
from ..testing import CaseResult, Report, Suite, discover, load_test_file, run_tests

if TYPE_CHECKING:
    from ..prove.invariants import InvariantResult
from . import output
from .output import colourise, decision_text, fail, missing_policies_hint, plural, write_json


EXAMPLES = (
    'ttlpolicy test                                  # every test file in policies/tests/',
    'ttlpolicy test policies --min-coverage 100      # a policy directory: its tests/; every rule must be matched',
    "ttlpolicy test --run unmanaged --watch          # cases whose name says 'unmanaged', again on every change",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("test", help="run policy test cases and report rule coverage",
                            description="Run the cases of policy test files (YAML) and report which rules no case "
                                        "matched. Exit 0 all pass, 1 failures or coverage below --min-coverage, "
                                        "2 usage, I/O or invalid test or policy files.")
    add_test_files(parser)
    parser.add_argument("--min-coverage", type=float, default=0.0, metavar="N",
                        help="fail when fewer than N percent of the rules are matched by some case")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    parser.add_argument("--run", metavar="PATTERN", dest="run_pattern",
                        help="only the cases whose name matches: a glob such as 'unmanaged*', else a substring "
                             "(case-insensitive)")
    parser.add_argument("--watch", action="store_true",
                        help="run again whenever a test or policy file changes (Ctrl-C stops)")
    add_timeout(parser)
    parser.set_defaults(run=run)


def add_test_files(parser: argparse.ArgumentParser) -> None:
    """The test files to read, their policies and the report's format (``test`` and ``verify``)."""
    parser.add_argument("paths", nargs="*", default=["policies/tests"], metavar="PATH",
                        help="test files or directories; a policy directory stands for its tests/ "
                             "(default: policies/tests/)")
    parser.add_argument("--policies", metavar="DIR",
                        help="policy directory for every file (default: each file's `policies:` key, else the "
                             "parent of the directory holding the test file)")
    parser.add_argument("--format", choices=["text", "json", "junit"], default="text",
                        help="text for people (default), json, or junit XML for CI test reports")


def add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="time limit per solver query when proving invariants; past it an invariant is "
                             "'unknown' (default: each invariant's `timeout`, else 10)")


def run(args: argparse.Namespace) -> int:
    if not args.watch:
        return run_once(args)
    return watch(args)


def watch(args: argparse.Namespace) -> int:
    """Run, then run again after every change to the test files or the policies they test."""
    import watchfiles

    while True:
        run_once(args)
        sys.stdout.flush()  # each run's report must show before the wait, also through a pipe
        roots = _watched(args)
        print(f"watching {', '.join(sorted(roots))} for changes (Ctrl-C stops)", file=sys.stderr, flush=True)
        for _changes in watchfiles.watch(*roots, debounce=300, raise_interrupt=False):
            break
        else:  # interrupted
            return 130
        print(file=sys.stderr)


def _watched(args: argparse.Namespace) -> set[str]:
    roots = {str(p) for p in args.paths if os.path.exists(p)}
    if args.policies:
        roots.add(args.policies)
    files, _ = discover(args.paths)
    for file in files:
        try:
            roots.add(str(load_test_file(file, args.policies).policy_dir))
        except PolicyError:
            pass
    return {root for root in roots if os.path.exists(root)} or {"."}


def selector(pattern: str | None) -> Callable[[str], bool] | None:
    """``--run``: a glob when the pattern has glob characters, else a substring; case-insensitive."""
    if pattern is None:
        return None
    wanted = pattern.lower()
    if any(c in wanted for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name.lower(), wanted)
    return lambda name: wanted in name.lower()


def run_once(args: argparse.Namespace, *, cases: bool = True) -> int:
    if not 0 <= args.min_coverage <= 100:
        return fail("usage", "--min-coverage must be between 0 and 100")
    if args.timeout is not None and args.timeout <= 0:
        return fail("usage", "--timeout must be more than 0 seconds")
    files, problems = discover(args.paths)
    suites: list[Suite] = []
    sources: dict[str, str] = {}
    for file in files:
        try:
            suites.append(load_test_file(file, args.policies))
        except PolicyError as exc:
            problems += exc.problems
            sources.update(exc.sources)
    if problems:
        hints = [] if args.format != "text" else [  # the hint is for people; JSON and JUnit list the problems
            Problem("io-error", f"cannot test {path}{hint}") for path in args.paths
            if (hint := missing_policies_hint(path, how="name the policy or test directory (ttlpolicy test DIR)"))]
        return output.report(hints, 2, sources, listed=problems)
    try:
        report = run_tests(suites, select=selector(args.run_pattern), cases=cases, timeout=args.timeout)
    except PolicyError as exc:
        return output.report([], 2, exc.sources, listed=exc.problems)
    except UnknownPolicyError as exc:
        return fail("unknown-policy", str(exc))
    if args.run_pattern is not None and not report.results and not report.invariants:
        return fail("usage", f"no case name matches --run {args.run_pattern!r}")
    low = cases and report.coverage.percent < args.min_coverage
    if args.format == "json":
        out: dict[str, Any] = {"ok": report.ok and not low}
        if cases:
            out.update({"passed": len(report.results) - len(report.failed), "failed": len(report.failed),
                        "cases": [r.to_dict() for r in report.results],
                        "coverage": {**report.coverage.to_dict(), "min": args.min_coverage}})
        out["invariants"] = [r.to_dict() for r in report.invariants]
        write_json(out, sys.stdout)
    elif args.format == "junit":
        sys.stdout.write(junit_xml(report))
    else:
        text = text_report(report, args.min_coverage, args.verbose) if cases else invariants_text(report, args.verbose)
        print(colourise(text))
    return 1 if not report.ok or low else 0


def _show(key: str, value: Any) -> str:
    if key.endswith("ttl") or key.endswith(("idle_timeout", "max_session")):
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{format_duration(value)} ({value}s)"
    return json.dumps(value, ensure_ascii=False)


def failure_text(result: CaseResult) -> str:
    """Expected against actual for each mismatch, then the decision with its trace."""
    lines = [f"FAIL {result.location}: {result.name} (policy {result.policy})"]
    for key, expected, actual in result.mismatches:
        lines.append(f"  {key}: expected {_show(key, expected)}, got {_show(key, actual)}")
    for problem in result.context_problems:
        lines.append(f"  context refused: {problem}")
    if result.decision is not None:
        lines += ["    " + line for line in decision_text(result.decision).splitlines()]
    return "\n".join(lines)


def text_report(report: Report, min_coverage: float = 0.0, verbose: bool = False) -> str:
    """The human report: failures with their traces, the coverage, a one-line summary."""
    lines: list[str] = []
    for result in report.results:
        if not result.ok:
            lines.append(failure_text(result))
        elif verbose:
            lines.append(f"ok   {result.location}: {result.name}")
    cov = report.coverage
    lines.append(f"rule coverage: {cov.percent:g}% ({len(cov.matched)} of {plural(cov.total, 'rule')} matched by some case)")
    never = cov.never_matched()
    if never:
        lines.append("  never matched: " + ", ".join(never))
    always = cov.never_unmatched()
    if always:
        lines.append("  never left unmatched: " + ", ".join(always))
    if cov.percent < min_coverage:
        lines.append(f"coverage {cov.percent:g}% is below the minimum {min_coverage:g}%")
    failed = len(report.failed)
    lines.append(f"{len(report.results) - failed} passed, {failed} failed")
    if report.invariants:
        lines.append(invariants_text(report, verbose))
    return "\n".join(lines)


def invariant_text(result: InvariantResult) -> str:
    """One invariant's outcome; a refutation with its counterexample and the decision's trace."""
    head = {"proved": "PROVED", "refuted": "REFUTED", "unknown": "UNKNOWN", "error": "ERROR"}[result.status]
    how = f" ({'by the scenario grid' if result.how == 'grid' else 'by the SMT solver'})" if result.how else ""
    lines = [f"{head} {result.location}: {result.name} (policy {result.policy}){how}"]
    if result.reason:
        where = f"{result.where}: " if result.where is not None else ""
        lines.append(f"  {where}{result.reason}")
    if result.context is not None and result.now is not None:
        lines.append(f"  counterexample: {json.dumps(result.context, sort_keys=True)} at {result.now.isoformat()}")
        if result.decision is not None:
            lines += ["    " + line for line in decision_text(result.decision.to_dict()).splitlines()]
    return "\n".join(lines)


def invariants_text(report: Report, verbose: bool = False) -> str:
    lines = [invariant_text(r) for r in report.invariants if verbose or not r.ok]
    proved = sum(r.ok for r in report.invariants)
    lines.append(f"invariants: {proved} proved, {len(report.invariants) - proved} not proved")
    return "\n".join(lines)


def junit_xml(report: Report) -> str:
    """JUnit XML (one testsuite per file), as GitHub, GitLab and Jenkins read it."""
    root = ET.Element("testsuites", name="ttlpolicy", tests=str(len(report.results)),
                      failures=str(len(report.failed)))
    by_file: dict[str, list[CaseResult]] = {}
    for result in report.results:
        by_file.setdefault(result.suite, []).append(result)
    for file, results in by_file.items():
        failures = sum(not r.ok for r in results)
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(results)), failures=str(failures),
                              errors="0", skipped="0")
        for result in results:
            case = ET.SubElement(suite, "testcase", name=result.name, classname=result.policy, file=file,
                                 line=str(result.location.line))
            if not result.ok:
                summary = "; ".join(f"{k}: expected {_show(k, e)}, got {_show(k, a)}" for k, e, a in result.mismatches)
                failure = ET.SubElement(case, "failure", message=summary, type="mismatch")
                failure.text = failure_text(result)
    if report.invariants:
        by_invariant_file: dict[str, list[InvariantResult]] = {}
        for inv in report.invariants:
            by_invariant_file.setdefault(inv.location.file, []).append(inv)
        for file, invariants in by_invariant_file.items():
            failures = sum(r.status == "refuted" for r in invariants)
            errors = sum(r.status in ("unknown", "error") for r in invariants)
            suite = ET.SubElement(root, "testsuite", name=f"{file} (invariants)", tests=str(len(invariants)),
                                  failures=str(failures), errors=str(errors), skipped="0")
            for inv in invariants:
                case = ET.SubElement(suite, "testcase", name=inv.name, classname=f"{inv.policy}.invariants",
                                     file=file, line=str(inv.location.line), time=f"{inv.seconds:.3f}")
                if inv.status == "refuted":
                    failure = ET.SubElement(case, "failure", message="refuted by a counterexample", type="refuted")
                    failure.text = invariant_text(inv)
                elif inv.status in ("unknown", "error"):
                    error = ET.SubElement(case, "error", message=inv.reason or inv.status, type=inv.status)
                    error.text = invariant_text(inv)
        root.set("tests", str(len(report.results) + len(report.invariants)))
        root.set("failures", str(len(report.failed) + sum(r.status == "refuted" for r in report.invariants)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
