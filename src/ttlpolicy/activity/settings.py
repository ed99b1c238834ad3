"""The ``activity:`` section of the service settings: events, detectors, shared security signals.

.. code-block:: yaml

    activity:
      enabled: true                 # compute activity.* for decisions and record them (needs the state store)
      max_events: 1000              # events per POST /v1/events
      detectors:
        - name: refresh-burst
          events: [token.refreshed]
          per: subject
          threshold: {count: 20, within: 10m}
          respond: [disable_refresh]
          for: 1h
      security_events:
        transmitters:
          - issuer: https://idp.example.com
            audience: https://ttlpolicy.example.com
            jwks_file: keys/idp-jwks.json
        respond:                    # per event type: the actions taken on its subject
          credential-compromise: [disable_refresh, step_up]
        for: 1d
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ..durations import parse_duration
from .detectors import Detector, EmergencyCeiling
from .security_events import EVENT_TYPES, Transmitter

Seconds = Annotated[int, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, (str, int)) else v)]
Response = Literal["disable_refresh", "step_up", "revoke_family", "revoke_subject", "emergency"]
# What a security event does by default: revocations for what ended, step-up for what changed.
DEFAULT_SET_RESPONSES: dict[str, tuple[Response, ...]] = {
    "session-revoked": ("revoke_family",),
    "credential-change": ("step_up",),
    "account-disabled": ("revoke_subject", "disable_refresh"),
    "account-credential-change-required": ("step_up",),
    "credential-compromise": ("revoke_subject", "step_up"),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecurityEventSettings(_Model):
    transmitters: tuple[Transmitter, ...] = ()
    respond: dict[str, tuple[Response, ...]] = Field(default_factory=lambda: dict(DEFAULT_SET_RESPONSES))
    for_: Seconds = Field(86_400, alias="for", ge=60, le=90 * 86_400, description="how long the actions last")
    emergency: EmergencyCeiling = EmergencyCeiling()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _known(self) -> SecurityEventSettings:
        known = set(EVENT_TYPES.values())
        unknown = sorted(set(self.respond) - known)
        if unknown:
            raise ValueError(f"respond: unknown event type {unknown[0]!r}; known: {', '.join(sorted(known))}")
        issuers = [t.issuer for t in self.transmitters]
        if len(set(issuers)) != len(issuers):
            raise ValueError("a transmitter issuer is configured twice")
        return self


class EventLogSettings(_Model):
    """Where accepted events are written (JSON lines, for ``ttlpolicy report``)."""

    sink: Literal["stdout", "file", "off"] = "off"
    path: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("sink") is False:
            return {**value, "sink": "off"}  # YAML 1.1 reads a bare `off` as false
        return value

    @model_validator(mode="after")
    def _path(self) -> EventLogSettings:
        if self.sink == "file" and self.path is None:
            raise ValueError("sink 'file' needs a path")
        return self


class ActivitySettings(_Model):
    enabled: bool = Field(True, description="compute activity.* for decisions and record them in the store")
    max_events: int = Field(1000, ge=1, le=100_000, description="events per POST /v1/events")
    detectors: tuple[Detector, ...] = ()
    security_events: SecurityEventSettings = SecurityEventSettings()
    event_log: EventLogSettings = EventLogSettings()

    @model_validator(mode="after")
    def _names(self) -> ActivitySettings:
        names = [d.name for d in self.detectors]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"detector {twice[0]!r} is declared twice")
        return self
