"""``ttlpolicy test [PATH...]``: run policy test files and report rule coverage.

Exit 0 when every case passes (and coverage reaches ``--min-coverage``), 1 for failed
cases or low coverage, 2 for usage or I/O errors, invalid test files and unloadable policies.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from typing import Any

from ..durations import format_duration
from ..errors import PolicyError, Problem, UnknownPolicyError, render_text
from ..testing import CaseResult, Report, Suite, discover, load_test_file, run_tests
from .output import decision_text, fail, write_json


def register(sub: Any) -> None:
    parser = sub.add_parser("test", help="run policy test cases and report rule coverage",
                            description="Run the cases of policy test files (YAML) and report which rules no case "
                                        "matched. Exit 0 all pass, 1 failures or coverage below --min-coverage, "
                                        "2 usage, I/O or invalid test or policy files.")
    parser.add_argument("paths", nargs="*", default=["policies/tests"], metavar="PATH",
                        help="test files or directories (default: policies/tests/)")
    parser.add_argument("--policies", metavar="DIR",
                        help="policy directory for every file (default: each file's `policies:` key, else the "
                             "parent of the directory holding the test file)")
    parser.add_argument("--min-coverage", type=float, default=0.0, metavar="N",
                        help="fail when fewer than N percent of the rules are matched by some case")
    parser.add_argument("--format", choices=["text", "json", "junit"], default="text")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.min_coverage <= 100:
        return fail("--min-coverage must be between 0 and 100")
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
        return _usage_problems(problems, sources, args.format)
    try:
        report = run_tests(suites)
    except PolicyError as exc:
        return _usage_problems(exc.problems, exc.sources, args.format)
    except UnknownPolicyError as exc:
        return fail(str(exc))
    low = report.coverage.percent < args.min_coverage
    if args.format == "json":
        write_json({"ok": report.ok and not low, "passed": len(report.results) - len(report.failed),
                    "failed": len(report.failed), "cases": [r.to_dict() for r in report.results],
                    "coverage": {**report.coverage.to_dict(), "min": args.min_coverage}}, sys.stdout)
    elif args.format == "junit":
        sys.stdout.write(junit_xml(report))
    else:
        print(text_report(report, args.min_coverage, args.verbose))
    return 1 if report.failed or low else 0


def _usage_problems(problems: list[Problem], sources: dict[str, str], fmt: str) -> int:
    if fmt == "json":
        write_json({"ok": False, "problems": [p.to_dict() for p in problems]}, sys.stdout)
    else:
        print(render_text(problems, sources), file=sys.stderr)
    return 2


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
    lines.append(f"rule coverage: {cov.percent:g}% ({len(cov.matched)} of {cov.total} rules matched by some case)")
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
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
