"""Instants in and out of the state API: epoch seconds inside, RFC 3339 (UTC) outside."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..context import parse_timestamp


def rfc3339(epoch: float) -> str:
    """``2026-12-01T03:00:00Z`` (whole seconds are shown without a fraction)."""
    instant = datetime.fromtimestamp(epoch, timezone.utc)
    text = instant.isoformat(timespec="seconds" if epoch == int(epoch) else "milliseconds")
    return text.replace("+00:00", "Z")


def to_epoch(value: Any) -> float:
    """RFC 3339 text (with an offset) or epoch seconds; raises ValueError saying what is wrong."""
    return parse_timestamp(value).timestamp()
