"""Stage 3 — compile: type-check every CEL expression and turn one policy into an evaluator.

Conditions are parsed and checked once, here, and compiled by a CEL backend into plain
Python callables. The backend is one replaceable piece: ``native`` (the default) compiles
to closures; ``reference`` runs cel-python's interpreter, for comparison and benchmarks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import lark

from .cel.parse import CelIssue, CelSyntaxError, parse
from .cel.typecheck import NUMERIC, check
from .context import ContextSchema, zone_info
from .decision import Decision
from .errors import Problem
from .evaluate import CompiledRule, Program, TtlOps, decide
from .load import JsonPath
from .model import Attribute, Limits, PolicyDocument, RefreshSettings, Rule, Tier, TtlEffect
from .validate import Locator, parse_zones, resolve_attributes

Backend = Literal["native", "reference"]


def backend_compiler(backend: Backend) -> Callable[[lark.Tree], Program]:
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


@dataclass(frozen=True, slots=True)
class ParsedExpression:
    """An expression's parse tree and the attributes it reads. The loader hands these to the
    analysis, which walks the same trees (parsing is most of the load time), then drops them:
    kept alive they would triple a large policy's memory and slow every garbage collection."""

    tree: lark.Tree
    attributes: frozenset[str]


@dataclass(frozen=True)
class CompiledPolicy:
    """One policy, ready to decide. Immutable and safe to share between threads."""

    name: str
    description: str
    digest: str
    files: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    tiers: Mapping[str, Tier]
    default_access: int
    default_refresh: int
    refresh_defaults: RefreshSettings
    limits: Limits
    timezone: str
    context: ContextSchema
    attributes: Mapping[str, Attribute]
    document: PolicyDocument = field(repr=False)

    def decide(self, context: Mapping[str, Any], now: datetime, explain: bool = False) -> Decision:
        """Validate ``context`` and decide; raises :class:`~ttlpolicy.ContextError`."""
        return decide(self, self.context.activation(context, now), now, explain)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "description": self.description,
                "files": list(self.files), "rules": len(self.rules)}


def digest_of(policy: PolicyDocument) -> str:
    """A digest of what the policy means: rules sorted by name, comments and layout ignored,
    so re-ordering rules (which never changes a decision) does not change it either."""
    data = policy.model_dump(mode="json", by_alias=True)
    data["rules"] = sorted(data["rules"], key=lambda r: r["name"])
    data.pop("extends", None)  # the merged content is what counts, not where it came from
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class _ExpressionCompiler:
    """Parses, type-checks and compiles the expressions of one policy, collecting problems."""

    def __init__(self, attributes: Mapping[str, Attribute], where: Locator, backend: Backend,
                 parsed: dict[str, ParsedExpression]):
        self.attributes, self.where = attributes, where
        self.compile_tree = backend_compiler(backend)
        self.unsupported = _unsupported()
        self.problems: list[Problem] = []
        self.parsed = parsed

    def compile(self, text: str, path: JsonPath, file: str, expect: str) -> Program | None:
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


def compile_policy(policy: PolicyDocument, where: Locator, backend: Backend = "native",
                   files: tuple[str, ...] = (), build: bool = True, parsed: dict[str, ParsedExpression] | None = None,
                   ) -> tuple[CompiledPolicy | None, list[Problem]]:
    """Compile one effective (``extends`` already merged) policy; problems instead of raising.

    ``parsed``, if given, receives every checked expression's tree by text (for the analysis)."""
    attributes = resolve_attributes(policy)
    compiler = _ExpressionCompiler(attributes, where, backend, parsed if parsed is not None else {})
    rules = []
    for rule in policy.rules:
        base: JsonPath = ("rules", rule.index)
        condition = compiler.compile(rule.when, base + ("when",), rule.file, "bool")
        access = _ttl_ops(rule.access_ttl, compiler, base + ("access_ttl",), rule.file)
        refresh = _ttl_ops(rule.refresh_ttl, compiler, base + ("refresh_ttl",), rule.file)
        if condition is not None:
            rules.append(_rule(rule, condition, access, refresh))
    if compiler.problems or policy.abstract or not build:
        return None, compiler.problems
    context = ContextSchema(attributes, zone_info(policy.timezone or "UTC"), parse_zones(policy))
    compiled = CompiledPolicy(
        name=policy.name, description=policy.description, digest=digest_of(policy), files=files,
        rules=tuple(sorted(rules, key=lambda r: r.name)), tiers=MappingProxyType(dict(policy.tiers)),
        default_access=policy.defaults.access_ttl or 0, default_refresh=policy.defaults.refresh_ttl or 0,
        refresh_defaults=policy.defaults.refresh, limits=policy.limits, timezone=policy.timezone or "UTC",
        context=context, attributes=MappingProxyType(attributes), document=policy)
    return compiled, []


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


def _rule(rule: Rule, condition: Program, access: TtlOps | None, refresh: TtlOps | None) -> CompiledRule:
    settings = rule.refresh or RefreshSettings()
    return CompiledRule(name=rule.name, description=rule.description, when=rule.when, condition=condition,
                        access=access, refresh=refresh, rotation=settings.rotation,
                        idle_timeout=settings.idle_timeout, max_session=settings.max_session,
                        reuse_grace=settings.reuse_grace, sender_constrained=settings.sender_constrained,
                        step_up=rule.step_up, deny=rule.deny)
