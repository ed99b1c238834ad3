"""Policy tests: YAML files of contexts and expected decisions, a runner, and rule coverage.

A test file (``policies/tests/*.yaml``) names the policy directory (default: the parent of
the directory holding the test file), optionally a policy, and cases. Each case gives a
context and an ``expect`` mapping that is *partial*: only the keys written are checked::

    policy: workforce
    now: "2025-01-08T10:00:00+01:00"       # default instant for every case
    cases:
      - name: unmanaged laptop gets short tokens
        context: {device: {trust: unmanaged}}
        expect:
          access_ttl: 30m
          matched_includes: [unmanaged-device]

The same data structure is used by ``ttlpolicy test`` (text, JSON and JUnit output) and by
Python callers::

    >>> suite = load_test_file("policies/tests/workforce.yaml")          # doctest: +SKIP
    >>> report = run_tests([suite])                                       # doctest: +SKIP
    >>> report.ok, report.coverage.percent                                # doctest: +SKIP
    (True, 100.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .context import parse_timestamp
from .decision import Decision
from .durations import parse_duration
from .errors import ContextError, Location, PolicyError, Problem, ProblemCollector
from .load import Document, parse_document, read_source
from .policyset import PolicySet, load_policies

TEST_SUFFIXES = (".yaml", ".yml")
# Without a `now`, a case would depend on the wall clock (off-hours rules!). Tests must be
# reproducible, so the default instant is fixed: a Wednesday, 12:00 UTC.
DEFAULT_NOW = "2025-01-08T12:00:00Z"

Seconds = Annotated[int, BeforeValidator(parse_duration)]


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):  # YAML turns unquoted timestamps into datetimes
        value = value.isoformat()
    parse_timestamp(value)  # raises ValueError with a readable message
    return str(value)


Timestamp = Annotated[str, BeforeValidator(_timestamp)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedRefresh(_Strict):
    rotation: bool | None = None
    idle_timeout: Seconds | None = None
    max_session: Seconds | None = None
    reuse_grace: Seconds | None = None
    sender_constrained: bool | None = None


class Expect(_Strict):
    """What a case checks; every key is optional and only written keys are compared."""

    allow: bool | None = None
    access_ttl: Seconds | None = None
    refresh_ttl: Seconds | None = None
    refresh: ExpectedRefresh | None = None
    step_up: bool | None = None
    step_up_reasons: list[str] | None = None
    deny_reason: str | None = None
    tier: str | None = None
    matched: list[str] | None = None
    matched_includes: list[str] | None = None
    not_matched: list[str] | None = None
    errors: list[str] | None = None  # names of rules whose condition failed to evaluate
    context_errors: list[str] | None = Field(default=None, description="the context is refused; these paths")


class Case(_Strict):
    name: str
    policy: str | None = None
    now: Timestamp | None = None
    context: dict[str, Any] = {}
    expect: Expect


class TestFile(_Strict):
    policies: str | None = None
    policy: str | None = None
    now: Timestamp | None = None
    description: str = ""
    cases: list[Case] = Field(min_length=1)


@dataclass
class Suite:
    """One parsed test file plus where its cases are, for messages."""

    file: str
    model: TestFile
    policy_dir: Path
    document: Document

    def case_location(self, index: int) -> Location:
        return self.document.location(("cases", index, "name"))


@dataclass
class CaseResult:
    suite: str
    name: str
    policy: str
    location: Location
    ok: bool
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, expected, actual)
    decision: dict[str, Any] | None = None
    context_problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.suite, "name": self.name, "policy": self.policy, "ok": self.ok,
                               "location": self.location.to_dict()}
        if self.mismatches:
            out["mismatches"] = [{"key": k, "expected": e, "actual": a} for k, e, a in self.mismatches]
        if self.decision is not None and not self.ok:
            out["decision"] = self.decision
        if self.context_problems:
            out["context_problems"] = self.context_problems
        return out


@dataclass
class Coverage:
    """Which rules of the tested policies some case matched, and which some case left unmatched."""

    rules: dict[str, list[str]] = field(default_factory=dict)  # policy -> rule names
    matched: set[tuple[str, str]] = field(default_factory=set)
    unmatched: set[tuple[str, str]] = field(default_factory=set)

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.rules.values())

    @property
    def percent(self) -> float:
        return 100.0 if not self.total else round(100.0 * len(self.matched) / self.total, 1)

    def never_matched(self) -> list[str]:
        return [f"{p}/{r}" for p, names in sorted(self.rules.items()) for r in names if (p, r) not in self.matched]

    def never_unmatched(self) -> list[str]:
        return [f"{p}/{r}" for p, names in sorted(self.rules.items()) for r in names if (p, r) not in self.unmatched]

    def to_dict(self) -> dict[str, Any]:
        return {"percent": self.percent, "rules": self.total, "matched": len(self.matched),
                "never_matched": self.never_matched(), "never_unmatched": self.never_unmatched()}


@dataclass
class Report:
    results: list[CaseResult]
    coverage: Coverage

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Test files in ``paths`` (files, or directories searched recursively), sorted."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in TEST_SUFFIXES and p.is_file())
            if not found:
                problems.append(Problem("no-tests", "directory holds no *.yaml test files", Location(str(path))))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem("io-error", "no such file or directory", Location(str(path))))
    return files, problems


def load_test_file(path: str | Path, policies: str | Path | None = None) -> Suite:
    """Parse and validate one test file; raises :class:`PolicyError` with located problems.

    ``policies`` overrides the file's ``policies:`` key (and its default, the parent of the
    test file's directory).
    """
    path = Path(path)
    collector = ProblemCollector(str(path))
    text = read_source(path, collector)
    if text is None:
        raise PolicyError(collector.problems)
    return parse_test_file(str(path), text, policies)


def parse_test_file(file: str, text: str, policies: str | Path | None = None) -> Suite:
    """:func:`load_test_file` for a test file already read (e.g. from a policy bundle)."""
    path = Path(file)
    collector = ProblemCollector(file)
    doc = parse_document(text, collector)
    if doc is None:
        raise PolicyError(collector.problems, {file: text} if text else {})
    try:
        model = TestFile.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            dotted = ".".join(map(str, loc)) or "the file"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem("test-file", f"{dotted}: {message}",
                                    doc.location(loc, key=error["type"] == "extra_forbidden"), path=dotted))
        raise PolicyError(problems, {file: doc.source}) from None
    if policies is not None:
        policy_dir = Path(policies)
    elif model.policies is not None:
        policy_dir = path.parent / model.policies
    else:
        policy_dir = path.parent.parent
    return Suite(file, model, policy_dir, doc)


def run_tests(suites: Iterable[Suite], loader: Callable[[Path], PolicySet] = load_policies) -> Report:
    """Run every case of ``suites``; loads each policy directory once.

    Raises :class:`PolicyError` when a policy directory does not load, and
    :class:`UnknownPolicyError` when a test names a policy the set does not hold.
    """
    sets: dict[Path, PolicySet] = {}
    results: list[CaseResult] = []
    coverage = Coverage()
    for suite in suites:
        key = suite.policy_dir.resolve()
        if key not in sets:
            sets[key] = loader(suite.policy_dir)
            for policy in sets[key]:
                coverage.rules[policy.name] = [rule.name for rule in policy.rules]
        policy_set = sets[key]
        for index, case in enumerate(suite.model.cases):
            name = case.policy or suite.model.policy
            policy = policy_set.get(name)  # UnknownPolicyError for a typo: a usage error, not a failure
            result = _run_case(policy_set, policy.name, case, case.now or suite.model.now or DEFAULT_NOW,
                               suite, index, coverage)
            results.append(result)
    return Report(results, coverage)


def _run_case(policy_set: PolicySet, policy: str, case: Case, now: str, suite: Suite, index: int,
              coverage: Coverage) -> CaseResult:
    result = CaseResult(suite.file, case.name, policy, suite.case_location(index), ok=True)
    expect = case.expect
    try:
        decision = policy_set.decide(case.context, policy=policy, now=now, explain=True)
    except ContextError as exc:
        paths = sorted(p.path for p in exc.problems)
        result.context_problems = [f"{p.path}: {p.message}" for p in exc.problems]
        if expect.context_errors is None or sorted(expect.context_errors) != paths:
            result.mismatches.append(("context_errors", expect.context_errors, paths))
        result.ok = not result.mismatches
        return result
    for outcome in decision.rules or []:
        (coverage.matched if outcome.outcome == "matched" else coverage.unmatched).add((policy, outcome.rule))
    actual = decision.to_dict()
    result.decision = actual
    result.mismatches = compare(expect, decision)
    result.ok = not result.mismatches
    return result


def compare(expect: Expect, decision: Decision) -> list[tuple[str, Any, Any]]:
    """``(key, expected, actual)`` for every written expectation the decision does not meet.

    >>> compare(Expect(access_ttl="15m"), decision)                       # doctest: +SKIP
    [('access_ttl', 900, 1800)]
    """
    out: list[tuple[str, Any, Any]] = []
    actual = decision.to_dict()
    for key in ("allow", "access_ttl", "refresh_ttl", "step_up", "step_up_reasons", "deny_reason", "tier"):
        wanted = getattr(expect, key)
        if wanted is not None and wanted != actual[key]:
            out.append((key, wanted, actual[key]))
    if expect.refresh is not None:
        for key, wanted in expect.refresh.model_dump(exclude_none=True).items():
            if wanted != actual["refresh"][key]:
                out.append((f"refresh.{key}", wanted, actual["refresh"][key]))
    matched = actual["matched"]
    if expect.matched is not None and sorted(expect.matched) != matched:
        out.append(("matched", sorted(expect.matched), matched))
    if expect.matched_includes is not None and not set(expect.matched_includes) <= set(matched):
        out.append(("matched_includes", expect.matched_includes, matched))
    if expect.not_matched is not None and set(expect.not_matched) & set(matched):
        out.append(("not_matched", expect.not_matched, matched))
    errors = sorted({e["rule"] for e in actual["errors"]})
    if expect.errors is not None and sorted(expect.errors) != errors:
        out.append(("errors", sorted(expect.errors), errors))
    if expect.context_errors is not None:
        out.append(("context_errors", expect.context_errors, []))
    return out


__all__ = ["Case", "Coverage", "Expect", "Report", "Suite", "TestFile", "compare", "discover", "load_test_file",
           "parse_test_file", "run_tests"]
