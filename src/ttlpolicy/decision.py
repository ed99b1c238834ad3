"""The decision: lifetimes, refresh behaviour, deny or step-up, and the trace behind every number."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, ClassVar, Mapping, Union

# One trace step as compact data, formatted into a :class:`Step` only when asked (``trace``,
# ``to_dict``): (target, step, value, result, rule, source). The evaluator appends these on the
# hot path; a tuple of shared constants costs a fraction of a dataclass instance.
TraceEntry = tuple[str, str, Union[float, int, str, None], int, Union[str, None], Union[str, None]]


@dataclass(slots=True)
class Step:
    """One change to one number: ``target`` went to ``result`` because of ``step`` (by ``rule``)."""

    target: str  # access_ttl | refresh_ttl | refresh.idle_timeout | ...
    step: str  # base multiply floor cap tier_max limit_min limit_max idle_timeout session deny
    value: float | int | str | None
    result: int
    rule: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "step": self.step, "value": self.value, "result": self.result}
        if self.rule is not None:
            out["rule"] = self.rule
        if self.source is not None:
            out["source"] = self.source
        return out


def step_dict(entry: TraceEntry) -> dict[str, Any]:
    """``Step(*entry).to_dict()`` without building the Step."""
    target, step, value, result, rule, source = entry
    out: dict[str, Any] = {"target": target, "step": step, "value": value, "result": result}
    if rule is not None:
        out["rule"] = rule
    if source is not None:
        out["source"] = source
    return out


@dataclass(slots=True)
class RuleOutcome:
    """How one rule fared: ``matched``, ``no_match`` or ``error`` (with the message)."""

    rule: str
    outcome: str
    message: str | None = None
    applied: str | None = None  # for errors: which effects were applied (fail safe)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "outcome": self.outcome}
        if self.message is not None:
            out["message"] = self.message
        if self.applied is not None:
            out["applied"] = self.applied
        return out


@dataclass(slots=True)
class Decision:
    """What the issuer should do. ``to_dict()`` is the JSON the CLI prints and the API returns.

    >>> decision.allow, decision.access_ttl, decision.refresh_ttl   # doctest: +SKIP
    (True, 900, 28800)
    """

    allow: bool
    access_ttl: int
    refresh_ttl: int
    rotation: bool
    idle_timeout: int | None
    max_session: int | None
    reuse_grace: int | None
    sender_constrained: bool
    issued_at: datetime
    session_end: datetime | None
    step_up: bool
    step_up_reasons: list[str]
    deny_reason: str | None
    matched: list[str]
    errors: list[RuleOutcome]
    steps: list[TraceEntry]  # the trace as compact data; ``trace`` formats it
    policy_name: str
    policy_digest: str
    tier: str | None = None
    rules: list[RuleOutcome] | None = None  # every rule's outcome, with explain=True
    # The validated context with its defaults and derived attributes that the rules saw (the CEL
    # activation), for what runs after the policy (rate limits' and emergencies' conditions)
    # without validating the context again; not part of the decision's JSON.
    activation: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)
    # What the issuer does when a rotated refresh token is presented again after the grace window
    # (RFC 9700 §4.14.2); one value today, a field of the decision for the diff to compare.
    ON_REUSE: ClassVar[str] = "revoke_family"
    _trace: list[Step] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def trace(self) -> list[Step]:
        """Every change to every number, formatted from ``steps`` on first use (then kept, so a
        later stage may append to it)."""
        if self._trace is None:
            self._trace = [Step(*entry) for entry in self.steps]
        return self._trace

    def trace_entries(self) -> list[TraceEntry]:
        """The trace as compact entries, steps appended to ``trace`` included (for a later stage
        that builds a new decision with ``dataclasses.replace(decision, steps=...)``)."""
        if self._trace is None:
            return list(self.steps)
        return [(s.target, s.step, s.value, s.result, s.rule, s.source) for s in self._trace]

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON: every field of :data:`FIELDS` (``rules`` with explain), then ``extra``."""
        return _to_dict(self)

    def trace_dicts(self) -> list[dict[str, Any]]:
        """The trace as the JSON objects of ``to_dict()["trace"]``."""
        if self._trace is None:
            return [step_dict(entry) for entry in self.steps]
        return [step.to_dict() for step in self._trace]

    def expires_at(self) -> dict[str, str | None]:
        """Absolute expiry instants (RFC 3339, UTC, whole seconds) of what this decision allows:
        ``access`` and ``refresh`` (``None`` when not issued) and ``session`` (``None`` when the
        session end is unknown). Lifetimes were already cut to the session end."""
        out: dict[str, str | None] = self.to_dict()["expires_at"]
        return out


# -- the decision's fields, defined once ---------------------------------------------------------

_INSTANT = {"type": ["string", "null"], "format": "date-time"}
RULE_OUTCOME_SCHEMA: Mapping[str, Any] = {
    "type": "object", "required": ["rule", "outcome"],
    "properties": {"rule": {"type": "string"}, "outcome": {"enum": ["matched", "no_match", "error"]},
                   "message": {"type": "string"}, "applied": {"type": "string"}},
}
STEP_SCHEMA: Mapping[str, Any] = {
    "type": "object", "required": ["target", "step", "value", "result"],
    "properties": {"target": {"type": "string"}, "step": {"type": "string"},
                   "value": {"type": ["number", "string", "null"]}, "result": {"type": "integer"},
                   "rule": {"type": "string"}, "source": {"type": "string"}},
}


@dataclass(frozen=True, slots=True)
class DecisionField:
    """One field of a decision's JSON form (``to_dict()``, the API's body): where it sits (``key``,
    dotted for nested objects), its JSON Schema, and how it is read from a :class:`Decision`:
    ``source`` is the expression ``to_dict`` is generated from, ``attribute`` the Decision
    attribute behind it (what ``diff`` compares and the token SDK's view reads), if any."""

    key: str
    schema: Mapping[str, Any]
    source: str
    attribute: str | None = None
    optional: bool = False  # present only sometimes (``rules``: with explain)


def _attribute(key: str, schema: Mapping[str, Any], attribute: str | None = None) -> DecisionField:
    name = attribute or key.rpartition(".")[2]
    return DecisionField(key, schema, f"d.{name}", name)


# A compact trace entry as its JSON object, without a call per entry (``step_dict`` is the
# definition, and the general case): every step names either its rule or its source.
_STEP_DICTS = ("({'target': t, 'step': s, 'value': v, 'result': r, 'rule': ru} if so is None and ru is not None "
               "else {'target': t, 'step': s, 'value': v, 'result': r, 'source': so} if ru is None and so is not None "
               "else step_dict((t, s, v, r, ru, so)))")

# The one definition of a decision's fields. to_dict() is generated from it (below), the OpenAPI
# document's Decision schema is built from it, diff compares (or names as not compared) each of
# its keys, and the token SDK's DecisionView reads its attributes through it.
FIELDS: tuple[DecisionField, ...] = (
    _attribute("allow", {"type": "boolean"}),
    _attribute("access_ttl", {"type": "integer", "minimum": 0, "description": "seconds"}),
    _attribute("refresh_ttl", {"type": "integer", "minimum": 0, "description": "seconds; 0 = no refresh token"}),
    _attribute("refresh.rotation", {"type": "boolean"}),
    _attribute("refresh.idle_timeout", {"type": ["integer", "null"], "description": "seconds"}),
    _attribute("refresh.max_session", {"type": ["integer", "null"], "description": "seconds"}),
    _attribute("refresh.reuse_grace", {"type": ["integer", "null"], "description": "seconds a rotated refresh token "
                                       "may be presented again (null: the issuer's default)"}),
    _attribute("refresh.on_reuse", {"enum": ["revoke_family"], "description": "after the grace window"}, "ON_REUSE"),
    _attribute("refresh.sender_constrained", {"type": "boolean", "description": "tokens must be bound (DPoP, mTLS)"}),
    DecisionField("expires_at.access", {**_INSTANT, "description": "null when denied"},
                  "_utc(issued + d.access_ttl) if d.allow else None"),
    DecisionField("expires_at.refresh", {**_INSTANT, "description": "null when no refresh token is issued"},
                  "_utc(issued + d.refresh_ttl) if d.refresh_ttl else None"),
    DecisionField("expires_at.session", {**_INSTANT, "description": "null when the session end is unknown"},
                  "None if d.session_end is None else _utc(int(d.session_end.timestamp()))", "session_end"),
    _attribute("step_up", {"type": "boolean"}),
    _attribute("step_up_reasons", {"type": "array", "items": {"type": "string"}}),
    _attribute("deny_reason", {"type": ["string", "null"]}),
    _attribute("matched", {"type": "array", "items": {"type": "string"}}),
    DecisionField("errors", {"type": "array", "items": RULE_OUTCOME_SCHEMA},
                  "[e.to_dict() for e in d.errors] if d.errors else []", "errors"),
    _attribute("tier", {"type": ["string", "null"]}),
    DecisionField("trace", {"type": "array", "items": STEP_SCHEMA},
                  f"[{_STEP_DICTS} for t, s, v, r, ru, so in d.steps] if d._trace is None else d.trace_dicts()"),
    _attribute("policy.name", {"type": "string"}, "policy_name"),
    _attribute("policy.digest", {"type": "string"}, "policy_digest"),
    DecisionField("rules", {"type": "array", "items": RULE_OUTCOME_SCHEMA,
                            "description": "every rule's outcome, with explain"},
                  "[r.to_dict() for r in d.rules]", "rules", optional=True),
)


@functools.lru_cache(maxsize=4096)
def _utc(second: int) -> str:
    """``2026-03-02T10:00:00Z`` for epoch ``second`` (at least 0). Memoized (a pure function of
    one int, safe to share between threads): decisions made in the same second expire in the same
    few seconds. Formatted from the day and two small tables of the time of day: a third of
    ``time.strftime``'s cost, which mattered when requests carry instants of their own."""
    day, rest = divmod(second, 86400)
    minute, rest = divmod(rest, 60)
    return _day(day) + _HOURS_MINUTES[minute] + _SECONDS[rest]


@functools.lru_cache(maxsize=64)
def _day(day: int) -> str:
    return date.fromordinal(day + _EPOCH_ORDINAL).isoformat() + "T"


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_HOURS_MINUTES = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECONDS = tuple(f"{s:02d}Z" for s in range(60))




def _generate_to_dict() -> Callable[[Decision], dict[str, Any]]:
    """``Decision.to_dict`` written out from FIELDS as one dict display (nested by the dotted
    keys), so it costs no loop and no lookup per field. Only FIELDS' own constant sources are
    compiled; nothing from a policy or a request."""
    tree: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.optional:
            continue
        *parents, leaf = spec.key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = spec.source

    def display(node: Mapping[str, Any]) -> str:
        return "{" + ", ".join(f"{key!r}: {display(value) if isinstance(value, dict) else value}"
                               for key, value in node.items()) + "}"

    # Whole seconds, truncated as the RFC 3339 texts are (a naive instant is local time, as in datetime).
    lines = ["def to_dict(d):", "    issued = int(d.issued_at.timestamp())", f"    out = {display(tree)}"]
    for spec in FIELDS:
        if spec.optional:
            assert "." not in spec.key and spec.attribute, spec  # an optional field is a top-level attribute
            lines += [f"    if d.{spec.attribute} is not None:", f"        out[{spec.key!r}] = {spec.source}"]
    lines += ["    if d.extra:", "        out.update(d.extra)", "    return out"]
    namespace: dict[str, Any] = {"_utc": _utc, "step_dict": step_dict}
    exec(compile("\n".join(lines) + "\n", "<ttlpolicy.decision.FIELDS>", "exec"), namespace)
    to_dict: Callable[[Decision], dict[str, Any]] = namespace["to_dict"]
    return to_dict


def decision_schema() -> dict[str, Any]:
    """The JSON Schema of ``to_dict()``, built from :data:`FIELDS` (nested by the dotted keys)."""
    schema: dict[str, Any] = {"type": "object", "required": [], "properties": {}}
    for spec in FIELDS:
        node = schema
        *parents, leaf = spec.key.split(".")
        for part in parents:
            if part not in node["properties"]:
                node["properties"][part] = {"type": "object", "required": [], "properties": {}}
                node["required"].append(part)
            node = node["properties"][part]
        node["properties"][leaf] = dict(spec.schema)
        if not spec.optional:
            node["required"].append(leaf)
    return schema


_to_dict = _generate_to_dict()
