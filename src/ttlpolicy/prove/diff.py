"""``diff --prove``: for every decision field, a proof that HEAD never loosens it, or a request that does.

Both versions of a policy are encoded over the same request variables. For each field of
:data:`ttlpolicy.diffing.DECISION_FIELDS` with a direction, the solver is asked for a request
that both versions accept, that neither denies (a deny flip is the ``allow`` field's), and
where HEAD's value ranks looser than BASE's, exactly as :func:`ttlpolicy.diffing.change_kinds`
ranks it. No such request: the field never loosens, for any valid request. One: it is replayed
through both real evaluators and shown with both decisions. When the field never loosens, a
second question says whether it can change at all ("equivalent" when not). A request only HEAD
accepts is the ``context accepted`` loosening. The scenario grid is tried first: what it finds
needs no solver (and is a real decision by construction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import z3

from ..decision import Decision
from ..errors import ContextError, Location
from ..diffing import DECISION_FIELDS, DiffReport, change_kinds, declared_part, decide_outcome, diff_policies
from ..policyset import PolicySet
from ..program import CompiledPolicy
from ..validate import MAX_REUSE_GRACE
from .cel import FALSE, _and, _not, _or
from .encode import Locator, Maybe, SymbolicDecision, UnsupportedAt, encode
from .solve import DEFAULT_TIMEOUT, search
from .symbols import SymbolicContext, Unsupported

# Fields whose value no request can change (the decision holds one constant), and fields whose
# text the prover does not model (compared by the grid only).
CONSTANT_FIELDS = frozenset({"refresh.on_reuse"})
NOT_PROVED = {"deny_reason": "the text of deny reasons is compared by the grid, not proved",
              "step_up_reasons": "the text of step-up reasons is compared by the grid, not proved"}
_TIME_DERIVED = ("time.hour", "time.minute", "time.weekday")


@dataclass
class Counterexample:
    """A request, an instant and both sides' decisions (``None`` where that side refuses the
    request; ``refused`` then says why)."""

    context: dict[str, Any]
    now: datetime
    base: Decision | None
    head: Decision | None
    refused: str = ""


@dataclass
class FieldProof:
    """One field of one policy: ``never loosens`` (proved; ``equivalent`` when it cannot change
    at all), ``loosens`` (with a replayed counterexample) or ``unknown`` (with the reason)."""

    field: str
    status: str  # equivalent | never loosens | loosens | changes (a field without direction) | unknown | not proved
    how: str = ""  # smt | grid | constant
    reason: str = ""
    location: Location | None = None
    counterexample: Counterexample | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "status": self.status, "how": self.how,
                               "seconds": round(self.seconds, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.location is not None:
            out["location"] = self.location.to_dict()
        if self.counterexample is not None:
            ce = self.counterexample
            out["counterexample"] = {"context": ce.context, "now": ce.now.isoformat(),
                                     "base": ce.base.to_dict() if ce.base else None,
                                     "head": ce.head.to_dict() if ce.head else None}
            if ce.refused:
                out["counterexample"]["refused"] = ce.refused
        return out


@dataclass
class PolicyProof:
    policy: str
    fields: list[FieldProof] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def loosens(self) -> bool:
        return any(f.status == "loosens" for f in self.fields)

    @property
    def decided(self) -> bool:
        """Every field that can loosen is proved or refuted (so ``--fail-on loosen`` may rely on it)."""
        return all(f.status != "unknown" for f in self.fields)

    @property
    def equivalent(self) -> bool:
        return all(f.status == "equivalent" for f in self.fields if f.field not in NOT_PROVED)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "loosens": self.loosens, "decided": self.decided,
                "equivalent": self.equivalent, "seconds": round(self.seconds, 3),
                "fields": [f.to_dict() for f in self.fields]}


def prove_diff(base: PolicySet, head: PolicySet, *, only: str | None = None, timeout: float = DEFAULT_TIMEOUT,
               grid_scenarios: int = 2000, grid: DiffReport | None = None) -> list[PolicyProof]:
    """A :class:`PolicyProof` for every policy on both sides (or just ``only``). The grid of
    ``grid_scenarios`` scenarios is tried first (0: the solver alone), or the findings of ``grid``,
    a :func:`~ttlpolicy.diffing.diff_policies` report already made; ``timeout`` is per query."""
    names = [n for n in head.names if n in base.names and (only is None or n == only)]
    return [prove_policy(base, head, name, timeout=timeout, grid_scenarios=grid_scenarios, grid=grid)
            for name in names]


def prove_policy(base: PolicySet, head: PolicySet, name: str, *, timeout: float = DEFAULT_TIMEOUT,
                 grid_scenarios: int = 2000, grid: DiffReport | None = None) -> PolicyProof:
    started = time.perf_counter()
    b, h = base.get(name), head.get(name)
    proof = PolicyProof(name)
    keys = ["context", *DECISION_FIELDS]
    if b.digest == h.digest:  # the same meaning: nothing can differ
        proof.fields = [FieldProof(k, "equivalent", "digest", "the same policy digest") for k in keys]
        proof.seconds = time.perf_counter() - started
        return proof
    ctx = SymbolicContext()
    try:
        # Every attribute declared differently on the two sides is part of the request, read or
        # not: a narrowed or widened declaration changes which requests are accepted.
        for attribute_name in sorted(b.attributes.keys() | h.attributes.keys()):
            before, after = b.attributes.get(attribute_name), h.attributes.get(attribute_name)
            if before != after and attribute_name != "location.ip":
                declared = after if after is not None else before
                assert declared is not None
                if not declared.derived:
                    ctx.variable(attribute_name, declared)
        sb = encode(b, ctx, Locator(base.sources))
        sh = encode(h, ctx, Locator(head.sources))
        if b.timezone != h.timezone and any(n in ctx.variables for n in _TIME_DERIVED):
            raise Unsupported(f"the time zone changed ({b.timezone} → {h.timezone}) and a rule reads the "
                              "local time: the prover models one clock")
    except UnsupportedAt as exc:
        proof.fields = [FieldProof(k, "unknown", "smt", exc.message, exc.location) for k in keys]
        proof.seconds = time.perf_counter() - started
        return proof
    except Unsupported as exc:
        proof.fields = [FieldProof(k, "unknown", "smt", exc.message) for k in keys]
        proof.seconds = time.perf_counter() - started
        return proof
    if grid is None and grid_scenarios > 0:
        grid = diff_policies(base, head, max_scenarios=grid_scenarios, only=name)
    findings = _grid_findings(grid, base.get(name), head.get(name)) if grid is not None else {}
    valid = [*sb.facts, *sh.facts]
    declarations = {**b.attributes, **h.attributes}
    for key in keys:
        field_started = time.perf_counter()
        result = _prove_field(key, sb, sh, ctx, valid, declarations, b, h, findings, timeout)
        result.seconds = time.perf_counter() - field_started
        proof.fields.append(result)
    proof.seconds = time.perf_counter() - started
    return proof


def _grid_findings(report: DiffReport, b: CompiledPolicy, h: CompiledPolicy) -> dict[str, Counterexample]:
    """The change kinds the grid already shows for this policy, each with its example as decisions."""
    found: dict[str, Counterexample] = {}
    for group in report.groups:
        if group.policy == b.name and group.kind not in found:
            ex = group.example()
            found[group.kind] = _counterexample(b, h, ex.context, ex.now)
    return found


def _counterexample(b: CompiledPolicy, h: CompiledPolicy, context: dict[str, Any], now: datetime) -> Counterexample:
    decisions: list[Decision | None] = []
    refused = []
    for side, policy in (("base", b), ("head", h)):
        try:
            decisions.append(policy.decide(declared_part(policy, context), now))
        except ContextError as exc:
            decisions.append(None)
            refused.append(f"{side} refuses it: " + "; ".join(f"{p.path}: {p.message}" for p in exc.problems))
    return Counterexample(context, now, decisions[0], decisions[1], "; ".join(refused))


def _prove_field(key: str, sb: SymbolicDecision, sh: SymbolicDecision, ctx: SymbolicContext, valid: list[Any],
                 declarations: Any, b: CompiledPolicy, h: CompiledPolicy, grid: dict[str, Counterexample],
                 timeout: float) -> FieldProof:
    if key in NOT_PROVED:
        return FieldProof(key, "not proved", "grid", NOT_PROVED[key])
    products = [*sb.products, *sh.products]
    if key in CONSTANT_FIELDS:
        return FieldProof(key, "equivalent", "constant", "one value for every decision")
    if key == "context":
        label, loosen, differ = "context accepted", _and(sh.valid, _not(sb.valid)), sh.valid != sb.valid
        facts: list[Any] = []
    else:
        spec = DECISION_FIELDS[key]
        label = spec.labels[0]
        loosen, differ, relevant = _questions(key, sb, sh)
        facts = [*valid, relevant]
    directed = key == "context" or DECISION_FIELDS[key].rank is not None
    if directed and label in grid:
        return FieldProof(key, "loosens", "grid", counterexample=grid[label])
    kinds = set(_labels(key)) | {f"{key} changed"}
    if not directed and any(kind in grid for kind in kinds):
        return FieldProof(key, "changes", "grid", counterexample=grid[next(k for k in kinds if k in grid)])

    def confirm(context: dict[str, Any], now: datetime) -> Any:
        before, after = decide_outcome(b, context, now), decide_outcome(h, context, now)
        if any(kind == label for kind, _ in change_kinds(before, after)):
            return _counterexample(b, h, context, now)
        return None

    if directed:
        found = search(ctx, facts, loosen, declarations, h.timezone, confirm, timeout, products)
        if found.status == "sat":
            return FieldProof(key, "loosens", "smt", counterexample=found.witness)
        if found.status == "unknown":
            return FieldProof(key, "unknown", "smt", found.reason)
        if any(kind in grid for kind in kinds):
            return FieldProof(key, "never loosens", "smt")

    def differs(context: dict[str, Any], now: datetime) -> Any:
        before, after = decide_outcome(b, context, now), decide_outcome(h, context, now)
        if any(kind in kinds for kind, _ in change_kinds(before, after)):
            return _counterexample(b, h, context, now)
        return None

    changed = search(ctx, facts, differ, declarations, h.timezone, differs, timeout, products)
    if changed.status == "unsat":
        return FieldProof(key, "equivalent", "smt")
    if not directed:
        if changed.status == "sat":
            return FieldProof(key, "changes", "smt", counterexample=changed.witness)
        return FieldProof(key, "unknown", "smt", changed.reason)
    return FieldProof(key, "never loosens", "smt")


def _labels(key: str) -> tuple[str, ...]:
    if key == "context":
        return ("context accepted", "context refused")
    return DECISION_FIELDS[key].labels


def _questions(key: str, b: SymbolicDecision, h: SymbolicDecision) -> tuple[Any, Any, Any]:
    """(HEAD looser than BASE, HEAD different from BASE, when the field counts) for one field."""
    both_allow = _and(b.allow, h.allow)
    if key == "allow":
        return _and(_not(b.allow), h.allow), b.allow != h.allow, z3.BoolVal(True)
    if key == "tier":
        return FALSE, _optional_differs(b.tier, h.tier), z3.BoolVal(True)
    flags: dict[str, Callable[[SymbolicDecision], Any]] = {
        "refresh.rotation": lambda d: d.rotation, "refresh.sender_constrained": lambda d: d.sender_constrained,
        "step_up": lambda d: d.step_up}
    if key in flags:
        fb, fh = flags[key](b), flags[key](h)
        return _and(fb, _not(fh)), fb != fh, both_allow
    if key in ("access_ttl", "refresh_ttl"):
        vb, vh = getattr(b, key), getattr(h, key)
        return vh > vb, vh != vb, both_allow
    limits: dict[str, Callable[[SymbolicDecision], Maybe]] = {
        "refresh.idle_timeout": lambda d: d.idle_timeout, "refresh.max_session": lambda d: d.max_session,
        "expires_at.session": lambda d: d.session_end}
    if key in limits:
        ob, oh = limits[key](b), limits[key](h)  # absent ranks as infinite
        looser = _or(_and(ob.has, _not(oh.has)), _and(ob.has, oh.has, oh.value > ob.value))
        return looser, _optional_differs(ob, oh), both_allow
    if key == "refresh.reuse_grace":
        default = z3.IntVal(MAX_REUSE_GRACE)  # absent: the issuer's default, up to the maximum
        gb = z3.If(b.reuse_grace.has, b.reuse_grace.value, default)
        gh = z3.If(h.reuse_grace.has, h.reuse_grace.value, default)
        return gh > gb, _optional_differs(b.reuse_grace, h.reuse_grace), both_allow
    raise ValueError(f"no proof for decision field {key!r}")  # a field added to DECISION_FIELDS: add it here


def _optional_differs(a: Maybe, b: Maybe) -> Any:
    return _or(a.has != b.has, _and(a.has, b.has, a.value != b.value))


__all__ = ["Counterexample", "FieldProof", "PolicyProof", "prove_diff", "prove_policy"]
