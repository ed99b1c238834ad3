"""Typed, immutable models of a policy document after schema validation.

The JSON Schema guarantees the shape, so these models only convert (durations to seconds)
and give every later stage names instead of dictionary keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .durations import parse_duration

Seconds = Annotated[int, BeforeValidator(parse_duration)]
AttributeType = Literal["string", "int", "double", "bool", "timestamp", "list"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RefreshSettings(_Frozen):
    rotation: bool | None = None
    idle_timeout: Seconds | None = None
    max_session: Seconds | None = None
    reuse_grace: Seconds | None = None
    sender_constrained: bool | None = None


class Defaults(_Frozen):
    tier: str | None = None
    access_ttl: Seconds | None = None
    refresh_ttl: Seconds | None = None
    refresh: RefreshSettings = RefreshSettings()


class Limit(_Frozen):
    min: Seconds | None = None
    max: Seconds | None = None


class Limits(_Frozen):
    access_ttl: Limit = Limit()
    refresh_ttl: Limit = Limit()


class Tier(_Frozen):
    description: str = ""
    access_ttl: Seconds | None = None
    refresh_ttl: Seconds | None = None
    max_access_ttl: Seconds | None = None
    max_refresh_ttl: Seconds | None = None


class Attribute(_Frozen):
    type: AttributeType
    description: str = ""
    values: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    default: Any = None
    required: bool = False
    derived: bool = False  # computed by ttlpolicy (location.zone, time.hour, ...); never sent


class Factor(_Frozen):
    """A lifetime multiplier: a constant, or a CEL expression clamped to [min, max]."""

    value: float | None = None
    expr: str | None = None
    min: float = 0.0
    max: float | None = None


class TtlEffect(_Frozen):
    multiply: Factor | None = None
    cap: Seconds | None = None
    floor: Seconds | None = None


class Acknowledgement(_Frozen):
    """A warning a rule means to have, and why: ``allow: [{code: loosening-rule, reason: ...}]``."""

    code: str
    reason: str


class Rule(_Frozen):
    name: str
    description: str = ""
    when: str
    access_ttl: TtlEffect | None = None
    refresh_ttl: TtlEffect | None = None
    refresh: RefreshSettings | None = None
    step_up: str | None = None
    deny: str | None = None
    # Review metadata, not meaning: left out of the digest and of the diff's rule signatures.
    allow: tuple[Acknowledgement, ...] = Field(default=(), exclude=True)
    index: int = Field(default=0, exclude=True)  # position in its file, for locations only
    file: str = Field(default="", exclude=True)


class RateLimitExceed(_Frozen):
    """What exceeding a rate limit does; it can only tighten (deny, step-up, ceilings)."""

    deny: str | None = None
    step_up: str | None = None
    access_ttl: Seconds | None = None
    refresh_ttl: Seconds | None = None


class RateLimit(_Frozen):
    """A named rate limit (see :mod:`ttlpolicy.state.ratelimit`); compiled and counted by the state layer."""

    name: str
    description: str = ""
    when: str = "true"
    key: tuple[str, ...]
    rate: tuple[str, ...]
    on_exceed: RateLimitExceed
    index: int = Field(default=0, exclude=True)
    file: str = Field(default="", exclude=True)


class PolicyDocument(_Frozen):
    api_version: str = Field(alias="apiVersion")
    name: str
    description: str = ""
    default: bool = False
    abstract: bool = False
    extends: tuple[str, ...] = ()
    timezone: str | None = None
    defaults: Defaults = Defaults()
    limits: Limits = Limits()
    tiers: dict[str, Tier] = {}
    zones: dict[str, tuple[str, ...]] = {}
    attributes: dict[str, Attribute] = {}
    rules: tuple[Rule, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()

    @model_serializer(mode="wrap")
    def _omit_empty_rate_limits(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A policy without rate limits serializes (and so digests) as it did before they existed.
        data: dict[str, Any] = handler(self)
        if not data.get("rate_limits"):
            data.pop("rate_limits", None)
        return data


def normalise_factor(raw: Any) -> dict[str, Any]:
    """The three spellings of ``multiply`` (number, CEL string, mapping) as one mapping."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return {"value": float(raw)}
    if isinstance(raw, str):
        return {"expr": raw}
    return dict(raw)


def build_document(data: dict[str, Any], file: str) -> PolicyDocument:
    """Build the model from schema-valid data (raises pydantic's ValidationError otherwise)."""
    rules = []
    for index, rule in enumerate(data.get("rules", ())):
        # Rules merged in from a base keep the file and position they were written at.
        rule = {"index": index, "file": file, **rule}
        for target in ("access_ttl", "refresh_ttl"):
            if isinstance(rule.get(target), dict) and "multiply" in rule[target]:
                rule[target] = dict(rule[target], multiply=normalise_factor(rule[target]["multiply"]))
        rules.append(rule)
    rate_limits = []
    for index, limit in enumerate(data.get("rate_limits", ())):
        limit = {"index": index, "file": file, **limit}
        for listed in ("key", "rate"):  # one value or a list
            if isinstance(limit.get(listed), str):
                limit[listed] = [limit[listed]]
        rate_limits.append(limit)
    return PolicyDocument.model_validate({**data, "rules": rules, "rate_limits": rate_limits})
