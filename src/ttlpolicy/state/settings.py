"""The ``state:`` section of the service settings.

.. code-block:: yaml

    state: redis://redis.internal:6379/0          # or the long form:
    state:
      url: sqlite:///var/lib/ttlpolicy/state.db   # default: $XDG_STATE_HOME/ttlpolicy/state.db
      degraded: {access_ttl: 10m, refresh_ttl: 1h}
      emergency_max_duration: 7d
      retention: 90d
      callers: {rate: [6000 per 1m]}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..durations import parse_duration
from .backends import open_store
from .store import Window, redact_url

Seconds = Annotated[int, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DegradedSettings(_Model):
    """The ceilings every decision gets while the store cannot answer."""

    access_ttl: Seconds = 600
    refresh_ttl: Seconds = 3600


class CallerLimitSettings(_Model):
    """How often one API caller may call the decision API (default: no limit)."""

    rate: tuple[str, ...] = ()
    keys: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="per caller name: its own rate")

    @field_validator("rate", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("keys", mode="before")
    @classmethod
    def _each_one_or_many(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _rates_parse(self) -> CallerLimitSettings:
        for rate in (*self.rate, *(r for rates in self.keys.values() for r in rates)):
            windows(rate)
        return self

    def windows_for(self, caller: str) -> tuple[Window, ...]:
        rates = self.keys.get(caller, self.rate)
        return tuple(windows(r) for r in rates)


def windows(rate: str) -> Window:
    from .ratelimit import parse_rate

    return parse_rate(rate)


class StateSettings(_Model):
    url: str | None = Field(None, description="sqlite:///path/state.db or redis://host:6379/0; "
                                              "default: $XDG_STATE_HOME/ttlpolicy/state.db")
    poll_interval: float = Field(0.25, gt=0, le=5, description="seconds between checks for other replicas' changes")
    degraded: DegradedSettings = DegradedSettings()
    emergency_max_duration: Seconds = Field(7 * 86400, ge=60)
    retention: Seconds = Field(90 * 86400, ge=3600, description="the longest any token lives: how long a "
                                                                "revocation is kept")
    callers: CallerLimitSettings = CallerLimitSettings()

    @model_validator(mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.split(":", 1)[0].lower() not in (
                "sqlite", "redis", "rediss", "unix", "valkey", "valkeys"):
            raise ValueError(f"unsupported state store URL {redact_url(value)!r}: use sqlite:///path/state.db "
                             "or redis://host:6379/0")
        return value

    def resolved_url(self) -> str:
        return self.url or default_url()

    def open(self) -> Any:
        """Open the configured store (raises StoreURLError / StoreUnavailable)."""
        return open_store(self.resolved_url())


def default_url() -> str:
    """The embedded store's default place: ``$XDG_STATE_HOME/ttlpolicy/state.db``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"sqlite://{Path(base).absolute() / 'ttlpolicy' / 'state.db'}"
