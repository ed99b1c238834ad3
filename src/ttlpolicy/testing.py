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
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterable

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .context import parse_timestamp
from .decision import Decision
from .durations import parse_duration
from .errors import ContextError, Location, PolicyError, Problem, ProblemCollector
from .load import Document, parse_document, read_source
from .policyset import PolicySet, load_policies
from .suggest import did_you_mean

if TYPE_CHECKING:
    from .prove.invariants import InvariantResult

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


class InvariantSpec(_Strict):
    """A property of every decision, proved by ``ttlpolicy test`` and ``ttlpolicy verify``
    (see :mod:`ttlpolicy.prove.invariants`)."""

    name: str
    policy: str | None = None
    when: str = "true"
    always: str
    timeout: float | None = Field(default=None, gt=0, description="seconds per solver query")


class TestFile(_Strict):
    policies: str | None = None
    policy: str | None = None
    now: Timestamp | None = None
    description: str = ""
    cases: list[Case] = []
    invariants: list[InvariantSpec] = []

    @pydantic.model_validator(mode="after")
    def _something_to_test(self) -> "TestFile":
        if not self.cases and not self.invariants:
            raise ValueError("a test file needs at least one case or invariant")
        return self


@dataclass
class Suite:
    """One parsed test file plus where its cases are, for messages."""

    file: str
    model: TestFile
    policy_dir: Path
    document: Document

    def case_location(self, index: int) -> Location:
        return self.document.location(("cases", index, "name"))

    def invariant_location(self, index: int, part: str | None = None, line: int = 1, column: int = 1) -> Location:
        """Where invariant ``index`` is, or a place inside its ``when``/``always`` expression."""
        if part is None or ("invariants", index, part) not in self.document.value_marks:
            return self.document.location(("invariants", index, "name"))
        text = getattr(self.model.invariants[index], part)
        lines = text.split("\n")
        offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
        return self.document.string_location(("invariants", index, part), offset)


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
    invariants: list[InvariantResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def failed_invariants(self) -> list[InvariantResult]:
        """Invariants not proved: refuted, unknown or wrong."""
        return [r for r in self.invariants if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.failed_invariants


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Test files in ``paths`` (files, or directories searched recursively), sorted.

    A policy directory — one with a ``tests/`` directory — stands for its tests, so that
    ``ttlpolicy test policies`` does not read the policies as test files.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    for path in map(Path, paths):
        if (path / "tests").is_dir():
            path = path / "tests"
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
            problems.append(Problem("test-file", f"{dotted}: {_explain(error)}",
                                    doc.location(loc, key=error["type"] == "extra_forbidden"), path=dotted))
        raise PolicyError(problems, {file: doc.source}) from None
    if policies is not None:
        policy_dir = Path(policies)
    elif model.policies is not None:
        policy_dir = path.parent / model.policies
    else:
        policy_dir = path.parent.parent
    return Suite(file, model, policy_dir, doc)


# The mapping a key sits in, by the key that holds that mapping: for "did you mean" on an unknown key.
_MODELS: dict[str | None, type[BaseModel]] = {None: TestFile, "cases": Case, "expect": Expect,
                                              "refresh": ExpectedRefresh, "invariants": InvariantSpec}
_TYPE_NAMES = {"bool": "true or false", "int": "a whole number", "float": "a number", "string": "a string",
               "list": "a list", "dict": "a mapping", "model": "a mapping"}


def _explain(error: Any) -> str:
    """A pydantic error in the words lint uses: what was wrong, what was expected, a suggestion."""
    loc = [part for part in error["loc"] if isinstance(part, str)]
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _MODELS.get(loc[-2] if len(loc) > 1 else None, TestFile)
        known = list(model.model_fields)
        return f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], known)} (known: {', '.join(known)})"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing"
    expected = next((name for prefix, name in _TYPE_NAMES.items() if kind.startswith(prefix + "_")), None)
    if expected is not None:
        return f"expected {expected}, got {error.get('input')!r}"
    return str(error["msg"]).removeprefix("Value error, ")


def run_tests(suites: Iterable[Suite], loader: Callable[[Path], PolicySet] = load_policies,
              select: Callable[[str], bool] | None = None, *, cases: bool = True, invariants: bool = True,
              timeout: float | None = None) -> Report:
    """Run every case and invariant of ``suites`` (those whose name ``select`` accepts); loads each
    policy directory once. ``timeout`` (seconds per solver query) overrides the invariants' own.

    Raises :class:`PolicyError` when a policy directory does not load, and
    :class:`UnknownPolicyError` when a test names a policy the set does not hold.
    """
    suites = list(suites)
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
        for index, case in enumerate(suite.model.cases if cases else ()):
            if select is not None and not select(case.name):
                continue
            name = case.policy or suite.model.policy
            policy = policy_set.get(name)  # UnknownPolicyError for a typo: a usage error, not a failure
            result = _run_case(policy_set, policy.name, case, case.now or suite.model.now or DEFAULT_NOW,
                               suite, index, coverage)
            results.append(result)
    report = Report(results, coverage)
    if invariants:
        report.invariants = _run_invariants(suites, sets, select, timeout)
    return report


def _run_invariants(suites: list[Suite], sets: dict[Path, PolicySet], select: Callable[[str], bool] | None,
                    timeout: float | None) -> list[InvariantResult]:
    from .prove.invariants import check_invariant
    from .prove.solve import DEFAULT_TIMEOUT

    out: list[InvariantResult] = []
    for suite in suites:
        policy_set = sets[suite.policy_dir.resolve()]
        for index, spec in enumerate(suite.model.invariants):
            if select is not None and not select(spec.name):
                continue
            name = spec.policy or suite.model.policy
            policy_set.get(name)  # UnknownPolicyError for a typo, as for cases

            def locate(part: str, line: int, column: int, index: int = index) -> Location:
                return suite.invariant_location(index, part, line, column)

            out.append(check_invariant(policy_set, name, spec.name, spec.when, spec.always,
                                       suite.invariant_location(index), locate,
                                       timeout=timeout or spec.timeout or DEFAULT_TIMEOUT))
    return out


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


__all__ = ["Case", "Coverage", "Expect", "InvariantSpec", "Report", "Suite", "TestFile", "compare", "discover",
           "load_test_file", "parse_test_file", "run_tests"]
