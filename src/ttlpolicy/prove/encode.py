"""A compiled policy as SMT terms: every field of the decision as a function of the context.

This is :mod:`ttlpolicy.evaluate` written once more, over terms instead of values, step by
step in the same order: collect (matched rules apply everything, rules whose condition fails
only their tightening effects), combine (base, factors in ascending order with IEEE 754
rounding, the highest floor, the lowest cap, the tier ceiling, whole seconds with the
evaluator's tolerance), the idle timeout, the session, the global limits and deny. The
differential test (``tests/test_prove_differential.py``) holds the two to each other on
thousands of random contexts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import lark
import z3

from ..cel.parse import CelSyntaxError, parse
from ..durations import MAX_DURATION
from ..evaluate import seconds
from ..errors import Location, ProblemCollector
from ..load import Document, parse_document
from ..model import Attribute
from ..program import CompiledPolicy, CompiledRule, TtlOps
from ..validate import parse_zones
from .cel import FALSE, TRUE, Sym, Translator, _and, _not, _or, lift
from .symbols import DOUBLE, RNE, US, SymbolicContext, Unsupported

_EPSILON = 1e-6  # the evaluator's tolerance (evaluate.EPSILON)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class UnsupportedAt(Exception):
    """The prover cannot model a construct of the policy: where, and what."""

    def __init__(self, location: Location, message: str):
        super().__init__(f"{location}: {message}")
        self.location, self.message = location, message


@dataclass(frozen=True)
class Maybe:
    """A field that may be ``None`` in the decision: whether it ``has`` a value, and the value."""

    has: Any
    value: Any


@dataclass
class SymbolicDecision:
    """Every compared field of one policy's decision, as terms over a :class:`SymbolicContext`."""

    policy: CompiledPolicy
    valid: Any  # the context is accepted by this policy
    allow: Any
    access_ttl: Any
    refresh_ttl: Any
    rotation: Any
    idle_timeout: Maybe
    max_session: Maybe
    reuse_grace: Maybe
    sender_constrained: Any
    session_end: Maybe  # microseconds since the epoch
    step_up: Any
    tier: Maybe
    matched: dict[str, Any] = field(default_factory=dict)  # rule -> matched
    errors: dict[str, Any] = field(default_factory=dict)  # rule -> number of error entries (Int)
    # The whole-second products of the factors (one per lifetime): the costly part of a query,
    # which :func:`ttlpolicy.prove.solve.search` first replaces by free values (see there).
    products: list[Any] = field(default_factory=list)

    @property
    def facts(self) -> list[Any]:
        """What every query about this decision assumes: the request is valid for the policy."""
        return [self.valid]


class Locator:
    """File, line and column of a place inside a rule's condition or factor, from the policy
    set's sources (a rule merged from a base is located in the base's file)."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources
        self._documents: dict[str, Document | None] = {}

    def document(self, file: str) -> Document | None:
        if file not in self._documents:
            text = self.sources.get(file)
            self._documents[file] = parse_document(text, ProblemCollector(file)) if text is not None else None
        return self._documents[file]

    def __call__(self, policy: CompiledPolicy, rule: CompiledRule, part: tuple[str | int, ...], text: str,
                 line: int, column: int) -> Location:
        index = next((r.index for r in policy.document.rules if r.name == rule.name), 0)
        doc = self.document(rule.file)
        if doc is None:
            return Location(rule.file, rule.line or 1, column)
        path: tuple[str | int, ...] = ("rules", index, *part)
        if path not in doc.value_marks and part[-1] == "expr":
            path = path[:-1]  # the short form: multiply: "1.0 - user.risk"
        lines = text.split("\n")
        offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
        return doc.string_location(path, offset)


def encode(policy: CompiledPolicy, ctx: SymbolicContext, locate: Locator) -> SymbolicDecision:
    """The policy's decision as terms; raises :class:`UnsupportedAt` for what it cannot model."""
    encoder = _Encoder(policy, ctx, locate)
    return encoder.decision()


class _Target:
    def __init__(self) -> None:
        self.static: list[tuple[float, str, Any]] = []  # (factor, rule, applied)
        self.dynamic: list[tuple[Any, Any]] = []  # (factor term, applied)
        self.floors: list[tuple[int, Any]] = []
        self.caps: list[tuple[int, Any]] = []


class _Encoder:
    def __init__(self, policy: CompiledPolicy, ctx: SymbolicContext, locate: Locator):
        self.policy, self.ctx, self.locate = policy, ctx, locate
        self.attributes = policy.attributes
        self.zones = tuple((net.version, int(net.network_address), int(net.broadcast_address), name)
                           for net, name in parse_zones(policy.document))
        for name, attribute in self.attributes.items():
            if attribute.required and not attribute.derived and name != "location.ip":
                ctx.variable(name, attribute)  # a request must carry it: it is part of every context

    # -- attributes ---------------------------------------------------------------------------

    def lookup(self, path: tuple[str, ...]) -> Sym | None:
        name = ".".join(path)
        attribute = self.attributes.get(name)
        if attribute is None:
            return None
        return self.attribute(name, attribute)

    def attribute(self, name: str, attribute: Attribute) -> Sym:
        if name == "location.zone":
            return Sym("string", self.ctx.zone_term(self.zones))
        if name == "location.ip":
            raise Unsupported("location.ip as text is not modelled by the prover (location.zone is)")
        if name == "time.date":
            raise Unsupported("time.date is not modelled by the prover")
        variable = self.ctx.variable(name, attribute)
        kind = {"list": "list"}.get(attribute.type, attribute.type)
        if attribute.derived:
            return Sym(kind, variable.term)
        if attribute.default is not None:
            default = lift(_default_value(attribute), _NOWHERE)
            return Sym(kind, z3.If(variable.present, variable.term, default.term))
        return Sym(kind, variable.term, _not(variable.present))

    def presence(self, path: tuple[str, ...]) -> Any:
        name = ".".join(path)
        attribute = self.attributes.get(name)
        if attribute is None:
            namespace = path[0]
            return FALSE if any(n.startswith(namespace + ".") for n in self.attributes) else None
        if name == "location.ip":
            return self.ctx.ip_present
        if attribute.derived:
            return TRUE
        variable = self.ctx.variable(name, attribute)
        return TRUE if attribute.default is not None else variable.present

    def translate(self, rule: CompiledRule, text: str, part: tuple[str | int, ...]) -> Sym:
        try:
            tree = parse(text)
            return Translator(self.lookup, self.presence).translate(tree)
        except Unsupported as exc:
            raise UnsupportedAt(self.locate(self.policy, rule, part, text, exc.line, exc.column),
                                exc.message) from None
        except CelSyntaxError as exc:  # pragma: no cover - a compiled policy parsed already
            raise UnsupportedAt(self.locate(self.policy, rule, part, text, 1, 1), str(exc)) from None

    # -- collect ------------------------------------------------------------------------------

    def decision(self) -> SymbolicDecision:
        policy = self.policy
        defaults = policy.refresh_defaults
        access, refresh = _Target(), _Target()
        rotation: list[Any] = [TRUE] if defaults.rotation else []
        bound: list[Any] = [TRUE] if defaults.sender_constrained else []
        grace = [(defaults.reuse_grace, TRUE)] if defaults.reuse_grace is not None else []
        idle = [(defaults.idle_timeout, TRUE)] if defaults.idle_timeout else []
        session = [(defaults.max_session, TRUE)] if defaults.max_session else []
        denies: list[Any] = []
        step_ups: list[Any] = []
        matched_by: dict[str, Any] = {}
        errors_by: dict[str, Any] = {}
        for rule in policy.rules:
            condition = self.translate(rule, rule.when, ("when",))
            if condition.kind == "error":
                matched, errored = FALSE, TRUE
            elif condition.kind != "bool":
                raise UnsupportedAt(self.locate(policy, rule, ("when",), rule.when, 1, 1), "a condition that is not bool")
            else:
                matched = _and(_not(condition.err), condition.term)
                errored = condition.err
            fires = _or(matched, errored)
            error_count: Any = z3.If(errored, 1, 0)
            for ops, target, label in ((rule.access, access, "access_ttl"), (rule.refresh, refresh, "refresh_ttl")):
                if ops is not None:
                    failed = self.effects(rule, ops, target, label, matched, errored, fires)
                    error_count = error_count + z3.If(_and(fires, failed), 1, 0)
            if rule.rotation:
                rotation.append(fires)
            if rule.sender_constrained:
                bound.append(fires)
            if rule.idle_timeout is not None:
                idle.append((rule.idle_timeout, fires))
            if rule.max_session is not None:
                session.append((rule.max_session, fires))
            if rule.reuse_grace is not None:
                grace.append((rule.reuse_grace, fires))
            if rule.deny is not None:
                denies.append(fires)
            if rule.step_up is not None:
                step_ups.append(fires)
            matched_by[rule.name] = matched
            errors_by[rule.name] = error_count
        return self.combine(access, refresh, rotation, bound, grace, idle, session, denies, step_ups,
                            matched_by, errors_by)

    def effects(self, rule: CompiledRule, ops: TtlOps, target: _Target, label: str, matched: Any, errored: Any,
                fires: Any) -> Any:
        """Record one rule's effects on one lifetime; returns when its factor fails to evaluate."""
        failed: Any = FALSE
        if ops.factor_text is not None:
            s = self.translate(rule, ops.factor_text, (label, "multiply", "expr"))
            if s.kind == "error":
                value, failed = z3.FPVal(min(ops.factor_min, 1.0), DOUBLE), TRUE
            else:
                if s.kind != "double":
                    raise UnsupportedAt(self.locate(self.policy, rule, (label, "multiply", "expr"), ops.factor_text,
                                                    1, 1), f"a factor of type {s.kind} (only double is modelled)")
                failed = _or(s.err, z3.fpIsNaN(s.term), z3.fpIsInf(s.term))
                low = z3.FPVal(ops.factor_min, DOUBLE)
                clamped = z3.If(z3.fpGT(low, s.term), low, s.term)  # Python's max(value, low)
                if ops.factor_max is not None:
                    high = z3.FPVal(ops.factor_max, DOUBLE)
                    clamped = z3.If(z3.fpLT(high, clamped), high, clamped)  # min(value, high)
                value = z3.If(failed, z3.FPVal(min(ops.factor_min, 1.0), DOUBLE), clamped)
            applied = _or(matched, _and(errored, z3.fpLEQ(value, z3.FPVal(1.0, DOUBLE))))
            target.dynamic.append((value, applied))
        elif ops.factor is not None:
            applied = _or(matched, errored) if ops.factor <= 1.0 else matched
            target.static.append((ops.factor, rule.name, applied))
        if ops.cap is not None:
            target.caps.append((ops.cap, fires))
        if ops.floor is not None:
            target.floors.append((ops.floor, matched))
        return failed

    # -- combine, bound, limit, deny ------------------------------------------------------------

    def combine(self, access: _Target, refresh: _Target, rotation: list[Any], bound: list[Any],
                grace: list[tuple[int, Any]], idle: list[tuple[int, Any]], session: list[tuple[int, Any]],
                denies: list[Any], step_ups: list[Any], matched: dict[str, Any], errors: dict[str, Any]
                ) -> SymbolicDecision:
        policy = self.policy
        tier = self.lookup(("tier",))
        assert tier is not None  # built in
        tier_has = _not(tier.err)
        tiers = [(name, t, _and(tier_has, tier.term == z3.StringVal(name))) for name, t in policy.tiers.items()]
        products: list[Any] = []
        access_value = self.lifetime(access, [(t.access_ttl, on) for _, t, on in tiers], policy.default_access,
                                     products)
        refresh_value = self.lifetime(refresh, [(t.refresh_ttl, on) for _, t, on in tiers], policy.default_refresh,
                                      products)
        for _, t, on in tiers:
            if t.max_access_ttl is not None:
                access_value = z3.If(_and(on, access_value > t.max_access_ttl), _bv(t.max_access_ttl), access_value)
            if t.max_refresh_ttl is not None:
                refresh_value = z3.If(_and(on, refresh_value > t.max_refresh_ttl), _bv(t.max_refresh_ttl),
                                      refresh_value)
        idle_timeout = _minimum(idle)
        refresh_value = z3.If(_and(idle_timeout.has, refresh_value > idle_timeout.value), idle_timeout.value,
                              refresh_value)
        max_session = _minimum(session)
        session_end = self.session_end(max_session)
        left = session_end.value - self.ctx.now  # microseconds; int(total_seconds()) truncates
        remaining = z3.If(session_end.has, z3.If(left >= 0, left / US, -1), max_session.value)
        bounded = _or(session_end.has, max_session.has)
        session_denied = _and(bounded, remaining <= 0)
        remaining = z3.If(remaining <= 0, _bv(0), remaining)
        access_value = z3.If(_and(bounded, remaining < access_value), remaining, access_value)
        refresh_value = z3.If(_and(bounded, remaining < refresh_value), remaining, refresh_value)
        limits = policy.limits
        if limits.access_ttl.max is not None:
            access_value = z3.If(access_value > limits.access_ttl.max, _bv(limits.access_ttl.max), access_value)
        if limits.access_ttl.min is not None:
            access_value = z3.If(access_value < limits.access_ttl.min, _bv(limits.access_ttl.min), access_value)
        if limits.refresh_ttl.max is not None:
            refresh_value = z3.If(refresh_value > limits.refresh_ttl.max, _bv(limits.refresh_ttl.max), refresh_value)
        if limits.refresh_ttl.min is not None:
            refresh_value = z3.If(z3.And(refresh_value > 0, refresh_value < limits.refresh_ttl.min),
                                  _bv(limits.refresh_ttl.min), refresh_value)
        denied = _or(*denies, session_denied)
        return SymbolicDecision(
            policy=policy, valid=self.ctx.valid(self.attributes), allow=_not(denied),
            access_ttl=z3.If(denied, _bv(0), access_value), refresh_ttl=z3.If(denied, _bv(0), refresh_value),
            rotation=_or(*rotation), idle_timeout=idle_timeout, max_session=max_session,
            reuse_grace=_minimum(grace), sender_constrained=_or(*bound), session_end=session_end,
            step_up=_or(*step_ups), tier=Maybe(tier_has, tier.term), matched=matched, errors=errors,
            products=products)

    def lifetime(self, target: _Target, tier_bases: list[tuple[int | None, Any]], default: int,
                 products: list[Any]) -> Any:
        """Base, factors (ascending, IEEE 754), whole seconds, the highest floor, the lowest cap."""
        result: Any = _static_table(target, tier_bases, default) if not target.dynamic else None
        if result is None:
            base: Any = z3.FPVal(float(default), DOUBLE)
            for value, on in reversed(tier_bases):
                if value is not None:
                    base = z3.If(on, z3.FPVal(float(value), DOUBLE), base)
            product = _product(base, target)
            limit = z3.FPVal(float(MAX_DURATION), DOUBLE)
            # seconds(): floor(value + 1e-6), rounding toward negative as the conversion itself does
            whole = z3.BV2Int(z3.fpToSBV(z3.RTN(), z3.fpAdd(RNE, product, z3.FPVal(_EPSILON, DOUBLE)),
                                         z3.BitVecSort(64)), is_signed=True)
            result = z3.If(z3.fpLEQ(product, limit), whole,
                           z3.If(z3.fpGT(product, limit), _bv(MAX_DURATION), _bv(0)))
            products.append(result)
        for floor, on in target.floors:
            result = z3.If(_and(on, _bv(floor) > result), _bv(floor), result)
        for cap, on in target.caps:
            result = z3.If(_and(on, _bv(cap) < result), _bv(cap), result)
        return result

    def session_end(self, max_session: Maybe) -> Maybe:
        """The earliest of (start + max_session) and the verified token's session_exp."""
        token_start = self._timestamp("token.auth_time")
        user_start = self._timestamp("user.auth_time")
        token_end = self._timestamp("token.session_exp")
        start_has = _or(token_start.has, user_start.has)
        start = z3.If(token_start.has, token_start.value, user_start.value)
        end_has = _and(start_has, max_session.has)
        end = start + max_session.value * _bv(US)
        use_token = _and(token_end.has, _or(_not(end_has), token_end.value < end))
        return Maybe(_or(end_has, token_end.has), z3.If(use_token, token_end.value, end))

    def _timestamp(self, name: str) -> Maybe:
        attribute = self.attributes.get(name)
        if attribute is None or attribute.type != "timestamp":
            return Maybe(FALSE, _bv(0))
        s = self.attribute(name, attribute)
        return Maybe(_not(s.err), s.term)


_NOWHERE = lark.Token("DEFAULT", "")  # lift() locates only errors, which a declared default cannot have


def _default_value(attribute: Attribute) -> Any:
    value = attribute.default
    if attribute.type == "double":
        return float(value)
    if attribute.type == "timestamp":
        from ..context import parse_timestamp

        return parse_timestamp(value)
    return value


def _bv(value: int) -> Any:
    """A whole number of seconds or microseconds (lifetimes and instants are integers)."""
    return z3.IntVal(value)


def _minimum(entries: list[tuple[int, Any]]) -> Maybe:
    has: Any = FALSE
    value: Any = _bv(0)
    for seconds, on in entries:
        value = z3.If(_and(on, _or(_not(has), _bv(seconds) < value)), _bv(seconds), value)
        has = _or(has, on)
    return Maybe(has, value)


_TABLE_NODES = 4000  # beyond this many distinct partial products, the IEEE 754 terms are used instead


def _static_table(target: _Target, tier_bases: list[tuple[int | None, Any]], default: int) -> Any:
    """The whole-second product when every factor is a constant, without any floating point in
    the formula: each path of applied factors is multiplied out here, in Python, exactly as the
    evaluator does (ascending order, the same :func:`ttlpolicy.evaluate.seconds`), and the
    formula chooses among the results by which factors apply. Partial products that coincide
    share their sub-tree, so the formula grows with the number of distinct products, not of
    paths. ``None`` when that number passes :data:`_TABLE_NODES`."""
    factors = sorted(target.static, key=lambda f: (f[0], f[1]))
    bases = [float(default)] + [float(v) for v, _ in tier_bases if v is not None]
    levels: list[set[float]] = [set(bases)]
    for factor, _, _ in factors:
        level = levels[-1] | {value * factor for value in levels[-1]}
        if sum(map(len, levels)) + len(level) > _TABLE_NODES:
            return None
        levels.append(level)
    nodes: dict[float, Any] = {value: _bv(seconds(value)) for value in levels[-1]}
    for index in range(len(factors) - 1, -1, -1):
        factor, _, applied = factors[index]
        nodes = {value: z3.If(applied, nodes[value * factor], nodes[value]) for value in levels[index]}
    result: Any = nodes[float(default)]
    for value, on in reversed(tier_bases):
        if value is not None:
            result = z3.If(on, nodes[float(value)], result)
    return result


def _product(base: Any, target: _Target) -> Any:
    """The factors applied in ascending order, as the evaluator applies them. A factor that
    does not apply multiplies by 1.0, which is exact, so only the order of applied ones matters."""
    one = z3.FPVal(1.0, DOUBLE)
    value = base
    if not target.dynamic:
        for factor, _, applied in sorted(target.static, key=lambda f: (f[0], f[1])):
            value = z3.If(applied, z3.fpMul(RNE, value, z3.FPVal(factor, DOUBLE)), value)
        return value
    # With expression factors the order is only known at run time: insert each into the sorted
    # static ones (an insertion sort over terms), then multiply along the sorted sequence.
    keys: list[Any] = []
    terms: list[Any] = []
    for factor, _, applied in sorted(target.static, key=lambda f: (f[0], f[1])):
        keys.append(z3.FPVal(factor, DOUBLE))
        terms.append(z3.If(applied, z3.FPVal(factor, DOUBLE), one))
    for key, applied in target.dynamic:
        keys.append(key)
        terms.append(z3.If(applied, key, one))
        for j in range(len(keys) - 1, 0, -1):
            swap = z3.fpLT(keys[j], keys[j - 1])
            keys[j], keys[j - 1] = z3.If(swap, keys[j - 1], keys[j]), z3.If(swap, keys[j], keys[j - 1])
            terms[j], terms[j - 1] = z3.If(swap, terms[j - 1], terms[j]), z3.If(swap, terms[j], terms[j - 1])
    for term in terms:
        value = z3.fpMul(RNE, value, term)
    return value


__all__ = ["Locator", "Maybe", "SymbolicDecision", "UnsupportedAt", "encode"]
