"""The compiled types: what the compiler produces and the evaluator consumes.

One module, so that ``compile`` (which builds these) and ``evaluate`` / ``generate`` (which run
them) never import each other (Jinja's ``nodes`` → ``compiler`` → ``runtime``)::

    load → validate → compile ──builds──▶ CompiledPolicy(rules, …, program) ◀──runs── evaluate / generate

A :class:`CompiledPolicy` is immutable and safe to share between threads. Its ``program`` is one
generated Python function for the whole policy (see :mod:`ttlpolicy.generate`); its ``rules``
keep the per-rule closures the reference evaluator (:mod:`ttlpolicy.evaluate`) runs, so the two
can be held to each other in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

import lark

from .context import ContextSchema
from .decision import Decision, TraceEntry
from .model import Attribute, Limits, PolicyDocument, RefreshSettings, Tier

# A compiled CEL expression: a function of the activation (plain Python values) to a value.
Expression = Callable[[Mapping[str, Any]], Any]
# The whole policy as one function: (context, now, explain) -> Decision; raises ContextError.
DecideFunction = Callable[[Mapping[str, Any], datetime, bool], Decision]


@dataclass(frozen=True, slots=True)
class ParsedExpression:
    """An expression's parse tree and the attributes it reads. The compiler hands these to the
    generator and the analysis, which walk the same trees (parsing is most of the load time),
    then drops them: kept alive they would triple a large policy's memory and slow every
    garbage collection."""

    tree: lark.Tree
    attributes: frozenset[str]


@dataclass(frozen=True, slots=True)
class TtlOps:
    """The effects of one rule on one lifetime."""

    factor: float | None = None
    factor_program: Expression | None = None
    factor_text: str | None = None
    factor_min: float = 0.0
    factor_max: float | None = None
    cap: int | None = None
    floor: int | None = None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    description: str
    when: str
    condition: Expression
    access: TtlOps | None
    refresh: TtlOps | None
    rotation: bool | None
    idle_timeout: int | None
    max_session: int | None
    reuse_grace: int | None
    sender_constrained: bool | None
    step_up: str | None
    deny: str | None
    file: str = ""
    line: int = 0  # where the rule starts in ``file`` (for the generated code's comments)


@dataclass(frozen=True)
class Program:
    """One policy as one generated Python function. ``source`` is what ``ttlpolicy compile --show``
    prints; ``fallbacks`` names each rule whose condition is not in the generated code but called
    as its closure, with the reason (none for the bundled policies and ``tests/cases``: a test
    pins that)."""

    run: DecideFunction = field(repr=False)
    source: str
    fallbacks: tuple[tuple[str, str], ...] = ()


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
    program: Program | None = field(default=None, repr=False, compare=False)

    def decide(self, context: Mapping[str, Any], now: datetime, explain: bool = False) -> Decision:
        """Validate ``context`` and decide; raises :class:`~ttlpolicy.ContextError`."""
        if self.program is None:  # pragma: no cover - the compiler always generates one
            raise ValueError(f"policy {self.name!r} has no program")
        return self.program.run(context, now, explain)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "description": self.description,
                "files": list(self.files), "rules": len(self.rules)}


__all__ = ["CompiledPolicy", "CompiledRule", "DecideFunction", "Expression", "ParsedExpression", "Program", "TraceEntry", "TtlOps"]
