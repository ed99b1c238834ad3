"""Stage 3 — compile: source texts to compiled policies, as one explicit list of stages.

Each stage is named, takes the :class:`Compilation` so far, and returns its result (stored on
the compilation under the stage's name) and the problems it found (OPA's compiler lists its
stages the same way)::

    parse → schema → extends → model → semantic → typecheck → generate → analyse → default

A stage never raises for a user's mistake: it reports a located :class:`Problem` and leaves the
policy out of what later stages build, so that every problem of a set is reported at once.
CEL expressions are compiled by a replaceable backend: ``native`` (the default) compiles them to
closures and generated code; ``reference`` runs cel-python's interpreter, for comparison.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import lark
import pydantic

from .analysis import analyze
from .cel.parse import CelIssue, CelSyntaxError, parse
from .cel.typecheck import NUMERIC, check
from .context import ContextSchema, zone_info
from .errors import Problem, ProblemCollector
from .extends import default_policy, extends_chain, merge
from .generate import generate_program
from .load import Document, JsonPath, decode_source, parse_document
from .model import Attribute, PolicyDocument, RefreshSettings, Rule, TtlEffect, build_document
from .program import CompiledPolicy, CompiledRule, Expression, ParsedExpression, TtlOps
from .state.ratelimit import CompiledRateLimit, compile_rate_limits
from .validate import Locator, parse_zones, resolve_attributes, schema_problems, semantic_problems

Backend = Literal["native", "reference"]
StageResult = tuple[Any, list[Problem]]


def backend_compiler(backend: Backend) -> Callable[[lark.Tree], Expression]:
    if backend == "native":
        from .cel.native import compile_expression
        return compile_expression
    if backend == "reference":
        from .cel.reference import compile_reference
        return compile_reference
    raise ValueError(f"unknown CEL backend {backend!r} (use 'native' or 'reference')")


def _unsupported() -> type[Exception]:
    from .cel.native import UnsupportedExpression
    return UnsupportedExpression


@dataclass
class Unit:
    """One policy on its way through the stages."""

    name: str
    file: str
    files: tuple[str, ...] = ()  # the policy's own file last, after its bases'
    where: Locator | None = None
    merged: dict[str, Any] = field(default_factory=dict)
    document: PolicyDocument | None = None
    failed: bool = False  # an error so far: later stages still check, but build nothing
    rules: list[CompiledRule] = field(default_factory=list)
    parsed: dict[str, ParsedExpression] = field(default_factory=dict)  # by text, dropped after loading
    rate_limits: tuple[CompiledRateLimit, ...] = ()
    compiled: CompiledPolicy | None = None


@dataclass
class Compilation:
    """The input of a compilation and each stage's result, under the stage's name."""

    sources: Mapping[str, bytes | str]
    backend: Backend = "native"
    texts: dict[str, str] = field(default_factory=dict)
    parse: dict[str, Document] = field(default_factory=dict)
    schema: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (file, data)
    extends: dict[str, Unit] = field(default_factory=dict)
    model: dict[str, Unit] = field(default_factory=dict)
    semantic: dict[str, Unit] = field(default_factory=dict)
    typecheck: dict[str, Unit] = field(default_factory=dict)
    generate: dict[str, CompiledPolicy] = field(default_factory=dict)
    analyse: dict[str, CompiledPolicy] = field(default_factory=dict)  # those the analysis found no error in
    default: str | None = None
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for benchmarks/loadtime.py


@dataclass(frozen=True)
class Stage:
    name: str
    does: str
    run: Callable[[Compilation], StageResult]


def compile_sources(sources: Mapping[str, bytes | str], backend: Backend = "native",
                    problems: list[Problem] | None = None) -> Compilation:
    """Run every stage over ``sources`` (file name -> content); nothing raises for bad input."""
    compilation = Compilation(sources, backend, problems=list(problems or []))
    for stage in STAGES:
        start = time.perf_counter()
        result, found = stage.run(compilation)
        setattr(compilation, stage.name, result)
        compilation.problems += found
        compilation.seconds[stage.name] = time.perf_counter() - start
    return compilation


# ------------------------------------------------------------------------------- the stages


def parse_stage(c: Compilation) -> StageResult:
    """Decode each file and parse its YAML into data with positions."""
    documents: dict[str, Document] = {}
    problems: list[Problem] = []
    for file, content in sorted(c.sources.items()):
        collector = ProblemCollector(file)
        text = decode_source(content, collector) if isinstance(content, bytes) else content
        if text is not None:
            c.texts[file] = text
            doc = parse_document(text, collector)
            if doc is not None:
                documents[file] = doc
        problems += collector.problems
    return documents, problems


def schema_stage(c: Compilation) -> StageResult:
    """The JSON Schema, file by file; each schema-valid policy by name (names unique)."""
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    problems: list[Problem] = []
    for file, doc in c.parse.items():
        found = schema_problems(doc)
        problems += found
        if found:
            continue
        data = dict(doc.data)
        data["rules"] = [dict(rule, index=i, file=file) for i, rule in enumerate(data.get("rules", []))]
        if "rate_limits" in data:
            data["rate_limits"] = [dict(limit, index=i, file=file) for i, limit in enumerate(data["rate_limits"])]
        name = data["name"]
        if name in raw:
            problems.append(Problem("duplicate-policy", f"policy {name!r} is also defined in {raw[name][0]}",
                                    doc.location(("name",)), path="name"))
            continue
        raw[name] = (file, data)
    return raw, problems


def extends_stage(c: Compilation) -> StageResult:
    """Each policy merged with the bases it extends (see :mod:`ttlpolicy.extends`)."""
    units: dict[str, Unit] = {}
    problems: list[Problem] = []
    for name, (file, _) in c.schema.items():
        chain = extends_chain(name, c.schema, c.parse, problems)
        if chain is None:
            continue
        merged, owner = merge([c.schema[n] for n in chain])
        units[name] = Unit(name, file, tuple(dict.fromkeys(c.schema[n][0] for n in chain)),
                           Locator(c.parse, owner, file), merged)
    return units, problems


def model_stage(c: Compilation) -> StageResult:
    """The typed model of each merged policy (durations in seconds)."""
    units: dict[str, Unit] = {}
    problems: list[Problem] = []
    for name, unit in c.extends.items():
        assert unit.where is not None
        try:
            unit.document = build_document(unit.merged, unit.file)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                path: JsonPath = tuple(error["loc"])
                problems.append(Problem("schema", f"{'.'.join(map(str, path))}: {error['msg']}", unit.where(path)))
            continue
        units[name] = unit
    return units, problems


def semantic_stage(c: Compilation) -> StageResult:
    """What a schema cannot express: limits, tiers, zones, attributes, rules without effect."""
    problems: list[Problem] = []
    for unit in c.model.values():
        assert unit.document is not None and unit.where is not None
        found = semantic_problems(unit.document, unit.where)
        unit.failed = any(p.severity == "error" for p in found)
        problems += found
    return dict(c.model), problems


def typecheck_stage(c: Compilation) -> StageResult:
    """Parse and type-check every CEL expression and compile it with the backend (rate limits'
    too: the state layer counts them, see :mod:`ttlpolicy.state.ratelimit`). Runs even for a
    policy with semantic errors, to report everything at once."""
    problems: list[Problem] = []
    for unit in c.semantic.values():
        found = _typecheck(unit, c.backend)
        assert unit.document is not None and unit.where is not None
        unit.rate_limits, limit_problems = compile_rate_limits(
            unit.document.rate_limits, resolve_attributes(unit.document), c.parse, unit.where)
        found += limit_problems
        unit.failed = unit.failed or any(p.severity == "error" for p in found)
        problems += found
    return dict(c.semantic), problems


def generate_stage(c: Compilation) -> StageResult:
    """Each concrete policy without errors as a :class:`CompiledPolicy` with its generated program."""
    compiled: dict[str, CompiledPolicy] = {}
    for name, unit in c.typecheck.items():
        if unit.failed or unit.document is None or unit.document.abstract:
            continue
        unit.compiled = _compiled_policy(unit, c.backend)
        compiled[name] = unit.compiled
    return compiled, []


def analyse_stage(c: Compilation) -> StageResult:
    """What each compiled policy means (see :mod:`ttlpolicy.analysis`): mostly warnings; a
    policy with an error here is left out. The result: the policies that pass."""
    found: list[Problem] = []
    passed: dict[str, CompiledPolicy] = {}
    for name, unit in c.typecheck.items():
        if unit.compiled is not None and unit.where is not None:
            analysed = analyze(unit.compiled, unit.where, unit.parsed)
            found += [p for p in analysed if p not in found]  # bases are shared: each problem once
            if not any(p.severity == "error" for p in analysed):
                passed[name] = unit.compiled
        unit.parsed = {}
    return passed, found


def default_stage(c: Compilation) -> StageResult:
    """The policy that decides when a request names none."""
    problems: list[Problem] = []
    return default_policy(c.schema, c.parse, problems), problems


STAGES: tuple[Stage, ...] = (
    Stage("parse", "YAML to data with line and column marks", parse_stage),
    Stage("schema", "the JSON Schema, file by file", schema_stage),
    Stage("extends", "merge each policy with its bases", extends_stage),
    Stage("model", "typed model, durations in seconds", model_stage),
    Stage("semantic", "checks a schema cannot express", semantic_stage),
    Stage("typecheck", "parse, type-check and compile every CEL expression", typecheck_stage),
    Stage("generate", "one generated function per concrete policy", generate_stage),
    Stage("analyse", "warnings about what the policy means", analyse_stage),
    Stage("default", "the policy that decides when none is named", default_stage),
)


# ------------------------------------------------------------------------------- helpers


def digest_of(policy: PolicyDocument) -> str:
    """A digest of what the policy means: rules sorted by name, comments and layout ignored,
    so re-ordering rules (which never changes a decision) does not change it either."""
    data = policy.model_dump(mode="json", by_alias=True)
    data["rules"] = sorted(data["rules"], key=lambda r: r["name"])
    data.pop("extends", None)  # the merged content is what counts, not where it came from
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _typecheck(unit: Unit, backend: Backend) -> list[Problem]:
    policy, where = unit.document, unit.where
    assert policy is not None and where is not None
    attributes = resolve_attributes(policy)
    compiler = _ExpressionCompiler(attributes, where, backend, unit.parsed)
    for rule in policy.rules:
        base: JsonPath = ("rules", rule.index)
        condition = compiler.compile(rule.when, base + ("when",), rule.file, "bool")
        access = _ttl_ops(rule.access_ttl, compiler, base + ("access_ttl",), rule.file)
        refresh = _ttl_ops(rule.refresh_ttl, compiler, base + ("refresh_ttl",), rule.file)
        if condition is not None:
            line = where(base, file=rule.file).line
            unit.rules.append(_rule(rule, condition, access, refresh, line))
    return compiler.problems


def _compiled_policy(unit: Unit, backend: Backend) -> CompiledPolicy:
    policy = unit.document
    assert policy is not None
    attributes = resolve_attributes(policy)
    context = ContextSchema(attributes, zone_info(policy.timezone or "UTC"), parse_zones(policy))
    compiled = CompiledPolicy(
        name=policy.name, description=policy.description, digest=digest_of(policy), files=unit.files,
        rules=tuple(sorted(unit.rules, key=lambda r: r.name)), tiers=MappingProxyType(dict(policy.tiers)),
        default_access=policy.defaults.access_ttl or 0, default_refresh=policy.defaults.refresh_ttl or 0,
        refresh_defaults=policy.defaults.refresh, limits=policy.limits, timezone=policy.timezone or "UTC",
        context=context, attributes=MappingProxyType(attributes), document=policy)
    trees = {text: parsed.tree for text, parsed in unit.parsed.items()} if backend == "native" else None
    program = generate_program(compiled, trees)
    object.__setattr__(compiled, "program", program)  # the program needs the policy it decides for
    return compiled


class _ExpressionCompiler:
    """Parses, type-checks and compiles the expressions of one policy, collecting problems."""

    def __init__(self, attributes: Mapping[str, Attribute], where: Locator, backend: Backend,
                 parsed: dict[str, ParsedExpression]):
        self.attributes, self.where = attributes, where
        self.compile_tree = backend_compiler(backend)
        self.unsupported = _unsupported()
        self.problems: list[Problem] = []
        self.parsed = parsed

    def compile(self, text: str, path: JsonPath, file: str, expect: str) -> Expression | None:
        try:
            tree = parse(text)
        except CelSyntaxError as exc:
            self._report(exc.issue, text, path, file)
            return None
        result = check(tree, self.attributes)
        for issue in result.issues:
            self._report(issue, text, path, file)
        kind = result.type.kind
        if expect == "bool" and kind not in ("bool", "dyn") and not result.issues:
            self._report(CelIssue("cel-not-boolean", f"a condition must be bool, but this is {result.type}", 1, 1),
                         text, path, file)
        if expect == "number" and kind not in NUMERIC | {"dyn"} and not result.issues:
            self._report(CelIssue("cel-not-numeric", f"a factor must be a number, but this is {result.type}", 1, 1),
                         text, path, file)
        if result.issues:
            return None
        self.parsed[text] = ParsedExpression(tree, frozenset(result.attributes))
        try:
            return self.compile_tree(tree)
        except self.unsupported as exc:
            issue = CelIssue("cel-unsupported", getattr(exc, "message", str(exc)),
                             getattr(exc, "line", 1), getattr(exc, "column", 1))
            self._report(issue, text, path, file)
            return None

    def _report(self, issue: CelIssue, text: str, path: JsonPath, file: str) -> None:
        lines = text.split("\n")
        offset = sum(len(line) + 1 for line in lines[: issue.line - 1]) + issue.column - 1
        doc = self.where.documents.get(file)
        location = doc.string_location(path, offset) if doc else self.where(path, file=file)
        self.problems.append(Problem(issue.code, issue.message, location, path=".".join(map(str, path))))


def _ttl_ops(effect: TtlEffect | None, compiler: _ExpressionCompiler, path: JsonPath, file: str) -> TtlOps | None:
    if effect is None:
        return None
    factor = effect.multiply
    program = None
    if factor is not None and factor.expr is not None:
        doc = compiler.where.documents.get(file)
        mapping_form = doc is not None and path + ("multiply", "expr") in doc.value_marks
        expr_path = path + ("multiply", "expr") if mapping_form else path + ("multiply",)
        program = compiler.compile(factor.expr, expr_path, file, "number")
    return TtlOps(factor=factor.value if factor else None, factor_program=program,
                  factor_text=factor.expr if factor else None,
                  factor_min=factor.min if factor else 0.0, factor_max=factor.max if factor else None,
                  cap=effect.cap, floor=effect.floor)


def _rule(rule: Rule, condition: Expression, access: TtlOps | None, refresh: TtlOps | None, line: int
          ) -> CompiledRule:
    settings = rule.refresh or RefreshSettings()
    return CompiledRule(name=rule.name, description=rule.description, when=rule.when, condition=condition,
                        access=access, refresh=refresh, rotation=settings.rotation,
                        idle_timeout=settings.idle_timeout, max_session=settings.max_session,
                        reuse_grace=settings.reuse_grace, sender_constrained=settings.sender_constrained,
                        step_up=rule.step_up, deny=rule.deny, file=rule.file, line=line)
