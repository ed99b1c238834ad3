"""The context as SMT variables: one per declared attribute, constrained by its declaration.

Every value a request may send is a variable of the matching sort, constrained exactly as
:mod:`ttlpolicy.context` validates it (enum values, ``min``/``max``, the 64-bit range, finite
doubles, timestamps in [1970, 9000), string and list lengths, ISO country codes), plus a
``present`` flag for an attribute without a default. Derived attributes follow what they are
derived from: ``location.zone`` is the zone whose address range holds ``location.ip`` (an
IPv4-mapped IPv6 address counts as IPv4, as in :func:`ttlpolicy.context.parse_ip`).

``time.hour``, ``time.minute`` and ``time.weekday`` are free within their ranges, independent
of ``time.now``: every combination occurs in every time zone, and a request may send its own
``time.zone``. That over-approximates (a proof covers more than the real contexts, so it still
holds); a counterexample is turned into a real instant (see :meth:`SymbolicContext.concrete`)
and replayed through the real evaluator before it is shown.

Timestamps are integers of microseconds since the epoch (what a Python ``datetime`` holds),
lifetimes integers of seconds; doubles are IEEE 754 binary64, so rounding is the evaluator's.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import z3

from ..context import MAX_EPOCH, MAX_LIST, MAX_STRING
from ..model import Attribute
from ..vocabulary import NO_ZONE, WEEKDAYS

DOUBLE = z3.Float64()
RNE = z3.RNE()
US = 1_000_000  # microseconds per second
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAPPED_V4 = (0xFFFF00000000, 0xFFFFFFFFFFFF)  # ::ffff:0:0/96, counted as IPv4 by the evaluator


class Unsupported(Exception):
    """A construct the symbolic compiler does not model; ``line``/``column`` are within the
    expression text when known (the caller turns them into a file location)."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


@dataclass
class Variable:
    """One attribute: its sort's term, whether it was sent (``present``), and its declaration."""

    name: str
    attribute: Attribute
    term: Any
    present: Any  # z3 BoolRef: the request sent it (always true for a derived attribute)


@dataclass
class SymbolicContext:
    """The variables of one proof, shared by every policy compared in it (one request, one
    instant). ``declarations`` maps attribute names to one policy's declarations; a second
    policy's are checked with :meth:`valid` on the same variables."""

    variables: dict[str, Variable] = field(default_factory=dict)
    now: Any = field(default_factory=lambda: z3.Int("time.now"))
    ip_version: Any = field(default_factory=lambda: z3.Int("location.ip#version"))
    ip_value: Any = field(default_factory=lambda: z3.Int("location.ip#value"))
    ip_present: Any = field(default_factory=lambda: z3.Bool("location.ip#present"))

    def variable(self, name: str, attribute: Attribute) -> Variable:
        """The variable for ``name``, created on first use with the sort of its declaration."""
        known = self.variables.get(name)
        if known is not None:
            if known.attribute.type != attribute.type:
                raise Unsupported(f"attribute {name} is declared as {known.attribute.type} and as "
                                  f"{attribute.type}")
            return known
        kind = attribute.type
        if name == "time.now":
            term: Any = self.now
        elif kind == "string":
            term = z3.String(name)
        elif kind == "bool":
            term = z3.Bool(name)
        elif kind in ("int", "timestamp"):
            term = z3.Int(name)
        elif kind == "double":
            term = z3.FP(name, DOUBLE)
        elif kind == "list":
            term = z3.Const(name, z3.SeqSort(z3.StringSort()))
        else:  # pragma: no cover - the schema allows no other type
            raise Unsupported(f"attribute {name} has type {kind}")
        present = z3.BoolVal(True) if attribute.derived else z3.Bool(name + "#sent")
        variable = Variable(name, attribute, term, present)
        self.variables[name] = variable
        return variable

    def zone_term(self, zones: tuple[tuple[int, int, int, str], ...]) -> Any:
        """``location.zone`` as a string term derived from the address variables, for a policy's
        zones as ``(IP version, first address, last address, name)``."""
        term: Any = z3.StringVal(NO_ZONE)
        for version, first, last, name in reversed(zones):
            inside = z3.And(self.ip_present, self.ip_version == version, self.ip_value >= first,
                            self.ip_value <= last)
            term = z3.If(inside, z3.StringVal(name), term)
        return term

    def constraints(self) -> list[Any]:
        """What holds for every request: the instant's range and the address's shape."""
        out = [self.now >= 0, self.now < MAX_EPOCH * US,
               z3.Implies(self.ip_present, z3.Or(
                   z3.And(self.ip_version == 4, self.ip_value >= 0, self.ip_value < 2**32),
                   z3.And(self.ip_version == 6, self.ip_value >= 0, self.ip_value < 2**128,
                          z3.Not(z3.And(self.ip_value >= _MAPPED_V4[0], self.ip_value <= _MAPPED_V4[1])))))]
        for name, variable in self.variables.items():
            if variable.attribute.derived:  # time.hour, time.minute, time.weekday: their ranges
                out.append(_value_constraint(name, variable.attribute, variable))
        return out

    def valid(self, declarations: Mapping[str, Attribute]) -> Any:
        """The context is accepted by a policy with these declarations (for the variables in use)."""
        parts = []
        address = declarations.get("location.ip")
        if address is not None and address.required:
            parts.append(self.ip_present)  # the address is modelled apart (its zone is derived from it)
        for name, variable in self.variables.items():
            attribute = declarations.get(name)
            if attribute is None or attribute.derived:
                continue  # not sent to this policy, or computed: nothing to check
            parts.append(_value_constraint(name, attribute, variable))
            if attribute.required:
                parts.append(variable.present)
        return z3.And(*parts) if parts else z3.BoolVal(True)

    # -- from a model back to a request -------------------------------------------------------

    def concrete(self, model: Any, declarations: Mapping[str, Attribute], zone: str
                 ) -> tuple[dict[str, Any], datetime]:
        """The request and instant a model describes, as JSON-ready values.

        The instant is moved (with every timestamp of the request, so that their differences
        stay) to the nearest one whose local hour, minute and weekday in the request's time
        zone are those of the model."""
        context: dict[str, Any] = {}
        now_us = _int(model, self.now)
        local: dict[str, Any] = {n: model.eval(self.variables[n].term, model_completion=True)
                 for n in ("time.hour", "time.minute", "time.weekday") if n in self.variables}
        zone_name = zone
        tz = self.variables.get("time.zone")
        if tz is not None and z3.is_true(model.eval(tz.present, model_completion=True)):
            zone_name = _string(model.eval(tz.term, model_completion=True))
        shift = _shift_to_local(now_us, zone_name, local)
        for name, variable in sorted(self.variables.items()):
            attribute = declarations.get(name, variable.attribute)
            if attribute.derived or name == "location.ip":
                continue
            if not z3.is_true(model.eval(variable.present, model_completion=True)):
                continue
            value = model.eval(variable.term, model_completion=True)
            _put(context, name, _python(value, attribute.type, shift))
        if z3.is_true(model.eval(self.ip_present, model_completion=True)):
            version, number = _int(model, self.ip_version), _int(model, self.ip_value)
            address = ipaddress.IPv4Address(number) if version == 4 else ipaddress.IPv6Address(number)
            _put(context, "location.ip", str(address))
        return context, _EPOCH + timedelta(microseconds=now_us + shift)


def _put(context: dict[str, Any], name: str, value: Any) -> None:
    namespace, _, leaf = name.partition(".")
    if leaf:
        context.setdefault(namespace, {})[leaf] = value
    else:
        context[namespace] = value


def _value_constraint(name: str, attribute: Attribute, variable: Variable) -> Any:
    term, kind = variable.term, attribute.type
    parts: list[Any] = []
    if kind == "string":
        if attribute.values is not None:
            if any(ord(c) > 0x2FFFF for v in attribute.values for c in v):  # see prove.cel.MAX_CODE_POINT
                raise Unsupported(f"a value of {name} has a character beyond U+2FFFF, which the prover does not model")
            parts.append(z3.Or(*[term == z3.StringVal(v) for v in attribute.values]) if attribute.values
                         else z3.BoolVal(False))
        else:
            parts.append(z3.Length(term) <= MAX_STRING)
        if name == "location.country":
            upper = z3.Range("A", "Z")
            parts.append(z3.InRe(term, z3.Concat(upper, upper)))
        elif name == "time.zone":
            from zoneinfo import available_timezones

            parts.append(z3.Or(*[term == z3.StringVal(n) for n in sorted(available_timezones())]))
    elif kind == "int":
        low = INT_MIN if attribute.min is None else max(INT_MIN, math.ceil(attribute.min))
        high = INT_MAX if attribute.max is None else min(INT_MAX, math.floor(attribute.max))
        parts += [term >= low, term <= high]
    elif kind == "double":
        parts.append(z3.Not(z3.Or(z3.fpIsNaN(term), z3.fpIsInf(term))))
        if attribute.min is not None:
            parts.append(z3.Not(z3.fpLT(term, z3.FPVal(float(attribute.min), DOUBLE))))
        if attribute.max is not None:
            parts.append(z3.Not(z3.fpGT(term, z3.FPVal(float(attribute.max), DOUBLE))))
    elif kind == "timestamp":
        parts += [term >= 0, term < MAX_EPOCH * US]
    elif kind == "list":
        # Element lengths and enum values are not constrained (that needs quantifiers): an
        # over-approximation; a counterexample breaking them is refused on replay.
        parts.append(z3.Length(term) <= MAX_LIST)
    if not parts:
        return z3.BoolVal(True)
    return z3.Implies(variable.present, z3.And(*parts))


def _int(model: Any, term: Any) -> int:
    return int(model.eval(term, model_completion=True).as_long())


def _string(value: Any) -> str:
    """A z3 string value as Python text (z3 escapes characters outside printable ASCII)."""
    text = value.as_string()
    out, i = [], 0
    while i < len(text):
        if text.startswith("\\u{", i):
            end = text.index("}", i)
            out.append(chr(int(text[i + 3:end], 16)))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def double_value(value: Any) -> float:
    bits = z3.simplify(z3.fpToIEEEBV(value)).as_long()
    return float(struct.unpack(">d", bits.to_bytes(8, "big"))[0])


def _python(value: Any, kind: str, shift: int) -> Any:
    if kind == "string":
        return _string(value)
    if kind == "bool":
        return z3.is_true(value)
    if kind == "int":
        return value.as_long()
    if kind == "double":
        return double_value(value)
    if kind == "timestamp":
        return _rfc3339(value.as_long() + shift)
    if kind == "list":
        return [_string(item) for item in _sequence(value)]
    raise Unsupported(f"type {kind}")  # pragma: no cover


def _sequence(value: Any) -> list[Any]:
    """The elements of a z3 sequence value (a concatenation of units, or empty)."""
    if z3.is_app_of(value, z3.Z3_OP_SEQ_CONCAT):
        return [item for child in value.children() for item in _sequence(child)]
    if z3.is_app_of(value, z3.Z3_OP_SEQ_UNIT):
        return [value.arg(0)]
    return []


def _rfc3339(us: int) -> str:
    instant = _EPOCH + timedelta(microseconds=us)
    return instant.isoformat().replace("+00:00", "Z")


def _shift_to_local(now_us: int, zone: str, local: Mapping[str, Any]) -> int:
    """Microseconds to add to ``now_us`` so that its local time in ``zone`` has the model's
    weekday, hour and minute (0 when the model leaves them open or no such instant is near)."""
    if not local:
        return 0
    from zoneinfo import ZoneInfo

    try:
        tz = ZoneInfo(zone)
    except Exception:  # noqa: BLE001 - an unusable zone: keep the instant, replay will tell
        return 0
    now = _EPOCH + timedelta(microseconds=now_us)
    here = now.astimezone(tz)
    weekday = local.get("time.weekday")
    want_day = WEEKDAYS.index(_string(weekday)) if weekday is not None else here.weekday()
    hour = local["time.hour"].as_long() if "time.hour" in local else here.hour
    minute = local["time.minute"].as_long() if "time.minute" in local else here.minute
    best: int | None = None
    for weeks in (0, -1, 1, -2, 2):
        day = here.date() + timedelta(days=(want_day - here.weekday()) + 7 * weeks)
        wall = datetime(day.year, day.month, day.day, hour, minute, here.second, here.microsecond)
        candidate = wall.replace(tzinfo=tz)
        back = candidate.astimezone(timezone.utc).astimezone(tz)
        if (back.hour, back.minute, back.weekday()) != (hour, minute, want_day):
            continue  # a wall time skipped by a daylight-saving change
        shift = (candidate - now) // timedelta(microseconds=1)
        if 0 <= now_us + shift < MAX_EPOCH * US and (best is None or abs(shift) < abs(best)):
            best = shift
    return best or 0


__all__ = ["DOUBLE", "RNE", "US", "SymbolicContext", "Unsupported", "Variable", "double_value"]


def assignment(ctx: SymbolicContext, activation: Mapping[str, Any], sent: Mapping[str, Any], now: datetime
               ) -> list[tuple[Any, Any]]:
    """``(variable, value)`` pairs for one concrete request: ``activation`` is what the real
    evaluator sees (:meth:`ttlpolicy.context.ContextSchema.activation`), ``sent`` the request as
    sent (which attributes it carries). For model evaluation in tests and for replays."""
    pairs: list[tuple[Any, Any]] = [(ctx.now, z3.IntVal(_micros(now)))]
    location = sent.get("location") or {}
    ip = location.get("ip") if isinstance(location, Mapping) else None
    pairs.append((ctx.ip_present, z3.BoolVal(ip is not None)))
    if ip is not None:
        from ..context import parse_ip

        version, number = parse_ip(ip)
        pairs += [(ctx.ip_version, z3.IntVal(version)), (ctx.ip_value, z3.IntVal(number))]
    else:
        pairs += [(ctx.ip_version, z3.IntVal(4)), (ctx.ip_value, z3.IntVal(0))]
    for name, variable in ctx.variables.items():
        if name == "time.now":
            continue
        namespace, _, leaf = name.partition(".")
        source = sent.get(namespace) if leaf else sent
        key = leaf or namespace
        if variable.attribute.derived:
            value = (activation.get(namespace) or {}).get(leaf)
            pairs.append((variable.term, _constant(value, variable.attribute.type)))
            continue
        raw = source.get(key) if isinstance(source, Mapping) else None
        pairs.append((variable.present, z3.BoolVal(raw is not None)))
        if raw is None:
            pairs.append((variable.term, _placeholder(variable.attribute.type)))
        else:
            value = activation[namespace][leaf] if leaf else activation[namespace]
            pairs.append((variable.term, _constant(value, variable.attribute.type)))
    return pairs


def _micros(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(microseconds=1)


def _constant(value: Any, kind: str) -> Any:
    if kind == "string":
        return z3.StringVal(value)
    if kind == "bool":
        return z3.BoolVal(value)
    if kind == "int":
        return z3.IntVal(value)
    if kind == "double":
        return z3.FPVal(float(value), DOUBLE)
    if kind == "timestamp":
        return z3.IntVal(_micros(value))
    seq: Any = z3.Empty(z3.SeqSort(z3.StringSort()))
    for item in value:
        seq = z3.Concat(seq, z3.Unit(z3.StringVal(item)))
    return seq


def _placeholder(kind: str) -> Any:
    """Any value: an attribute that was not sent is never read (reading it is an error)."""
    return {"string": z3.StringVal(""), "bool": z3.BoolVal(False), "int": z3.IntVal(0),
            "double": z3.FPVal(0.0, DOUBLE), "timestamp": z3.IntVal(0),
            "list": z3.Empty(z3.SeqSort(z3.StringSort()))}[kind]
