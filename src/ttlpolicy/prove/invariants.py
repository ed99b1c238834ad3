"""Invariants: a property of every decision, proved for every valid request or refuted by one.

An invariant, written in a policy test file (see :mod:`ttlpolicy.testing`)::

    invariants:
      - name: finance tokens never live longer than 30 minutes
        when: tier == "finance"                    # CEL over the context (default: true)
        always: decision.access_ttl <= duration("30m")

``when`` reads the context's attributes; ``always`` reads them and the decision:
``decision.allow``, ``decision.access_ttl`` and ``decision.refresh_ttl`` (durations),
``decision.step_up``, ``decision.tier``, ``decision.matched`` and ``decision.errors`` (lists of
rule names), ``decision.refresh.rotation``, ``decision.refresh.sender_constrained`` and
``decision.refresh.idle_timeout`` / ``max_session`` / ``reuse_grace`` (durations, absent when
unset: ``has(decision.refresh.idle_timeout)``). A request breaks the invariant when ``when``
is not false (an error counts) and ``always`` is not true (an error counts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import z3

from ..cel.parse import CelSyntaxError, parse
from ..decision import Decision
from ..errors import ContextError, Location
from ..policyset import PolicySet
from ..program import CompiledPolicy
from .cel import FALSE, TRUE, Sym, Translator, UnknownName, _and, _not, _or
from .encode import Locator, SymbolicDecision, UnsupportedAt, encode
from .solve import DEFAULT_TIMEOUT, Found, search
from .symbols import US, SymbolicContext, Unsupported

# Locates a construct of an invariant: (which expression, line, column) -> file location.
InvariantLocator = Callable[[str, int, int], Location]


@dataclass
class InvariantResult:
    """``proved``, ``refuted`` (with a replayed counterexample), ``unknown`` (why, and where when
    a construct is not modelled) or ``error`` (the invariant itself is wrong)."""

    name: str
    policy: str
    location: Location
    status: str
    how: str = ""  # smt | grid
    reason: str = ""
    where: Location | None = None  # the construct behind "unknown" or "error"
    context: dict[str, Any] | None = None
    now: datetime | None = None
    decision: Decision | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "proved"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "policy": self.policy, "status": self.status, "how": self.how,
                               "location": self.location.to_dict(), "seconds": round(self.seconds, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.where is not None:
            out["where"] = self.where.to_dict()
        if self.context is not None and self.now is not None:
            out["counterexample"] = {"context": self.context, "now": self.now.isoformat(),
                                     "decision": self.decision.to_dict() if self.decision else None}
        return out


def decision_activation(decision: Decision) -> dict[str, Any]:
    """``decision.*`` as the CEL values an invariant reads (durations as timedelta)."""

    def duration(seconds: int | None) -> timedelta | None:
        return None if seconds is None else timedelta(seconds=seconds)

    refresh: dict[str, Any] = {"rotation": decision.rotation, "sender_constrained": decision.sender_constrained}
    for key in ("idle_timeout", "max_session", "reuse_grace"):
        if getattr(decision, key) is not None:
            refresh[key] = duration(getattr(decision, key))
    out: dict[str, Any] = {"allow": decision.allow, "access_ttl": duration(decision.access_ttl),
                           "refresh_ttl": duration(decision.refresh_ttl), "step_up": decision.step_up,
                           "matched": list(decision.matched), "errors": sorted({e.rule for e in decision.errors}),
                           "refresh": refresh}
    if decision.tier is not None:
        out["tier"] = decision.tier
    return out


def check_invariant(policies: PolicySet, policy: str | None, name: str, when: str, always: str,
                    location: Location, locate: InvariantLocator, *, timeout: float = DEFAULT_TIMEOUT,
                    grid_scenarios: int = 2000) -> InvariantResult:
    """Prove ``always`` for every valid request where ``when`` holds, or find one where it does not."""
    started = time.perf_counter()
    compiled = policies.get(policy)
    result = InvariantResult(name, compiled.name, location, "unknown")
    try:
        violated = _native(when, always, locate)
    except _InvariantError as exc:
        result.status, result.reason, result.where = "error", exc.message, exc.location
        return result
    ctx = SymbolicContext()
    unmodelled: tuple[str, Location | None] | None = None
    try:
        symbolic = encode(compiled, ctx, Locator(policies.sources))
        goal = _goal(symbolic, ctx, when, always, locate)
    except UnsupportedAt as exc:
        unmodelled = (exc.message, exc.location)
    except Unsupported as exc:  # not tied to one expression (a declaration, say)
        unmodelled = (exc.message, None)
    except _Unmodelled as exc:
        unmodelled = (exc.message, exc.location)
    except _InvariantError as exc:
        result.status, result.reason, result.where = "error", exc.message, exc.location
        return result
    def confirm(context: dict[str, Any], now: datetime) -> Any:
        return violated(compiled, context, now)

    if unmodelled is None:
        # First the quick question (products of factors as free values): most proofs end here.
        quick = search(ctx, symbolic.facts, goal, compiled.attributes, compiled.timezone, confirm, timeout,
                       symbolic.products, exact=False)
        if quick.status in ("unsat", "sat"):
            return _answer(result, quick, started)
    # A violation the grid finds needs no solver (and is a real decision by construction).
    found = _grid_search(compiled, violated, grid_scenarios) if grid_scenarios > 0 else None
    if found is not None:
        result.status, result.how = "refuted", "grid"
        result.context, result.now, result.decision = found
        result.seconds = time.perf_counter() - started
        return result
    if unmodelled is not None:
        result.reason, result.where = unmodelled
        result.seconds = time.perf_counter() - started
        return result
    answer = search(ctx, symbolic.facts, goal, compiled.attributes, compiled.timezone, confirm, timeout,
                    symbolic.products)
    return _answer(result, answer, started)


def _answer(result: InvariantResult, answer: Found, started: float) -> InvariantResult:
    result.how = "smt"
    result.seconds = time.perf_counter() - started
    if answer.status == "unsat":
        result.status = "proved"
    elif answer.status == "sat":
        result.status = "refuted"
        result.context, result.now, result.decision = answer.witness
    else:
        result.reason = answer.reason
    return result


class _InvariantError(Exception):
    def __init__(self, message: str, location: Location):
        super().__init__(message)
        self.message, self.location = message, location


class _Unmodelled(_InvariantError):
    pass


Violation = tuple[dict[str, Any], datetime, Decision]
Check = Callable[[CompiledPolicy, dict[str, Any], datetime], "Violation | None"]


def _native(when: str, always: str, locate: InvariantLocator) -> Check:
    """The invariant evaluated on one real decision: the violation, or None."""
    from ..cel.native import UnsupportedExpression, compile_expression

    programs = []
    for part, text in (("when", when), ("always", always)):
        try:
            programs.append(compile_expression(parse(text)))
        except CelSyntaxError as exc:
            raise _InvariantError(exc.issue.message, locate(part, exc.issue.line, exc.issue.column)) from None
        except UnsupportedExpression as exc:
            raise _InvariantError(exc.message, locate(part, exc.line, exc.column)) from None
    when_fn, always_fn = programs

    def violated(policy: CompiledPolicy, context: dict[str, Any], now: datetime) -> Violation | None:
        try:
            decision = policy.decide(context, now, explain=True)
            activation = policy.context.activation(context, now)
        except ContextError:
            return None  # not a valid request: nothing to break
        activation["decision"] = decision_activation(decision)
        if _outcome(when_fn, activation) is False:
            return None
        if _outcome(always_fn, activation) is True:
            return None
        return context, now, decision

    return violated


def _outcome(fn: Callable[[Mapping[str, Any]], Any], activation: Mapping[str, Any]) -> Any:
    try:
        return fn(activation)
    except Exception:  # noqa: BLE001 - an error is neither true nor false: the invariant does not hold
        return None


def _grid_search(policy: CompiledPolicy, violated: Check, scenarios: int) -> Violation | None:
    from ..diffing import build_grid, scenario_context

    grid = build_grid(policy, policy)
    for scenario in grid.scenarios(scenarios):
        context, now = scenario_context(scenario, grid.timezone)
        found = violated(policy, context, now)
        if found is not None:
            return found
    return None


def _goal(d: SymbolicDecision, ctx: SymbolicContext, when: str, always: str, locate: InvariantLocator) -> Any:
    def decision_symbol(path: tuple[str, ...]) -> Sym | None:
        key = ".".join(path[1:])
        flags = {"allow": d.allow, "step_up": d.step_up, "refresh.rotation": d.rotation,
                 "refresh.sender_constrained": d.sender_constrained}
        if key in flags:
            return Sym("bool", flags[key])
        if key in ("access_ttl", "refresh_ttl"):
            return Sym("duration", getattr(d, key) * US)
        optional = {"refresh.idle_timeout": d.idle_timeout, "refresh.max_session": d.max_session,
                    "refresh.reuse_grace": d.reuse_grace}
        if key in optional:
            return Sym("duration", optional[key].value * US, _not(optional[key].has))
        if key == "tier":
            return Sym("string", d.tier.value, _not(d.tier.has))
        if key == "matched":
            return Sym("names", (d.matched, _count(d.matched.values())))
        if key == "errors":
            return Sym("names", ({n: c > 0 for n, c in d.errors.items()}, z3.Sum(*d.errors.values())
                                 if d.errors else z3.IntVal(0)))
        return None

    def presence(path: tuple[str, ...]) -> Any:
        if path[0] != "decision":
            return base_presence(path)
        key = ".".join(path[1:])
        optional = {"refresh.idle_timeout": d.idle_timeout, "refresh.max_session": d.max_session,
                    "refresh.reuse_grace": d.reuse_grace, "tier": d.tier}
        if key in optional:
            return optional[key].has
        return TRUE if decision_symbol(path) is not None else None

    from .encode import _Encoder  # the same attribute model as the policy's conditions

    encoder = _Encoder(d.policy, ctx, Locator({}))
    base_presence = encoder.presence

    def lookup(path: tuple[str, ...]) -> Sym | None:
        if path[0] == "decision":
            return decision_symbol(path)
        return encoder.lookup(path)

    parts = {}
    for part, text in (("when", when), ("always", always)):
        try:
            parts[part] = Translator(lookup, presence).translate(parse(text))
        except UnknownName as exc:
            raise _InvariantError(exc.message, locate(part, exc.line, exc.column)) from None
        except Unsupported as exc:
            raise _Unmodelled(exc.message, locate(part, exc.line, exc.column)) from None
        if parts[part].kind not in ("bool", "error"):
            raise _InvariantError(f"`{part}` must be bool, but this is {parts[part].kind}", locate(part, 1, 1))
    w, a = parts["when"], parts["always"]
    applies = _or(w.term, w.err) if w.kind == "bool" else TRUE
    holds = _and(_not(a.err), a.term) if a.kind == "bool" else FALSE
    return _and(applies, _not(holds))


def _count(flags: Any) -> Any:
    terms = [z3.If(f, 1, 0) for f in flags]
    return z3.Sum(*terms) if terms else z3.IntVal(0)


__all__ = ["InvariantResult", "check_invariant", "decision_activation"]
