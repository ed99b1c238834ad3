"""Compare two policy sets by what they decide: a scenario grid, replayed contexts, grouped changes.

Both sides decide the same contexts. The contexts come from a grid built from the attributes
the rules read (every enum value, boundary values of numbers around each literal in a
condition, both booleans, every hour of a week, one IP per network zone and one outside
them, with and without optional attributes), sampled with a fixed seed when the full
product is too large, and optionally from a decision log (``--replay``). Changed decisions
are grouped by kind and by the rules whose matching differs, and each group is described by
the attribute values all its scenarios share::

    >>> report = diff_policies(load_policies("old/"), load_policies("new/"))   # doctest: +SKIP
    >>> [(g.kind, g.count, g.common) for g in report.groups]                    # doctest: +SKIP
    [('access longer', 120, {'device.trust': 'managed'})]
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo


from .analysis import ABSENT, attribute_candidates, collect_literals
from .program import CompiledPolicy
from .errors import ContextError
from .policyset import PolicySet

REFERENCE_MONDAY = (2025, 1, 6)  # any week will do; a fixed one keeps the grid reproducible
_NOW_DIMENSION = "time.now"
LOOSEN = {"deny→allow", "access longer", "refresh longer", "step-up removed", "rotation removed",
          "idle timeout longer", "max session longer", "context accepted"}


# -- the grid ---------------------------------------------------------------------------------

def zone_addresses(policy: CompiledPolicy) -> dict[str, str]:
    """A representative IP for every named zone, and one (``none``) outside all of them."""
    import ipaddress

    out: dict[str, str] = {}
    for name, cidrs in policy.document.zones.items():
        net = ipaddress.ip_network(cidrs[0], strict=False)
        host = net.network_address + (1 if net.num_addresses > 2 else 0)
        out[name] = str(host)
    for candidate in ("203.0.113.7", "192.0.2.7", "198.18.0.7", "100.64.0.7"):
        if policy.context.zone_of(candidate) == "none":
            out["none"] = candidate
            break
    return out


@dataclass
class Grid:
    """Named dimensions and their values; scenarios are assignments of one value per dimension."""

    dimensions: dict[str, list[Any]]
    timezone: str

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.dimensions.values()) if self.dimensions else 1

    def scenarios(self, limit: int, seed: int = 0) -> Iterator[dict[str, Any]]:
        names = list(self.dimensions)
        if self.size <= limit:
            for combo in itertools.product(*(self.dimensions[n] for n in names)):
                yield dict(zip(names, combo))
            return
        rng = random.Random(seed)
        seen: set[tuple[int, ...]] = set()
        attempts = 0
        while len(seen) < limit and attempts < limit * 20:
            attempts += 1
            picks = tuple(rng.randrange(len(self.dimensions[n])) for n in names)
            if picks in seen:
                continue
            seen.add(picks)
            yield {n: self.dimensions[n][i] for n, i in zip(names, picks)}


def build_grid(base: CompiledPolicy, head: CompiledPolicy) -> Grid:
    """The dimensions both versions of a policy care about (the union of what they read)."""
    literals = collect_literals(base)
    collect_literals(head, literals)
    attributes = {**base.attributes, **head.attributes}
    if base.tiers != head.tiers:
        attributes["tier"] = attributes["tier"].model_copy(
            update={"values": tuple(dict.fromkeys([*base.tiers, *head.tiers]))})
    dims: dict[str, list[Any]] = {}
    time_used = {n for n in literals.used if n.startswith("time.") and n not in ("time.zone",)}
    # The tier sets bases and ceilings even where no rule reads it, so it is always a dimension.
    for name in sorted(literals.used | ({"tier"} if base.tiers or head.tiers else set())):
        attribute = attributes[name]
        if attribute.derived:
            continue
        dims[name] = attribute_candidates(name, attribute, literals)
    if "location.zone" in literals.used or "location.ip" in literals.used:
        addresses = {**zone_addresses(base), **zone_addresses(head)}
        dims["location.ip"] = sorted(set(addresses.values())) + [ABSENT]
    if time_used:
        weekdays = range(7) if "time.weekday" in time_used or "time.date" in time_used else [2]
        hours = range(24) if time_used & {"time.hour", "time.minute", "time.weekday", "time.now"} else [12]
        dims[_NOW_DIMENSION] = [(day, hour) for day in weekdays for hour in hours]
    return Grid(dims, head.timezone)


def scenario_context(scenario: Mapping[str, Any], timezone: str) -> tuple[dict[str, Any], datetime]:
    """The nested context and the decision instant of one scenario."""
    day, hour = scenario.get(_NOW_DIMENSION, (2, 12))
    year, month, monday = REFERENCE_MONDAY
    now = datetime(year, month, monday + day, hour, 30, tzinfo=ZoneInfo(timezone))
    context: dict[str, Any] = {}
    for name, value in scenario.items():
        if name == _NOW_DIMENSION or value is ABSENT:
            continue
        if isinstance(value, tuple) and value[0] == "age":
            value = (now - timedelta(seconds=value[1])).isoformat()
        namespace, _, leaf = name.partition(".")
        if leaf:
            context.setdefault(namespace, {})[leaf] = value
        else:
            context[namespace] = value
    return context, now


def describe_value(value: Any) -> Any:
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, tuple) and value and value[0] == "age":
        return f"now - {value[1]}s"
    if isinstance(value, tuple):
        day, hour = value
        return f"{('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')[day]} {hour:02d}:30"
    return value


# -- deciding and comparing ---------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What matters about a decision for a comparison (rule names are not behaviour)."""

    allow: bool
    access_ttl: int
    refresh_ttl: int
    rotation: bool
    idle_timeout: int | None
    max_session: int | None
    step_up: bool
    matched: frozenset[str]
    refused: str | None = None  # the context problems, when the side refuses the context

    def behaviour(self) -> tuple[Any, ...]:
        return (self.allow, self.access_ttl, self.refresh_ttl, self.rotation, self.idle_timeout, self.max_session,
                self.step_up, self.refused)


def decide_outcome(policy: CompiledPolicy, context: Mapping[str, Any], now: datetime) -> Outcome:
    """Decide on one side, dropping attributes this side does not declare (an older policy
    ignores an attribute the newer one added; it is compared on what it does know)."""
    known = policy.attributes
    trimmed: dict[str, Any] = {}
    for key, value in context.items():
        if isinstance(value, Mapping):
            inner = {k: v for k, v in value.items() if f"{key}.{k}" in known}
            if inner:
                trimmed[key] = inner
        elif key in known:
            trimmed[key] = value
    try:
        d = policy.decide(trimmed, now)
    except ContextError as exc:
        return Outcome(False, 0, 0, False, None, None, False, frozenset(), "; ".join(
            f"{p.path}: {p.message}" for p in exc.problems))
    return Outcome(d.allow, d.access_ttl, d.refresh_ttl, d.rotation, d.idle_timeout, d.max_session, d.step_up,
                   frozenset(d.matched))


def _longer(a: int | None, b: int | None) -> bool | None:
    """Whether ``b`` is a longer limit than ``a`` (``None`` = no limit); ``None`` if equal."""
    if a == b:
        return None
    if a is None:
        return False
    if b is None:
        return True
    return b > a


def change_kinds(base: Outcome, head: Outcome) -> list[tuple[str, float]]:
    """Each way ``head`` differs from ``base``, with a magnitude (seconds; deny flips are infinite)."""
    if base.refused != head.refused and (base.refused is None or head.refused is None):
        return [("context accepted" if base.refused else "context refused", math.inf)]
    if base.allow != head.allow:
        return [("deny→allow" if head.allow else "allow→deny", math.inf)]
    if not base.allow:  # denied on both sides: lifetimes, step-up and refresh settings are moot
        return []
    kinds: list[tuple[str, float]] = []
    for label, a, b in (("access", base.access_ttl, head.access_ttl), ("refresh", base.refresh_ttl,
                                                                        head.refresh_ttl)):
        if a != b:
            kinds.append((f"{label} {'longer' if b > a else 'shorter'}", abs(b - a)))
    if base.step_up != head.step_up:
        kinds.append(("step-up added" if head.step_up else "step-up removed", 0.0))
    if base.rotation != head.rotation:
        kinds.append(("rotation added" if head.rotation else "rotation removed", 0.0))
    # Own names: these limits are ``int | None`` (no limit), the TTLs above are plain ``int``.
    for label, limit_a, limit_b in (("idle timeout", base.idle_timeout, head.idle_timeout),
                                    ("max session", base.max_session, head.max_session)):
        longer = _longer(limit_a, limit_b)
        if longer is not None:
            kinds.append((f"{label} {'longer' if longer else 'shorter'}", abs((limit_b or 0) - (limit_a or 0))))
    return kinds


@dataclass
class Change:
    source: str  # "grid" or "replay:<line>"
    scenario: dict[str, Any]  # dimension -> value (flattened context for replays)
    context: dict[str, Any]
    now: datetime
    base: Outcome
    head: Outcome


@dataclass
class Group:
    policy: str
    kind: str
    rules: tuple[str, ...]  # "+name" matched only by head, "-name" only by base, "~name" redefined
    changes: list[tuple[Change, float]] = field(default_factory=list)
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.changes)

    @property
    def magnitude(self) -> float:
        return max(m for _, m in self.changes)

    @property
    def loosening(self) -> bool:
        return self.kind in LOOSEN

    def example(self) -> Change:
        return max(self.changes, key=lambda c: c[1])[0]


@dataclass
class PolicyDiff:
    policy: str
    scenarios: int
    replayed: int
    changed: int
    grid_size: int


@dataclass
class DiffReport:
    policies: list[PolicyDiff]
    groups: list[Group]
    added: list[str]
    removed: list[str]
    seconds: float = 0.0

    @property
    def loosening(self) -> bool:
        return any(g.loosening for g in self.groups) or bool(self.added)

    @property
    def changed(self) -> bool:
        return bool(self.groups or self.added or self.removed)


def _rule_signatures(policy: CompiledPolicy) -> dict[str, str]:
    return {r.name: json.dumps(r.model_dump(mode="json", exclude={"description"}), sort_keys=True)
            for r in policy.document.rules}


def diff_policies(base: PolicySet, head: PolicySet, *, max_scenarios: int = 20000, seed: int = 0,
                  replay: Iterable[tuple[str, Mapping[str, Any], datetime, str | None]] = (),
                  only: str | None = None) -> DiffReport:
    """Decide the grid (and the replayed contexts) on both sides and group the differences.

    ``replay`` yields ``(source, context, now, policy name or None)``, see :func:`read_replay`.
    """
    import time

    started = time.perf_counter()
    names = [n for n in head.names if n in base.names and (only is None or n == only)]
    groups: dict[tuple[str, str, tuple[str, ...]], Group] = {}
    summaries: list[PolicyDiff] = []
    grids: dict[str, tuple[Grid, bool]] = {}
    replay = list(replay)
    for name in names:
        b, h = base.get(name), head.get(name)
        identical = b.digest == h.digest  # same meaning: no grid scenario can differ, skip deciding
        redefined = {n for n, sig in _rule_signatures(h).items() if _rule_signatures(b).get(n, sig) != sig}
        grid = build_grid(b, h)
        grids[name] = (grid, grid.size <= max_scenarios)
        changes: list[Change] = []
        count = 0
        for scenario in grid.scenarios(max_scenarios, seed):
            count += 1
            if identical:
                continue
            context, now = scenario_context(scenario, grid.timezone)
            _compare(b, h, "grid", scenario, context, now, changes)
        replayed = 0
        for source, recorded, now, policy in replay:  # ``recorded`` is a Mapping, ``context`` above a dict
            if (policy or head.default) != name:
                continue
            replayed += 1
            _compare(b, h, source, _flatten(recorded), dict(recorded), now, changes)
        for change in changes:
            rules = tuple(sorted([f"+{r}" for r in change.head.matched - change.base.matched]
                                 + [f"-{r}" for r in change.base.matched - change.head.matched]
                                 + [f"~{r}" for r in change.head.matched & redefined]))
            for kind, magnitude in change_kinds(change.base, change.head):
                group = groups.setdefault((name, kind, rules), Group(name, kind, rules))
                group.changes.append((change, magnitude))
        summaries.append(PolicyDiff(name, count, replayed, len(changes), grid.size))
    ordered = sorted(groups.values(), key=lambda g: (not g.loosening, -g.magnitude, -g.count, g.kind, g.rules))
    for group in ordered:
        group.common = _common(group, grids.get(group.policy))
    added = [n for n in head.names if n not in base.names]
    removed = [n for n in base.names if n not in head.names]
    return DiffReport(summaries, ordered, added, removed, time.perf_counter() - started)


def _compare(b: CompiledPolicy, h: CompiledPolicy, source: str, scenario: dict[str, Any], context: dict[str, Any],
             now: datetime, changes: list[Change]) -> None:
    before, after = decide_outcome(b, context, now), decide_outcome(h, context, now)
    if before.behaviour() != after.behaviour():
        changes.append(Change(source, scenario, context, now, before, after))


def _flatten(context: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in context.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _common(group: Group, grid: tuple[Grid, bool] | None) -> dict[str, Any]:
    """The attribute values that explain a group: each dimension whose values in the group are
    a strict subset of the grid's, as one value or a list of the values it takes.

    A sampled grid holds every combination only by chance, so there a dimension counts only
    when the group is large enough (3 scenarios per grid value) for a missing value to mean
    something; replayed contexts count only when they all share one value.
    """
    grid_changes = [c.scenario for c, _ in group.changes if c.source == "grid"]
    out: dict[str, Any] = {}
    if grid is not None and grid_changes:
        dims, exhaustive = grid[0].dimensions, grid[1]
        for key, all_values in dims.items():
            seen = [v for v in all_values if any(_same(s[key], v) for s in grid_changes)]
            if len(seen) == len(all_values) or (not exhaustive and len(grid_changes) < 3 * len(all_values)):
                continue
            out[key] = describe_value(seen[0]) if len(seen) == 1 else [describe_value(v) for v in seen]
        return out
    scenarios = [c.scenario for c, _ in group.changes]
    for key in sorted(set(scenarios[0]).intersection(*scenarios[1:])):
        if all(_same(s[key], scenarios[0][key]) for s in scenarios):
            out[key] = describe_value(scenarios[0][key])
    return out


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not ABSENT and b is not ABSENT and type(a) is type(b) and a == b)


def read_replay(path: str | Path) -> Iterator[tuple[str, dict[str, Any], datetime, str | None]]:
    """Contexts from a decision log: JSON lines with ``context`` and ``time`` (RFC 3339).

    A ``policy`` field (a name, or ``{"name": ...}``) selects the policy. Raises ``ValueError``
    naming the line of the first malformed record.
    """
    from .context import parse_timestamp

    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                context, now = record["context"], parse_timestamp(record["time"])
                if not isinstance(context, dict):
                    raise ValueError("context is not an object")
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a decision log record ({exc})") from None
            policy = record.get("policy")
            if isinstance(policy, dict):
                policy = policy.get("name")
            yield f"{path}:{number}", context, now, policy if isinstance(policy, str) else None
