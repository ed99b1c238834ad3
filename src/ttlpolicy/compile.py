"""Stage 3 — compile: source texts to compiled policies, as one explicit list of stages.

Each stage is named, takes the :class:`Compilation` so far (and, for a per-policy stage, the
policy), and returns its result (stored on the compilation under the stage's name) and the
problems it found (OPA's compiler lists its stages the same way). :data:`STAGES`::

    parse → schema → extends → [bases → model → semantic → typecheck → generate → analyse] → default
                               (per policy, bases before the policies that extend them)

A stage never raises for a user's mistake: it reports a located :class:`Problem` and leaves the
policy out of what later stages build, so that every problem of a set is reported at once.
CEL expressions are compiled by a replaceable backend: ``native`` (the default) compiles them to
closures and generated code; ``reference`` runs cel-python's interpreter, for comparison.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Literal, Mapping

import lark
import pydantic

from .analysis import analyze, condition_literals
from .cel.parse import CelIssue, CelSyntaxError, parse
from .cel.typecheck import NUMERIC, check
from .context import ContextSchema, zone_info
from .errors import Problem, ProblemCollector, severity_of
from .extends import default_policy, extends_chain, merge
from .generate import generate_program, inline_condition
from .load import Document, JsonPath, decode_source, parse_document
from .model import Attribute, PolicyDocument, RefreshSettings, Rule, TtlEffect, build_document
from .program import CompiledPolicy, CompiledRule, Expression, ParsedExpression, TtlOps
from .state.ratelimit import CompiledRateLimit, compile_rate_limits
from .validate import (Locator, cel_problems_despite_schema, parse_zones, resolve_attributes, schema_problems,
                       semantic_problems)

Backend = Literal["native", "reference"]
StageResult = tuple[Any, list[Problem]]


def backend_compiler(backend: Backend, inlined: bool = False) -> Callable[[lark.Tree], Expression]:
    """The backend's compiler; ``inlined``: for conditions the generated program inlines."""
    if backend == "native":
        from .cel.native import compile_expression
        return functools.partial(compile_expression, generate=False) if inlined else compile_expression
    if backend == "reference":
        from .cel.reference import compile_reference
        return compile_reference
    raise ValueError(f"unknown CEL backend {backend!r} (use 'native' or 'reference')")


def _unsupported() -> type[Exception]:
    from .cel.native import UnsupportedExpression
    return UnsupportedExpression


@dataclass
class Unit:
    """One policy on its way through the per-policy stages."""

    name: str
    file: str
    chain: list[str]  # its bases in merge order, the policy itself last
    files: tuple[str, ...] = ()  # the files of the chain, the policy's own last
    where: Locator | None = None
    document: PolicyDocument | None = None
    failed: bool = False  # an error so far: later stages still check, but build nothing
    rules: list[CompiledRule] = field(default_factory=list)
    parsed: dict[str, ParsedExpression] = field(default_factory=dict)  # conditions by text, dropped after loading
    rate_limits: tuple[CompiledRateLimit, ...] = ()
    compiled: CompiledPolicy | None = None


@dataclass
class Compilation:
    """The input of a compilation and each stage's result, under the stage's name (for a
    per-policy stage: a dict by policy name)."""

    sources: Mapping[str, bytes | str]
    backend: Backend = "native"
    texts: dict[str, str] = field(default_factory=dict)
    parse: dict[str, Document] = field(default_factory=dict)  # by file
    schema: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (file, data)
    extends: dict[str, Unit] = field(default_factory=dict)  # bases before the policies extending them
    bases: dict[str, list[str]] = field(default_factory=dict)
    model: dict[str, PolicyDocument] = field(default_factory=dict)
    semantic: dict[str, bool] = field(default_factory=dict)  # True: no errors
    typecheck: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    generate: dict[str, CompiledPolicy] = field(default_factory=dict)
    analyse: dict[str, CompiledPolicy] = field(default_factory=dict)  # the policies that pass: the set
    default: str | None = None
    broken: dict[str, str] = field(default_factory=dict)  # policy name -> file, for policies with errors
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for benchmarks/loadtime.py


@dataclass(frozen=True)
class Stage:
    """``run(compilation)`` for a stage over the whole set; ``run(compilation, unit)`` for a
    per-policy stage, where a result of ``None`` ends that policy's way through the stages."""

    name: str
    does: str
    run: Callable[..., StageResult]
    per_policy: bool = False


def compile_sources(sources: Mapping[str, bytes | str], backend: Backend = "native",
                    problems: list[Problem] | None = None) -> Compilation:
    """Run every stage over ``sources`` (file name -> content); nothing raises for bad input.

    Per-policy stages run policy by policy, bases first, so that a policy whose base has
    errors is reported once as not checked instead of repeating its base's errors."""
    c = Compilation(sources, backend, problems=list(problems or []))
    with _cyclic_gc_paused():
        _run_stages(c)
    _return_freed_memory()
    return c


def _return_freed_memory() -> None:
    """Give the heap pages the stages freed back to the system. glibc keeps them for the process
    otherwise (YAML marks, parse trees and compile()'s syntax trees are freed in between the
    compiled policy's own objects): ~5 MiB of resident memory after loading 1,000 rules. Only
    glibc has ``malloc_trim``; elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries without it
        return
    trim(0)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Compiling builds a few hundred thousand short-lived, acyclic objects (parse trees, closures)
    while the trees of every expression are alive: each full collection then walks all of them,
    and for a 1,000-rule policy the collector took half of the load time. Reference counting
    frees everything the compiler drops; the cyclic collector resumes afterwards (only if it was
    on: a caller that turned it off keeps it off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_stages(c: Compilation) -> None:
    index = 0
    while index < len(STAGES):
        stage = STAGES[index]
        if not stage.per_policy:
            start = time.perf_counter()
            result, found = stage.run(c)
            setattr(c, stage.name, result)
            c.problems += found
            c.seconds[stage.name] = c.seconds.get(stage.name, 0.0) + time.perf_counter() - start
            index += 1
            continue
        group = []
        while index < len(STAGES) and STAGES[index].per_policy:
            group.append(STAGES[index])
            index += 1
        for unit in c.extends.values():
            _run_policy(c, unit, group)


def _run_policy(c: Compilation, unit: Unit, stages: list[Stage]) -> None:
    before = len(c.problems)
    for stage in stages:
        start = time.perf_counter()
        result, found = stage.run(c, unit)
        c.problems += found  # a base's warnings recur with each policy extending it: load_sources keeps one
        c.seconds[stage.name] = c.seconds.get(stage.name, 0.0) + time.perf_counter() - start
        if result is None:
            break
        getattr(c, stage.name)[unit.name] = result
    chain_files = set(unit.files) | {c.schema[n][0] for n in unit.chain if n in c.schema}
    if any(p.severity == "error" and p.location is not None and p.location.file in chain_files
           for p in c.problems[before:]):
        c.broken.setdefault(unit.name, unit.file)


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
            else:
                # Unparseable YAML: its name is still worth knowing, so that the policies extending
                # it say "its base is broken" rather than "no policy named ...".
                named = _NAME_LINE.search(text)
                if named:
                    c.broken.setdefault(named.group(1), file)
        problems += collector.problems
    return documents, problems


_NAME_LINE = re.compile(r"""^name:[ \t]*["']?([a-z][a-z0-9_-]*)["']?[ \t]*(?:#.*)?$""", re.MULTILINE)


def schema_stage(c: Compilation) -> StageResult:
    """The JSON Schema, file by file; each schema-valid policy by name (names unique). A file
    that fails still has its CEL checked, so that one wrong key does not hide other errors."""
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    problems: list[Problem] = []
    failed: list[Document] = []
    for file, doc in c.parse.items():
        found = schema_problems(doc)
        problems += found
        if found:
            failed.append(doc)
            if isinstance(doc.data, dict) and isinstance(doc.data.get("name"), str):
                c.broken.setdefault(doc.data["name"], file)
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
    parsed_names = {d.data.get("name") for d in c.parse.values()
                    if isinstance(d.data, dict) and isinstance(d.data.get("name"), str)}
    for doc in failed:
        extends = doc.data.get("extends") if isinstance(doc.data, dict) else None
        if isinstance(extends, list) and not all(isinstance(b, str) and b in parsed_names for b in extends):
            continue  # a base that is not even YAML: its declarations are unknown, so no false errors
        problems += cel_problems_despite_schema(doc, [d.data for d in c.parse.values()])
    return raw, problems


def extends_stage(c: Compilation) -> StageResult:
    """Each policy's chain of bases (see :mod:`ttlpolicy.extends`), bases first."""
    problems: list[Problem] = []
    chains = {name: extends_chain(name, c.schema, c.parse, problems, c.broken) for name in c.schema}
    units: dict[str, Unit] = {}
    for name in sorted(c.schema, key=lambda n: len(chains[n] or ())):
        chain = chains[name]
        if chain is not None:
            file = c.schema[name][0]
            units[name] = Unit(name, file, chain, tuple(dict.fromkeys(c.schema[n][0] for n in chain if n in c.schema)))
    return units, problems


def bases_stage(c: Compilation, unit: Unit) -> StageResult:
    """A policy whose base has errors is not checked (its base's errors are reported there)."""
    bad = [base for base in unit.chain[:-1] if base in c.broken]
    if not bad:
        return unit.chain, []
    location = c.parse[unit.file].location(("extends",))
    # Its own conditions can still be type-checked when every broken base was at least readable
    # YAML (its declarations are known); otherwise nothing is, to avoid false errors.
    readable = all(c.broken[base] in c.parse for base in bad)
    checked = " (only this file's own conditions were type-checked)" if readable else ""
    problem = Problem("base-broken", f"policy {unit.name!r} was not checked: its base {bad[0]!r} has errors "
                      f"(in {c.broken[bad[0]]}); fix those first{checked}", location, path="extends")
    if not readable:
        return None, [problem]
    return None, [problem, *cel_problems_despite_schema(c.parse[unit.file], [d.data for d in c.parse.values()])]


def model_stage(c: Compilation, unit: Unit) -> StageResult:
    """The policy merged with its bases, as a typed model (durations in seconds)."""
    merged, owner = merge([c.schema[n] for n in unit.chain])
    unit.where = Locator(c.parse, owner, unit.file)
    try:
        unit.document = build_document(merged, unit.file)
    except pydantic.ValidationError as exc:
        return None, [Problem("schema", f"{'.'.join(map(str, error['loc']))}: {error['msg']}",
                              unit.where(tuple(error["loc"]))) for error in exc.errors()]
    return unit.document, []


def semantic_stage(c: Compilation, unit: Unit) -> StageResult:
    """What a schema cannot express: limits, tiers, zones, attributes, rules without effect."""
    assert unit.document is not None and unit.where is not None
    found = semantic_problems(unit.document, unit.where)
    unit.failed = any(p.severity == "error" for p in found)
    return not unit.failed, found


def typecheck_stage(c: Compilation, unit: Unit) -> StageResult:
    """Parse and type-check every CEL expression and compile it with the backend (rate limits'
    too: the state layer counts them, see :mod:`ttlpolicy.state.ratelimit`). Runs even for a
    policy with semantic errors, to report everything at once."""
    found = _typecheck(unit, c.backend)
    assert unit.document is not None and unit.where is not None
    unit.rate_limits, limit_problems = compile_rate_limits(
        unit.document.rate_limits, resolve_attributes(unit.document), c.parse, unit.where)
    found += limit_problems
    unit.failed = unit.failed or any(p.severity == "error" for p in found)
    return tuple(unit.rules), found


def generate_stage(c: Compilation, unit: Unit) -> StageResult:
    """A concrete policy without errors as a :class:`CompiledPolicy` with its generated program."""
    if unit.failed or unit.document is None or unit.document.abstract:
        return None, []
    unit.compiled = _compiled_policy(unit, c.backend)
    return unit.compiled, []


def analyse_stage(c: Compilation, unit: Unit) -> StageResult:
    """What the compiled policy means (see :mod:`ttlpolicy.analysis`): mostly warnings; a
    policy with an error here is left out of the set."""
    assert unit.compiled is not None and unit.where is not None
    found = analyze(unit.compiled, unit.where, unit.parsed)
    unit.parsed = {}  # not needed any more: free it
    return (None if any(p.severity == "error" for p in found) else unit.compiled), found


def default_stage(c: Compilation) -> StageResult:
    """The policy that decides when a request names none."""
    problems: list[Problem] = []
    return default_policy(c.schema, c.parse, problems), problems


STAGES: tuple[Stage, ...] = (
    Stage("parse", "YAML to data with line and column marks", parse_stage),
    Stage("schema", "the JSON Schema, file by file", schema_stage),
    Stage("extends", "each policy's chain of bases, bases first", extends_stage),
    Stage("bases", "a policy whose base has errors is not checked", bases_stage, per_policy=True),
    Stage("model", "merge with the bases; typed model, durations in seconds", model_stage, per_policy=True),
    Stage("semantic", "checks a schema cannot express", semantic_stage, per_policy=True),
    Stage("typecheck", "parse, type-check and compile every CEL expression", typecheck_stage, per_policy=True),
    Stage("generate", "one generated function per concrete policy", generate_stage, per_policy=True),
    Stage("analyse", "what the policy means: warnings, and errors that leave it out", analyse_stage,
          per_policy=True),
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
    program = generate_program(compiled, unit.parsed if backend == "native" else None)
    object.__setattr__(compiled, "program", program)  # the program needs the policy it decides for
    return compiled


class _ExpressionCompiler:
    """Parses, type-checks and compiles the expressions of one policy, collecting problems."""

    def __init__(self, attributes: Mapping[str, Attribute], where: Locator, backend: Backend,
                 parsed: dict[str, ParsedExpression]):
        self.attributes, self.where = attributes, where
        self.compile_tree = backend_compiler(backend)
        self.compile_inlined = backend_compiler(backend, inlined=True)
        self.generates = backend == "native"
        self.inline: dict[str, tuple[str, dict[str, Any]] | str] = {}  # condition text -> inline_condition()
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
        for issue in result.issues + result.warnings:
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
        inline = None
        if expect == "bool" and self.generates:
            inline = self.inline.get(text) or inline_condition(tree, f"_c{len(self.inline)}k")
            self.inline[text] = inline
        try:
            # A condition the policy's program inlines gets no function of its own besides its
            # closure (which the analysis, explain and the fail-safe path call): compiling ~1,000
            # small functions was a third of a cold 1,000-rule lint.
            compiled = self.compile_inlined(tree) if isinstance(inline, tuple) else self.compile_tree(tree)
        except self.unsupported as exc:
            issue = CelIssue("cel-unsupported", getattr(exc, "message", str(exc)),
                             getattr(exc, "line", 1), getattr(exc, "column", 1))
            self._report(issue, text, path, file)
            return None
        if expect == "bool" and text not in self.parsed:  # what generate and analyse need: the tree goes now
            self.parsed[text] = ParsedExpression(frozenset(result.attributes), inline, condition_literals(tree))
        return compiled

    def _report(self, issue: CelIssue, text: str, path: JsonPath, file: str) -> None:
        lines = text.split("\n")
        offset = sum(len(line) + 1 for line in lines[: issue.line - 1]) + issue.column - 1
        doc = self.where.documents.get(file)
        location = doc.string_location(path, offset) if doc else self.where(path, file=file)
        self.problems.append(Problem(issue.code, issue.message, location, severity_of(issue.code),
                                     path=".".join(map(str, path))))


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
