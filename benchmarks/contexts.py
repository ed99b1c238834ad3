"""Seeded, realistic request contexts for the bundled workforce policy and the synthetic ones.

Deterministic (``random.Random(seed)``) so every engine, every run and every machine sees the
same requests. The mix is meant to look like a real issuer's traffic: mostly managed devices on
the corporate network in office hours, with a tail of unmanaged devices, risky users, foreign
countries, restricted data, refresh grants of old sessions and the occasional deny.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

TIERS = ["public", "standard", "standard", "standard", "healthcare", "finance", "government"]
TRUST = ["managed"] * 5 + ["compliant"] * 2 + ["known", "unmanaged", "unmanaged"]
PLATFORMS = ["windows", "macos", "linux", "ios", "android", "chromeos", "other"]
SENSITIVITY = ["public", "internal", "internal", "internal", "confidential", "restricted"]
GRANTS = ["authorization_code"] * 3 + ["refresh_token"] * 3 + ["device_code", "token_exchange"]
BINDINGS = ["none"] * 4 + ["mtls", "dpop"]
DEPARTMENTS = ["engineering", "finance", "sales", "support", "executive", "contractor"]
GROUPS = ["staff", "engineering", "finance-admins", "contractors", "oncall", "sales", "admins"]
COUNTRIES = ["DE", "DE", "DE", "FR", "US", "GB", "NL", "BR", "IN", "CN"]
ZONES_TZ = [None, None, None, "Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"]
BASE_NOW = datetime(2025, 3, 12, 9, 30, tzinfo=timezone.utc)  # a Wednesday


def _ip(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.40:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # corporate
    if roll < 0.55:
        return f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # vpn
    if roll < 0.60:
        return f"198.51.100.{rng.randrange(1, 255)}"  # partner
    if roll < 0.65:
        return f"2001:db8:100:{rng.randrange(65536):x}::{rng.randrange(1, 65535):x}"  # corporate v6
    if roll < 0.95:
        return f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return None


def workforce_context(rng: random.Random) -> tuple[dict[str, Any], str]:
    """One request context for the workforce policy and the decision instant (RFC 3339)."""
    now = BASE_NOW + timedelta(minutes=rng.randrange(0, 7 * 24 * 60))
    ctx: dict[str, Any] = {
        "tier": rng.choice(TIERS),
        "device": {"trust": rng.choice(TRUST), "platform": rng.choice(PLATFORMS)},
        "location": {},
        "resource": {"sensitivity": rng.choice(SENSITIVITY), "audience": "https://api.example.com"},
        "user": {"id": f"u{rng.randrange(100000)}", "mfa": rng.random() < 0.7,
                 "risk": round(rng.choice([0.0, 0.0, 0.0, rng.random() * 0.5, rng.random()]), 2),
                 "groups": rng.sample(GROUPS, rng.randrange(0, 4))},
        "client": {"id": f"app-{rng.randrange(20)}", "type": rng.choice(["public", "confidential"]),
                   "binding": rng.choice(BINDINGS)},
        "grant": {"type": rng.choice(GRANTS)},
    }
    ip = _ip(rng)
    if ip is not None:
        ctx["location"]["ip"] = ip
    if rng.random() < 0.9:
        ctx["location"]["country"] = rng.choice(COUNTRIES)
    if rng.random() < 0.6:
        ctx["location"]["expected_countries"] = rng.sample(["DE", "FR", "US", "GB", "NL"], rng.randrange(1, 3))
    if rng.random() < 0.7:
        ctx["user"]["department"] = rng.choice(DEPARTMENTS)
    if rng.random() < 0.85:
        auth = now - timedelta(seconds=rng.choice([600, 3600, 86400, 4 * 86400, 20 * 86400, 40 * 86400]))
        ctx["user"]["auth_time"] = auth.isoformat().replace("+00:00", "Z")
    zone = rng.choice(ZONES_TZ)
    if zone is not None:
        ctx["time"] = {"zone": zone}
    return ctx, now.isoformat().replace("+00:00", "Z")


def workforce_contexts(n: int, seed: int = 4) -> list[tuple[dict[str, Any], str]]:
    rng = random.Random(seed)
    return [workforce_context(rng) for _ in range(n)]
