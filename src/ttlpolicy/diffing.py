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
from typing import Any, Callable, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo


from .analysis import ABSENT, attribute_candidates, collect_literals
from .cel.parse import CelSyntaxError, parse
from .cel.typecheck import check
from .decision import FIELDS, Decision
from .program import CompiledPolicy
from .errors import ContextError
from .policyset import PolicySet
from .validate import MAX_REUSE_GRACE

REFERENCE_MONDAY = (2025, 1, 6)  # any week will do; a fixed one keeps the grid reproducible
_NOW_DIMENSION = "time.now"


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


def boundary_addresses(*policies: CompiledPolicy) -> list[str]:
    """Addresses at every edge of every zone of every version: each CIDR's first and last
    address, one inside, and the addresses just outside both ends. When a CIDR changes between
    versions (a /24 widened to a /23), the edges of both are tried, so the addresses that only
    one version puts in the zone are in the grid; plus one address outside every zone."""
    import ipaddress

    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for policy in policies:
        for cidrs in policy.document.zones.values():
            for cidr in cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                first, last = net.network_address, net.broadcast_address
                found |= {first, last, first + (1 if net.num_addresses > 2 else 0)}
                top = 2**32 - 1 if net.version == 4 else 2**128 - 1
                if int(first) > 0:
                    found.add(first - 1)
                if int(last) < top:
                    found.add(last + 1)
        found |= {ipaddress.ip_address(a) for a in zone_addresses(policy).values()}
    return [str(a) for a in sorted(found, key=lambda a: (a.version, int(a)))]


@dataclass
class Grid:
    """Named dimensions and their values; scenarios are assignments of one value per dimension."""

    dimensions: dict[str, list[Any]]
    timezone: str

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.dimensions.values()) if self.dimensions else 1

    def scenarios(self, limit: int, seed: int = 0, focus: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
        """Every scenario when there are at most ``limit``; else ``limit`` distinct ones, seeded.

        A sample first enumerates every combination of the ``focus`` dimensions (those the
        changed rules and settings read), each with the other dimensions picked at random, when
        that takes at most half the budget; the rest is drawn at random. So a change confined to
        the attributes it reads is tried at every boundary of them even in a huge grid."""
        names = list(self.dimensions)
        if self.size <= limit:
            for combo in itertools.product(*(self.dimensions[n] for n in names)):
                yield dict(zip(names, combo))
            return
        rng = random.Random(seed)
        seen: set[tuple[int, ...]] = set()
        focused = [n for n in names if n in set(focus)]
        if focused and math.prod(len(self.dimensions[n]) for n in focused) <= limit // 2:
            for combo in itertools.product(*(range(len(self.dimensions[n])) for n in focused)):
                fixed = dict(zip(focused, combo))
                picks = tuple(fixed[n] if n in fixed else rng.randrange(len(self.dimensions[n])) for n in names)
                if picks not in seen:
                    seen.add(picks)
                    yield {n: self.dimensions[n][i] for n, i in zip(names, picks)}
        attempts = 0
        while len(seen) < limit and attempts < limit * 20:
            attempts += 1
            picks = tuple(rng.randrange(len(self.dimensions[n])) for n in names)
            if picks in seen:
                continue
            seen.add(picks)
            yield {n: self.dimensions[n][i] for n, i in zip(names, picks)}


def focus_dimensions(base: CompiledPolicy, head: CompiledPolicy) -> set[str]:
    """The grid dimensions a change touches: what the added, removed and redefined rules read,
    the tier when tiers, defaults or limits changed, the IP when zones changed, the time when
    the time zone changed."""
    before, after = _rule_signatures(base), _rule_signatures(head)
    changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
    out: set[str] = set()
    for policy in (base, head):
        for rule in policy.rules:
            if rule.name in changed:
                texts = [rule.when] + [o.factor_text for o in (rule.access, rule.refresh) if o and o.factor_text]
                for text in texts:
                    try:
                        out |= check(parse(text), policy.attributes).attributes
                    except CelSyntaxError:  # pragma: no cover - a compiled policy parsed already
                        continue
    a, b = base.document, head.document
    if (a.tiers, a.defaults, a.limits) != (b.tiers, b.defaults, b.limits):
        out.add("tier")
    if a.zones != b.zones or "location.zone" in out:
        out.add("location.ip")
    if a.timezone != b.timezone or any(n.startswith("time.") for n in out):
        out.add(_NOW_DIMENSION)
    return out


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
        dims["location.ip"] = boundary_addresses(base, head) + [ABSENT]
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

# -- what "looser" means, field by field ---------------------------------------------------------

INFINITE = math.inf  # "no limit" for limits that may be absent (idle timeout, session cap, session end)


@dataclass(frozen=True)
class Comparison:
    """How one field of the decision compares between two versions.

    ``rank`` maps the field's value to a number where **larger is looser** for the token's holder
    (a longer lifetime, rotation off, no binding required, a larger reuse grace); ``None`` marks
    a field that changes without a direction (a deny reason), reported but never loosening.
    ``labels`` are the change kinds for (looser, tighter) — or (changed,) without a rank.
    ``when_denied``: whether the field still matters when both versions deny.
    """

    labels: tuple[str, ...]
    rank: Callable[[Any], float] | None = None
    when_denied: bool = False


def _seconds(value: Any) -> float:
    return float(value)


def _limit(value: Any) -> float:
    return INFINITE if value is None else float(value)


def _grace(value: Any) -> float:
    # None: the issuer's own default applies, which may be anything up to the 5m maximum
    return float(MAX_REUSE_GRACE if value is None else value)


def _session_end(value: Any) -> float:
    return INFINITE if value is None else value.timestamp()


_ON_REUSE_STRENGTH = {"revoke_family": 0.0}  # any other action is weaker than revoking the family

# The one place that defines "loosens": every field of the decision (decision.FIELDS, by its
# dotted key) is either here or in NOT_COMPARED with the reason; a test fails when a field is
# added to the decision and to neither.
DECISION_FIELDS: Mapping[str, Comparison] = {
    "allow": Comparison(("deny→allow", "allow→deny"), lambda v: float(bool(v)), when_denied=True),
    "deny_reason": Comparison(("deny reason changed",), when_denied=True),
    "access_ttl": Comparison(("access longer", "access shorter"), _seconds),
    "refresh_ttl": Comparison(("refresh longer", "refresh shorter"), _seconds),
    "refresh.rotation": Comparison(("rotation removed", "rotation added"), lambda v: float(not v)),
    "refresh.idle_timeout": Comparison(("idle timeout longer", "idle timeout shorter"), _limit),
    "refresh.max_session": Comparison(("max session longer", "max session shorter"), _limit),
    "refresh.reuse_grace": Comparison(("reuse grace longer", "reuse grace shorter"), _grace),
    "refresh.on_reuse": Comparison(("on-reuse weaker", "on-reuse stronger"),
                                      lambda v: _ON_REUSE_STRENGTH.get(v, 1.0)),
    "refresh.sender_constrained": Comparison(("binding no longer required", "binding required"),
                                                lambda v: float(not v)),
    "expires_at.session": Comparison(("session ends later", "session ends earlier"), _session_end),
    "step_up": Comparison(("step-up removed", "step-up added"), lambda v: float(not v)),
    "step_up_reasons": Comparison(("step-up reason changed",)),
    "tier": Comparison(("tier changed",), when_denied=True),
}
NOT_COMPARED: Mapping[str, str] = {
    "expires_at.access": "access_ttl from the same instant",
    "expires_at.refresh": "refresh_ttl from the same instant",
    "matched": "rule names are not behaviour (a renamed rule decides the same)",
    "errors": "which rules failed to evaluate; their effect is in the fields compared",
    "trace": "explains the numbers compared",
    "rules": "explain output",
    "policy.name": "the same policy on both sides",
    "policy.digest": "differs for every change, also a refactor",
}
# Change kinds that loosen and that tighten, derived from the table (plus a context that only
# one side accepts); every other kind (a changed deny reason, tier or step-up reason) is neutral.
LOOSEN = frozenset({f.labels[0] for f in DECISION_FIELDS.values() if f.rank is not None} | {"context accepted"})
TIGHTEN = frozenset({f.labels[1] for f in DECISION_FIELDS.values() if f.rank is not None} | {"context refused"})


# Fields read straight from the Decision (the hot path of a diff decides every scenario twice),
# by the attribute decision.FIELDS names; a compared field without one is read from the JSON form.
_ATTRIBUTES = {spec.key: spec.attribute for spec in FIELDS if spec.key in DECISION_FIELDS and spec.attribute}


def decision_values(decision: Decision) -> dict[str, Any]:
    """The compared fields of a decision by dotted name (``refresh.rotation``)."""
    out: dict[str, Any] = {}
    data: dict[str, Any] | None = None
    for key in DECISION_FIELDS:
        attribute = _ATTRIBUTES.get(key)
        if attribute is not None:
            value = getattr(decision, attribute)
        else:
            data = data if data is not None else decision.to_dict()
            value = data
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


@dataclass(frozen=True)
class Outcome:
    """What matters about a decision for a comparison (rule names are not behaviour)."""

    values: tuple[tuple[str, Any], ...]
    matched: frozenset[str]
    refused: str | None = None  # the context problems, when the side refuses the context

    def __getitem__(self, key: str) -> Any:
        return dict(self.values)[key]

    @property
    def allow(self) -> bool:
        return bool(self["allow"]) if not self.refused else False

    @property
    def access_ttl(self) -> int:
        return int(self["access_ttl"] or 0) if not self.refused else 0

    @property
    def refresh_ttl(self) -> int:
        return int(self["refresh_ttl"] or 0) if not self.refused else 0

    @property
    def step_up(self) -> bool:
        return bool(self["step_up"]) if not self.refused else False

    @property
    def rotation(self) -> bool:
        return bool(self["refresh.rotation"]) if not self.refused else False

    @property
    def idle_timeout(self) -> int | None:
        return None if self.refused else self["refresh.idle_timeout"]

    @property
    def max_session(self) -> int | None:
        return None if self.refused else self["refresh.max_session"]

    def behaviour(self) -> tuple[Any, ...]:
        return (self.values, self.refused)


def declared_part(policy: CompiledPolicy, context: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of ``context`` that ``policy`` declares: an older policy ignores an
    attribute the newer one added, so each side is compared on what it does know."""
    known = policy.attributes
    trimmed: dict[str, Any] = {}
    for key, value in context.items():
        if isinstance(value, dict):
            inner = {k: v for k, v in value.items() if f"{key}.{k}" in known}
            if inner:
                trimmed[key] = inner
        elif key in known:
            trimmed[key] = value
    return trimmed


def decide_outcome(policy: CompiledPolicy, context: Mapping[str, Any], now: datetime) -> Outcome:
    """Decide on one side, on the part of the context it declares (:func:`declared_part`)."""
    try:
        d = policy.decide(declared_part(policy, context), now)
    except ContextError as exc:
        return Outcome((), frozenset(), "; ".join(f"{p.path}: {p.message}" for p in exc.problems))
    return Outcome(tuple(decision_values(d).items()), frozenset(d.matched))


def change_kinds(base: Outcome, head: Outcome) -> list[tuple[str, float]]:
    """Each way ``head`` differs from ``base``, with a magnitude (seconds where the field is a
    duration; infinite for a deny flip or a limit that appears or disappears; 0 otherwise)."""
    if base.refused != head.refused and (base.refused is None or head.refused is None):
        return [("context accepted" if base.refused else "context refused", math.inf)]
    if base.refused:
        return []
    denied = not base.allow and not head.allow
    old, new = dict(base.values), dict(head.values)
    kinds: list[tuple[str, float]] = []
    for key, spec in DECISION_FIELDS.items():
        a, b = old.get(key), new.get(key)
        if a == b or (denied and not spec.when_denied):
            continue  # denied on both sides: lifetimes, step-up and refresh settings are moot
        if (key == "deny_reason" and not denied) or (key == "step_up_reasons" and old["step_up"] != new["step_up"]):
            continue  # the allow/deny or step-up flip says it already
        if spec.rank is None:
            kinds.append((spec.labels[0], 0.0))
            continue
        ra, rb = spec.rank(a), spec.rank(b)
        if ra == rb:
            kinds.append((f"{key} changed", 0.0))
            continue
        label = spec.labels[0] if rb > ra else spec.labels[1]
        if key == "allow":
            return [(label, math.inf)]  # one side denies: the other fields are moot
        kinds.append((label, abs(rb - ra) if spec.rank in _DURATIONS else 0.0))
    return kinds


_DURATIONS = (_seconds, _limit, _grace, _session_end)  # ranks whose difference is a number of seconds


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

    @property
    def tightening(self) -> bool:
        return self.kind in TIGHTEN

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

    def headline(self) -> str:
        """One line a reviewer reads first: ``LOOSENS: 3 kinds of decision now live longer or are
        allowed more (access longer, deny→allow, refresh longer)``."""
        loose = sorted({g.kind for g in self.groups if g.loosening})
        tight = sorted({g.kind for g in self.groups if g.tightening})
        other = sorted({g.kind for g in self.groups if not g.loosening and not g.tightening})
        parts = []
        if loose:
            verb = "lives longer or is" if len(loose) == 1 else "live longer or are"
            parts.append(f"{_kinds(loose)} now {verb} allowed more ({', '.join(loose)})")
        if self.added:
            parts.append(f"{len(self.added)} polic{'ies' if len(self.added) != 1 else 'y'} added "
                         f"({', '.join(self.added)}): every decision is new")
        if tight:
            verb = "lives shorter or is" if len(tight) == 1 else "live shorter or are"
            parts.append(f"{_kinds(tight)} now {verb} refused more ({', '.join(tight)})")
        if other:
            parts.append(f"{_kinds(other)} changed without a direction ({', '.join(other)})")
        if self.removed:
            parts.append(f"{len(self.removed)} polic{'ies' if len(self.removed) != 1 else 'y'} removed")
        if not parts:
            return "no decision changes"
        return ("LOOSENS: " if self.loosening else "tightens only: " if loose == [] and tight and not other
                else "changes: ") + "; ".join(parts)


def _kinds(kinds: list[str]) -> str:
    return f"{len(kinds)} kind{'s' if len(kinds) != 1 else ''} of decision"


def _rule_signatures(policy: CompiledPolicy) -> dict[str, str]:
    return {r.name: json.dumps(r.model_dump(mode="json", exclude={"description"}), sort_keys=True)
            for r in policy.document.rules}


Progress = Callable[[str, int, int], None]  # (policy, scenarios decided, scenarios planned)
PROGRESS_EVERY = 500


def diff_policies(base: PolicySet, head: PolicySet, *, max_scenarios: int = 20000, seed: int = 0,
                  replay: Iterable[tuple[str, Mapping[str, Any], datetime, str | None]] = (),
                  only: str | None = None, progress: Progress | None = None) -> DiffReport:
    """Decide the grid (and the replayed contexts) on both sides and group the differences.

    ``replay`` yields ``(source, context, now, policy name or None)``, see :func:`read_replay`.
    ``progress``, if given, is called every :data:`PROGRESS_EVERY` scenarios and once at the end
    of each policy (a terminal shows it; nothing is printed here).
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
        planned = min(grid.size, max_scenarios)
        for scenario in grid.scenarios(max_scenarios, seed, focus_dimensions(b, h)):
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(name, count, planned)
            if identical:
                continue
            context, now = scenario_context(scenario, grid.timezone)
            _compare(b, h, "grid", scenario, context, now, changes)
        if progress is not None and count >= PROGRESS_EVERY:  # small grids need no progress line
            progress(name, count, count)
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


class ReplayError(ValueError):
    """A line of a replayed decision log that is not a decision record, at its file and line."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message = file, line, message


def read_replay(path: str | Path) -> Iterator[tuple[str, dict[str, Any], datetime, str | None]]:
    """Contexts from a decision log: JSON lines with ``context`` and ``time`` (RFC 3339).

    A ``policy`` field (a name, or ``{"name": ...}``) selects the policy. Raises :class:`ReplayError`
    at the line of the first malformed record.
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
                raise ReplayError(str(path), number, f"not a decision log record ({exc})") from None
            policy = record.get("policy")
            if isinstance(policy, dict):
                policy = policy.get("name")
            yield f"{path}:{number}", context, now, policy if isinstance(policy, str) else None
