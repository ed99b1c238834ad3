"""Asking the solver, with a time limit, and never showing a counterexample that does not replay.

:func:`search` looks for a request satisfying a goal. The answer is ``unsat`` (no request
does: the property is proved), a model that :func:`search`'s ``confirm`` callback replayed
through the real evaluator (a counterexample), or ``unknown`` with the reason: the time limit,
the solver giving up, or models that did not replay (the symbolic model over-approximates the
clock, see :mod:`ttlpolicy.prove.symbols`; each such model is excluded and the solver asked
again, a few times).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

import z3

from ..durations import MAX_DURATION
from ..model import Attribute
from .encode import SymbolicDecision
from .symbols import SymbolicContext, assignment

DEFAULT_TIMEOUT = 10.0  # seconds per solver query
_RETRIES = 3


@dataclass
class Found:
    """What a search ended with: ``status`` is ``unsat``, ``sat`` (``context``/``now`` set, and
    ``witness`` whatever ``confirm`` returned for it) or ``unknown`` (``reason``)."""

    status: str
    context: dict[str, Any] | None = None
    now: datetime | None = None
    witness: Any = None
    reason: str = ""
    seconds: float = 0.0


# Replays a candidate request through the real evaluator: the evidence, or None if it does not hold.
Confirm = Callable[[dict[str, Any], datetime], Any]


def new_solver(timeout: float) -> Any:
    """A solver that turns IEEE 754 arithmetic into bit-vectors before the SMT core sees it
    (several times faster on the lifetime products than the default strategy)."""
    solver = z3.Then("simplify", "propagate-values", "solve-eqs", "fpa2bv", "simplify", "smt").solver()
    solver.set("timeout", max(1, int(timeout * 1000)))
    return solver


def search(ctx: SymbolicContext, facts: list[Any], goal: Any, declarations: Mapping[str, Attribute], zone: str,
           confirm: Confirm, timeout: float = DEFAULT_TIMEOUT, products: Sequence[Any] = (),
           exact: bool = True) -> Found:
    """A request satisfying ``facts`` and ``goal`` that ``confirm`` accepts, or why there is none.

    ``products`` are the decisions' whole-second products of factors (IEEE 754 multiplications,
    slow to solve). They are first replaced by free values between 0 and 100 years — the same
    product (the same term on both sides of a diff) by the same value. That abstraction allows
    more than the real products can give, so "unsat" there is a proof, and a model of it is kept
    if it replays; otherwise the exact question is asked with the time that is left (unless
    ``exact`` is false: then the answer is what the abstraction gave).""" 
    started = time.perf_counter()
    if products:
        free: dict[int, tuple[Any, Any]] = {}
        for term in products:
            free.setdefault(term.get_id(), (term, z3.FreshInt("product")))
        pairs = list(free.values())
        bounds = [z3.And(v >= 0, v <= MAX_DURATION) for _, v in pairs]
        abstract = [z3.substitute(t, *pairs) for t in [*facts, goal]]
        found = _search(ctx, [*abstract[:-1], *bounds], abstract[-1], declarations, zone, confirm,
                        min(timeout, max(1.0, timeout / 4)), started, retries=_RETRIES)
        if found.status in ("unsat", "sat") or not exact:
            return found
        # The exact question bit-blasts the products, where z3 may overrun its time limit.
        left = timeout - (time.perf_counter() - started)
        if left <= 0:
            return Found("unknown", reason=f"time limit of {timeout:g}s reached", seconds=time.perf_counter() - started)
        return bounded(lambda: _search(ctx, facts, goal, declarations, zone, confirm, timeout, started), left)
    return _search(ctx, facts, goal, declarations, zone, confirm, timeout, started)


def _search(ctx: SymbolicContext, facts: list[Any], goal: Any, declarations: Mapping[str, Attribute], zone: str,
            confirm: Confirm, timeout: float, started: float, retries: int = _RETRIES) -> Found:
    solver = new_solver(timeout)
    solver.add(*ctx.constraints(), *facts, goal)
    if timeout - (time.perf_counter() - started) <= 0:
        return Found("unknown", reason=f"time limit of {timeout:g}s reached", seconds=time.perf_counter() - started)
    for _ in range(retries):
        left = timeout - (time.perf_counter() - started)
        if left <= 0:
            break
        solver.set("timeout", max(1, int(left * 1000)))
        answer = _check(solver, left)
        if answer == z3.unsat:
            return Found("unsat", seconds=time.perf_counter() - started)
        if answer != z3.sat:
            reason = solver.reason_unknown()
            text = f"time limit of {timeout:g}s reached" if "timeout" in reason or "canceled" in reason \
                else f"the solver gave up ({reason})"
            return Found("unknown", reason=text, seconds=time.perf_counter() - started)
        model = solver.model()
        context, now = ctx.concrete(model, declarations, zone)
        witness = confirm(context, now)
        if witness is not None:
            return Found("sat", context, now, witness, seconds=time.perf_counter() - started)
        solver.add(_exclude(ctx, model))
    return Found("unknown", reason="the solver's counterexamples did not replay through the evaluator "
                 f"(tried {retries})", seconds=time.perf_counter() - started)


def _check(solver: Any, seconds: float) -> Any:
    """``solver.check()``, interrupted after ``seconds`` where z3 looks for interruptions."""
    timer = threading.Timer(seconds + 0.05, solver.ctx.interrupt)
    timer.start()
    try:
        return solver.check()
    finally:
        timer.cancel()


def bounded(run: Callable[[], Found], seconds: float) -> Found:
    """``run()`` in a forked child that is killed after ``seconds``: z3 does not look at its time
    limit (nor at an interruption) while it bit-blasts floating-point terms, which can take
    several times the limit, so the limit is kept by the operating system. Where ``fork`` is not
    available the search runs here, bounded by z3's own limit only."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return run()
    started = time.perf_counter()
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=_child, args=(run, send), daemon=True)
    child.start()
    send.close()
    try:
        if receive.poll(seconds + 0.5):
            try:
                found: Found = receive.recv()
                return found
            except EOFError:
                return Found("unknown", reason="the solver stopped without an answer",
                             seconds=time.perf_counter() - started)
        return Found("unknown", reason=f"time limit of {seconds:g}s reached", seconds=time.perf_counter() - started)
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()


def _child(run: Callable[[], Found], send: Any) -> None:
    try:
        send.send(run())
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the parent gets an answer
        send.send(Found("unknown", reason=f"the solver failed: {type(exc).__name__}: {exc}"))
    finally:
        send.close()


def _exclude(ctx: SymbolicContext, model: Any) -> Any:
    """Not this model again (on the request's variables)."""
    terms = [ctx.now, ctx.ip_present, ctx.ip_version, ctx.ip_value]
    for variable in ctx.variables.values():
        terms += [variable.term, variable.present]
    same = [t == model.eval(t, model_completion=True) for t in terms if not z3.is_true(t)]
    return z3.Not(z3.And(*same))


def evaluate(ctx: SymbolicContext, decision: SymbolicDecision, context: Mapping[str, Any], now: datetime
             ) -> dict[str, Any]:
    """Model evaluation: every symbolic field for one concrete request, as Python values
    (for the differential test, which compares these with the real decision)."""
    activation = decision.policy.context.activation(context, now)
    pairs = assignment(ctx, activation, context, now)
    # z3.substitute checks every pair in Python on every call; the C API takes the arrays once.
    z3ctx = decision.allow.ctx
    sources = (z3.Ast * len(pairs))(*[a.as_ast() for a, _ in pairs])
    targets = (z3.Ast * len(pairs))(*[b.as_ast() for _, b in pairs])

    def substituted(term: Any) -> Any:
        term = term if z3.is_expr(term) else z3.BoolVal(bool(term))
        replaced = z3.Z3_substitute(z3ctx.ref(), term.as_ast(), len(pairs), sources, targets)
        return z3.simplify(z3.z3._to_expr_ref(replaced, z3ctx))

    def value(term: Any) -> Any:
        result = substituted(term)
        if z3.is_true(result) or z3.is_false(result):
            return z3.is_true(result)
        if z3.is_bv_value(result):
            return result.as_signed_long()
        if z3.is_int_value(result):
            return result.as_long()
        if z3.is_string_value(result):
            return result.as_string()
        raise ValueError(f"not a value: {result}")  # pragma: no cover - every variable is assigned

    def optional(field: Any) -> Any:
        return value(field.value) if value(field.has) else None

    session = optional(decision.session_end)
    return {
        "allow": value(decision.allow), "access_ttl": value(decision.access_ttl),
        "refresh_ttl": value(decision.refresh_ttl), "rotation": value(decision.rotation),
        "idle_timeout": optional(decision.idle_timeout), "max_session": optional(decision.max_session),
        "reuse_grace": optional(decision.reuse_grace), "sender_constrained": value(decision.sender_constrained),
        "session_end": session, "step_up": value(decision.step_up), "tier": optional(decision.tier),
        "matched": sorted(name for name, term in decision.matched.items() if value(term)),
        "errors": sorted(name for name, term in decision.errors.items() if value(term) > 0),
    }


__all__ = ["DEFAULT_TIMEOUT", "Found", "evaluate", "new_solver", "search"]
