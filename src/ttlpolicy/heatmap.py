"""Lifetimes as a picture: decide a grid of two chosen dimensions with every other attribute fixed.

A heat-map is the policy's answer over two axes (``time.hour`` × ``device.trust``, or
``tier`` × ``resource.sensitivity``): every cell is a full decision, trace included, for the
fixed context with the two axis values put in. A change map does the same for two versions of
a policy and classifies every cell with :func:`ttlpolicy.diffing.change_kinds`, so the picture
and ``ttlpolicy diff`` never disagree about what "longer" means.

Derived attributes make good axes, so they are set the way a caller would cause them:
``time.hour``/``time.minute``/``time.weekday`` move the decision instant (in the context's
``time.zone`` or the policy's time zone), ``location.zone`` picks an IP inside that zone.

The colours are computed here too (one palette for the SVG the CLI writes and the page the
service shows), on a logarithmic scale because lifetimes span minutes to weeks::

    >>> grid = heatmap(policies.get(), "time.hour", "device.trust", fixed={"tier": "finance"})  # doctest: +SKIP
    >>> grid.cell(3, 0).decision.access_ttl                                                     # doctest: +SKIP
    450
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .program import CompiledPolicy
from .context import check_value
from .decision import Decision
from .diffing import LOOSEN, TIGHTEN, Outcome, change_kinds, decide_outcome, zone_addresses
from .durations import format_duration
from .errors import ContextError, Problem
from .vocabulary import WEEKDAYS

MAX_CELLS = 2500  # the library's default bound; the service and the CLI pass their own
LIFETIMES = ("access", "refresh")
REFERENCE_NOW = "2025-01-08T12:30:00"  # a Wednesday, in the policy's time zone: reproducible pictures
_TIME_AXES = {"time.hour": tuple(range(24)), "time.minute": tuple(range(0, 60, 5)), "time.weekday": WEEKDAYS}
_NUMERIC_STEPS = 10


class GridError(ValueError):
    """A grid that cannot be drawn; ``errors`` lists a :class:`Problem` (with its ``path``) for each reason."""

    def __init__(self, errors: Sequence[Problem], code: str = "invalid-grid"):
        self.errors = list(errors)
        self.code = code
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in self.errors))


class GridTimeout(GridError):
    """The grid took longer than its time budget (``seconds``)."""

    def __init__(self, seconds: float, done: int, total: int):
        self.seconds = seconds
        super().__init__([Problem.field("", "compute-time-exceeded", f"stopped after {seconds:g}s with {done} of {total} cells decided; "
                                      "choose fewer values or a smaller grid")], "compute-time-exceeded")


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: an attribute and the values it takes, with labels for people."""

    attribute: str
    values: tuple[Any, ...]

    @property
    def labels(self) -> list[str]:
        return [axis_label(self.attribute, v) for v in self.values]

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "values": list(self.values), "labels": self.labels}


def axis_label(attribute: str, value: Any) -> str:
    if attribute == "time.hour":
        return f"{value:02d}"
    if attribute == "time.minute":
        return f":{value:02d}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- axes -------------------------------------------------------------------------------------

def dimension_names(policy: CompiledPolicy) -> list[str]:
    """Every attribute of ``policy`` that can be an axis without giving its values."""
    return [name for name in sorted(policy.attributes) if _default_values(policy, name) is not None]


def make_axis(policy: CompiledPolicy, attribute: str, values: Sequence[Any] | None = None,
              path: str = "x") -> Axis:
    """The axis for ``attribute``: ``values`` (checked against the declaration) or its natural values.

    Raises :class:`GridError` for an undeclared attribute, one without natural values (a free
    string, an unbounded number) and no ``values``, or values the declaration refuses.
    """
    if attribute not in policy.attributes:
        raise GridError([Problem.field(f"{path}.attribute", "unknown-attribute", f"policy {policy.name} declares no attribute {attribute!r}; axes: "
                                     f"{', '.join(dimension_names(policy))}")])
    if values is None:
        natural = _default_values(policy, attribute)
        if natural is None:
            raise GridError([Problem.field(f"{path}.values", "values-required", f"{attribute} has no fixed set of values ({_kind(policy, attribute)}); "
                                         "list the values to show")])
        return Axis(attribute, tuple(natural))
    errors = []
    if not values:
        errors.append(Problem.field(f"{path}.values", "invalid-value", "give at least one value"))
    for i, value in enumerate(values):
        why = _value_problem(policy, attribute, value)
        if why:
            errors.append(Problem.field(f"{path}.values[{i}]", "invalid-value", why))
    if len(set(map(repr, values))) != len(values):
        errors.append(Problem.field(f"{path}.values", "invalid-value", "values repeat"))
    if errors:
        raise GridError(errors)
    return Axis(attribute, tuple(values))


def _kind(policy: CompiledPolicy, attribute: str) -> str:
    a = policy.attributes[attribute]
    return f"{a.type}{'' if a.values is None else ' enum'}"


def _default_values(policy: CompiledPolicy, attribute: str) -> list[Any] | None:
    a = policy.attributes[attribute]
    if attribute in _TIME_AXES:
        return list(_TIME_AXES[attribute])
    if attribute == "location.zone":
        return [*policy.document.zones, "none"]
    if attribute == "tier":
        return list(policy.tiers) or None
    if a.derived:
        return None  # time.now, time.date: not a handful of values
    if a.type == "bool":
        return [False, True]
    if a.type == "string":
        return list(a.values) if a.values is not None else None
    if a.type in ("int", "double") and a.min is not None and a.max is not None and a.max > a.min:
        if a.type == "int" and a.max - a.min <= 24:
            return list(range(int(a.min), int(a.max) + 1))
        step = (a.max - a.min) / _NUMERIC_STEPS
        points = [a.min + i * step for i in range(_NUMERIC_STEPS + 1)]
        return [int(round(p)) for p in points] if a.type == "int" else [round(p, 6) for p in points]
    return None


def _value_problem(policy: CompiledPolicy, attribute: str, value: Any) -> str | None:
    """Why ``value`` cannot be put in for ``attribute``, or ``None``."""
    if attribute in _TIME_AXES:
        if value not in _TIME_AXES[attribute] and not (attribute == "time.minute" and value in range(60)):
            allowed = "0-23" if attribute == "time.hour" else "0-59" if attribute == "time.minute" else \
                ", ".join(WEEKDAYS)
            return f"{value!r} is not a value of {attribute} ({allowed})"
        if isinstance(value, bool):
            return f"{value!r} is not a value of {attribute}"
        return None
    if attribute == "location.zone":
        zones = [*policy.document.zones, "none"]
        return None if value in zones else f"{value!r} is not a zone of policy {policy.name} ({', '.join(zones)})"
    a = policy.attributes[attribute]
    if a.derived:
        return f"{attribute} is derived from the decision instant; it cannot be an axis"
    if a.type in ("list", "timestamp"):
        return f"{attribute} is a {a.type}; only strings, numbers and booleans can be axes"
    return check_value(a, value)


# -- putting values into a context ------------------------------------------------------------

def assign(policy: CompiledPolicy, context: dict[str, Any], now: datetime, attribute: str, value: Any
           ) -> datetime:
    """Put ``attribute = value`` into ``context`` (in place); returns the (possibly moved) instant."""
    if attribute in _TIME_AXES:
        local = now.astimezone(_zone_of(policy, context))
        if attribute == "time.hour":
            local = local.replace(hour=value)
        elif attribute == "time.minute":
            local = local.replace(minute=value)
        else:
            local = local + timedelta(days=WEEKDAYS.index(value) - local.weekday())
        return local
    if attribute == "location.zone":
        addresses = zone_addresses(policy)
        value, attribute = addresses[value], "location.ip"
    *namespaces, leaf = attribute.split(".")
    target = context
    for name in namespaces:
        inner = target.get(name)
        target[name] = inner = dict(inner) if isinstance(inner, Mapping) else {}
        target = inner
    target[leaf] = value
    return now


def _zone_of(policy: CompiledPolicy, context: Mapping[str, Any]) -> ZoneInfo:
    time_ns = context.get("time")
    name = time_ns.get("zone") if isinstance(time_ns, Mapping) else None
    try:
        return ZoneInfo(name if isinstance(name, str) and name else policy.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(policy.timezone)  # the context check reports the bad time.zone


def _copy(context: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in context.items()}


def reference_now(policy: CompiledPolicy) -> datetime:
    """The instant used when none is given: a Wednesday 12:30 in the policy's time zone."""
    return datetime.fromisoformat(REFERENCE_NOW).replace(tzinfo=ZoneInfo(policy.timezone))


# -- one policy -------------------------------------------------------------------------------

@dataclass
class Cell:
    x: int
    y: int
    context: dict[str, Any]
    now: datetime
    decision: Decision | None = None
    refused: list[Problem] | None = None


@dataclass
class Heatmap:
    policy: CompiledPolicy
    x: Axis
    y: Axis
    cells: list[Cell]  # row by row: y outer, x inner
    seconds: float

    def cell(self, x: int, y: int) -> Cell:
        return self.cells[y * len(self.x.values) + x]

    def lifetimes(self, lifetime: str) -> list[int]:
        return [getattr(c.decision, f"{lifetime}_ttl") for c in self.cells if c.decision and c.decision.allow]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: axes, a colour scale per lifetime, and every cell with its decision."""
        scales = {name: LogScale.spanning(self.lifetimes(name)) for name in LIFETIMES}
        cells = []
        for c in self.cells:
            out: dict[str, Any] = {"x": c.x, "y": c.y, "context": c.context, "now": c.now.isoformat()}
            if c.decision is not None:
                d = c.decision
                out["decision"] = d.to_dict()
                out["colors"] = {name: cell_color(d, name, scales[name]) for name in LIFETIMES}
            else:
                out["refused"] = [{"path": p.path, "code": p.code, "message": p.message} for p in c.refused or ()]
                out["colors"] = {name: REFUSED_COLOR for name in LIFETIMES}
            cells.append(out)
        return {"policy": {"name": self.policy.name, "digest": self.policy.digest},
                "x": self.x.to_dict(), "y": self.y.to_dict(),
                "legend": {name: scales[name].legend() for name in LIFETIMES},
                "cells": cells, "seconds": round(self.seconds, 4)}


def heatmap(policy: CompiledPolicy, x: str | Axis, y: str | Axis, fixed: Mapping[str, Any] | None = None,
            now: datetime | None = None, max_cells: int = MAX_CELLS, time_budget: float | None = None) -> Heatmap:
    """Decide every (x, y) cell for the ``fixed`` context at ``now`` (default: :func:`reference_now`).

    Raises :class:`GridError` for a bad axis, a grid over ``max_cells``, or a ``fixed``
    context the policy refuses (its problems listed); :class:`GridTimeout` past ``time_budget``
    seconds. A cell whose axis values the policy refuses (a combination it forbids) is kept,
    with ``refused`` set.
    """
    started = time.perf_counter()
    x_axis, y_axis, base, instant = _prepare(policy, x, y, fixed, now, max_cells)
    total = len(x_axis.values) * len(y_axis.values)
    cells: list[Cell] = []
    for cell in _cells(policy, x_axis, y_axis, base, instant):
        _check_budget(started, time_budget, len(cells), total)
        try:
            cell.decision = policy.decide(cell.context, cell.now)
        except ContextError as exc:
            cell.refused = exc.problems
        cells.append(cell)
    return Heatmap(policy, x_axis, y_axis, cells, time.perf_counter() - started)


def _prepare(policy: CompiledPolicy, x: str | Axis, y: str | Axis, fixed: Mapping[str, Any] | None,
             now: datetime | None, max_cells: int) -> tuple[Axis, Axis, dict[str, Any], datetime]:
    errors: list[Problem] = []
    axes: list[Axis] = []
    for path, axis in (("x", x), ("y", y)):
        try:
            axes.append(axis if isinstance(axis, Axis) else make_axis(policy, axis, path=path))
        except GridError as exc:
            errors += exc.errors
    if len(axes) == 2 and axes[0].attribute == axes[1].attribute:
        errors.append(Problem.field("y.attribute", "invalid-value", "x and y must differ"))
    if errors:
        raise GridError(errors)
    x_axis, y_axis = axes
    size = len(x_axis.values) * len(y_axis.values)
    if size > max_cells:
        raise GridError([Problem.field("", "grid-too-large", f"{len(x_axis.values)} × {len(y_axis.values)} = {size} cells; at most "
                                     f"{max_cells} are drawn")], "grid-too-large")
    base = _copy(fixed or {})
    instant = now or reference_now(policy)
    try:
        policy.context.activation(base, instant)
    except ContextError as exc:
        raise GridError([Problem.field(f"fixed.{p.path}" if p.path else "fixed", p.code, p.message)
                         for p in exc.problems], "invalid-context") from None
    return x_axis, y_axis, base, instant


def _cells(policy: CompiledPolicy, x_axis: Axis, y_axis: Axis, base: Mapping[str, Any], now: datetime
           ) -> Iterable[Cell]:
    for yi, y_value in enumerate(y_axis.values):
        for xi, x_value in enumerate(x_axis.values):
            context = _copy(base)
            instant = assign(policy, context, now, y_axis.attribute, y_value)
            instant = assign(policy, context, instant, x_axis.attribute, x_value)
            yield Cell(xi, yi, context, instant)


def _check_budget(started: float, budget: float | None, done: int, total: int) -> None:
    if budget is not None and time.perf_counter() - started > budget:
        raise GridTimeout(budget, done, total)


# -- two versions of a policy -----------------------------------------------------------------

@dataclass
class ChangeCell:
    x: int
    y: int
    context: dict[str, Any]
    now: datetime
    base: Outcome
    head: Outcome
    kinds: list[tuple[str, float]]


@dataclass
class ChangeMap:
    base: CompiledPolicy
    head: CompiledPolicy
    x: Axis
    y: Axis
    cells: list[ChangeCell]
    seconds: float

    def cell(self, x: int, y: int) -> ChangeCell:
        return self.cells[y * len(self.x.values) + x]

    def to_dict(self, lifetime: str = "access") -> dict[str, Any]:
        cells = []
        for c in self.cells:
            cells.append({"x": c.x, "y": c.y, "context": c.context, "now": c.now.isoformat(),
                          "base": outcome_dict(c.base), "head": outcome_dict(c.head),
                          "kinds": [k for k, _ in c.kinds],
                          "colors": {name: change_color(c.base, c.head, name) for name in LIFETIMES}})
        changed = sum(1 for c in self.cells if c.kinds)
        return {"policy": {"name": self.head.name, "base_digest": self.base.digest, "head_digest": self.head.digest},
                "x": self.x.to_dict(), "y": self.y.to_dict(), "cells": cells, "changed": changed,
                "legend": CHANGE_LEGEND, "seconds": round(self.seconds, 4)}


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return {"allow": o.allow, "access_ttl": o.access_ttl, "refresh_ttl": o.refresh_ttl, "step_up": o.step_up,
            "rotation": o.rotation, "idle_timeout": o.idle_timeout, "max_session": o.max_session,
            "matched": sorted(o.matched), "refused": o.refused}


def change_map(base: CompiledPolicy, head: CompiledPolicy, x: str | Axis, y: str | Axis,
               fixed: Mapping[str, Any] | None = None, now: datetime | None = None,
               max_cells: int = MAX_CELLS, time_budget: float | None = None) -> ChangeMap:
    """Decide the grid (axes and ``fixed`` checked against ``head``) with both versions; each cell
    carries both outcomes and the kinds of change ``ttlpolicy diff`` reports for it."""
    started = time.perf_counter()
    x_axis, y_axis, context, instant = _prepare(head, x, y, fixed, now, max_cells)
    total = len(x_axis.values) * len(y_axis.values)
    cells: list[ChangeCell] = []
    for cell in _cells(head, x_axis, y_axis, context, instant):
        _check_budget(started, time_budget, len(cells), total)
        before, after = decide_outcome(base, cell.context, cell.now), decide_outcome(head, cell.context, cell.now)
        cells.append(ChangeCell(cell.x, cell.y, cell.context, cell.now, before, after, change_kinds(before, after)))
    return ChangeMap(base, head, x_axis, y_axis, cells, time.perf_counter() - started)


# -- colours ----------------------------------------------------------------------------------

# Perceptually uniform, colour-blind safe and readable in grey (viridis, sampled): short = dark
# purple, long = yellow. Text on a cell is white on the dark half, black on the light half.
_VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
            "#b5de2b", "#fde725")
DENY_COLOR = "#2b2b2b"
NO_TOKEN_COLOR = "#d9d9d9"  # refresh 0: no refresh token is issued
REFUSED_COLOR = "#f4f4f4"
LONGER_COLOR, SHORTER_COLOR, SAME_COLOR, FLIP_COLOR = "#c0392b", "#1f6fb5", "#eeeeee", "#7b2d8e"
CHANGE_LEGEND = [
    {"label": "longer or looser", "color": LONGER_COLOR},
    {"label": "shorter or stricter", "color": SHORTER_COLOR},
    {"label": "both (one longer, one shorter)", "color": FLIP_COLOR},
    {"label": "unchanged", "color": SAME_COLOR},
]


def _mix(a: str, b: str, t: float) -> str:
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


def text_color(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (WCAG relative luminance)."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(int(background[i:i + 2], 16)) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "#ffffff"


@dataclass(frozen=True)
class LogScale:
    """Seconds → colour on a logarithmic scale between the shortest and longest lifetime shown."""

    low: int
    high: int

    @classmethod
    def spanning(cls, values: Iterable[int]) -> LogScale:
        positive = [v for v in values if v > 0]
        return cls(min(positive), max(positive)) if positive else cls(1, 1)

    def position(self, seconds: int) -> float:
        if self.high <= self.low:
            return 1.0
        t = (math.log(max(seconds, self.low)) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return min(max(t, 0.0), 1.0)

    def color(self, seconds: int) -> str:
        t = self.position(seconds) * (len(_VIRIDIS) - 1)
        i = min(int(t), len(_VIRIDIS) - 2)
        return _mix(_VIRIDIS[i], _VIRIDIS[i + 1], t - i)

    def legend(self) -> dict[str, Any]:
        """Stops for a gradient and up to five ticks labelled in durations."""
        stops = [{"offset": i / (len(_VIRIDIS) - 1), "color": c} for i, c in enumerate(_VIRIDIS)]
        ticks: list[int] = []
        if self.high > self.low:
            for i in range(5):
                seconds = round(math.exp(math.log(self.low) + i / 4 * (math.log(self.high) - math.log(self.low))))
                if seconds not in ticks:
                    ticks.append(seconds)
        else:
            ticks = [self.low]
        return {"low": self.low, "high": self.high, "stops": stops,
                "ticks": [{"seconds": s, "label": format_duration(s), "position": self.position(s)} for s in ticks],
                "deny": DENY_COLOR, "none": NO_TOKEN_COLOR, "refused": REFUSED_COLOR}


def cell_color(decision: Decision, lifetime: str, scale: LogScale) -> str:
    if not decision.allow:
        return DENY_COLOR
    seconds: int = getattr(decision, f"{lifetime}_ttl")
    return scale.color(seconds) if seconds > 0 else NO_TOKEN_COLOR


def change_direction(base: Outcome, head: Outcome, lifetime: str) -> str:
    """``longer``, ``shorter``, ``both`` or ``same`` for one lifetime, counting allow/deny and
    step-up flips: what a reviewer must see is whether a token may now live longer."""
    kinds = {k for k, _ in change_kinds(base, head)}
    relevant = {k for k in kinds if not k.startswith(("access", "refresh ")) or k.startswith(lifetime)}
    loosen = bool(relevant & LOOSEN)
    tighten = bool(relevant & TIGHTEN)  # neutral kinds (a changed deny reason) are neither
    return "both" if loosen and tighten else "longer" if loosen else "shorter" if tighten else "same"


def change_color(base: Outcome, head: Outcome, lifetime: str) -> str:
    direction = change_direction(base, head, lifetime)
    if direction == "same":
        return SAME_COLOR
    if direction == "both":
        return FLIP_COLOR
    a, b = getattr(base, f"{lifetime}_ttl"), getattr(head, f"{lifetime}_ttl")
    strength = 1.0 if (a <= 0 or b <= 0) else min(1.0, 0.45 + abs(math.log(b / a)) / 2.5)
    return _mix("#ffffff", LONGER_COLOR if direction == "longer" else SHORTER_COLOR, strength)


def short_duration(seconds: int, width: int = 5) -> str:
    """A cell label of at most ``width`` characters: exact (``6h24m``) when it fits, else the
    largest unit after ``~`` (``~1d``); the tooltip always gives the exact value."""
    text = format_duration(seconds)
    if len(text) <= width:
        return text
    for i, ch in enumerate(text):
        if ch.isalpha():
            return "~" + text[: i + 1]
    return text



def parse_value(policy: CompiledPolicy, attribute: str, text: str) -> Any:
    """A command-line value typed by the attribute's declaration (``0.5`` for a double, ``true``
    for a bool, ``3`` for ``time.hour``); raises ``ValueError`` saying what was expected."""
    if attribute not in policy.attributes:
        raise ValueError(f"policy {policy.name} declares no attribute {attribute!r}")
    kind = "int" if attribute in ("time.hour", "time.minute") else policy.attributes[attribute].type
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if kind == "int":
            return int(text)
        if kind == "double":
            return float(text)
    except ValueError:
        raise ValueError(f"{attribute}: {text!r} is not a {kind}") from None
    if kind in ("list", "timestamp"):
        raise ValueError(f"{attribute} is a {kind}; give it in a --context file")
    return text
