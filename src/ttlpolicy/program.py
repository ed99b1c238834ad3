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

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from .context import ContextSchema
from .decision import Decision, TraceEntry
from .model import Attribute, Limits, PolicyDocument, RefreshSettings, Tier

# A compiled CEL expression: a function of the activation (plain Python values) to a value.
Expression = Callable[[Mapping[str, Any]], Any]
# The whole policy as one function: (context, now, explain) -> Decision; raises ContextError.
DecideFunction = Callable[[Mapping[str, Any], datetime, bool], Decision]


@dataclass
class Literals:
    """Literals each attribute is compared with in conditions (and durations used with time):
    the candidate values the analysis judges conditions on, and the diff's grid."""

    numbers: dict[str, set[float]] = field(default_factory=dict)
    strings: dict[str, set[str]] = field(default_factory=dict)
    durations: set[int] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)  # list attribute -> attributes tested `in` it
    links: set[tuple[str, str]] = field(default_factory=set)  # attributes compared with each other


@dataclass(frozen=True, slots=True)
class ParsedExpression:
    """What the later stages need from a condition's parse tree, taken from the tree as soon as
    the condition is type-checked, so that the tree is freed at once: kept until the end of a
    load, the trees of a 1,000-rule policy were ~20 MiB at its peak, most of which the process
    never gave back to the system. Dropped when the policy is loaded.

    ``attributes``: what the condition reads. ``inline``: its Python source for the generated
    program and the constants that source names (:mod:`ttlpolicy.generate`), or why it has none,
    or ``None`` for a backend without generated code. ``literals``: for the analysis, what each
    attribute is compared with, or ``None`` when the condition is not of the simple shapes the
    analysis judges by enumeration (:func:`ttlpolicy.analysis.condition_literals`)."""

    attributes: frozenset[str]
    inline: tuple[str, Mapping[str, Any]] | str | None = None
    literals: Literals | None = None


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
    packed_source: bytes = field(repr=False)  # zlib: ~0.7 MiB for 1,000 rules, read only when shown
    fallbacks: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, run: DecideFunction, source: str, fallbacks: tuple[tuple[str, str], ...] = ()) -> "Program":
        return cls(run, zlib.compress(source.encode(), 1), fallbacks)

    @property
    def source(self) -> str:
        return zlib.decompress(self.packed_source).decode()


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


__all__ = ["CompiledPolicy", "CompiledRule", "DecideFunction", "Expression", "Literals", "ParsedExpression", "Program",
           "TraceEntry", "TtlOps"]
