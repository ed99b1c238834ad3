"""Realistic decision logs and event logs for the report tests: real decisions of the bundled
policies, written by the service's own decision-log formatter, plus issuer events."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from ttlpolicy import load_policies
from ttlpolicy.activity.events import Event
from ttlpolicy.server.config import DecisionLogSettings
from ttlpolicy.server.decisionlog import DecisionLog

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)  # a Monday
COUNTRIES = ["DE", "DE", "DE", "FR", "US", "US", "GB", "NL", "PL", "BR"]
TIERS = ["standard", "standard", "finance", "healthcare", "public", "government"]
CLIENTS = ["web", "web", "mobile", "cli", "partner-portal"]


def random_context(rng: random.Random) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tier": rng.choice(TIERS),
        "device": {"trust": rng.choice(["managed", "managed", "compliant", "known", "unmanaged"])},
        "user": {"id": f"user-{rng.randrange(40)}", "mfa": rng.random() < 0.7,
                 "risk": round(rng.choice([0.0, 0.0, 0.0, 0.1, 0.3, 0.6, 0.95]), 2)},
        "location": {"country": rng.choice(COUNTRIES), "ip": f"198.51.100.{rng.randrange(1, 250)}",
                     "expected_countries": ["DE", "FR"]},
        "resource": {"sensitivity": rng.choice(["internal", "internal", "confidential", "restricted"])},
        "client": {"id": rng.choice(CLIENTS), "type": rng.choice(["public", "confidential"])},
        "grant": {"type": rng.choice(["authorization_code", "refresh_token"])},
    }
    return context


def write_logs(directory: Path, decisions: int = 600, events: int = 300, days: int = 3,
               seed: int = 7) -> tuple[Path, Path]:
    """``(decision log, event log)`` spanning ``days`` from :data:`START`."""
    rng = random.Random(seed)
    policies = load_policies(ROOT / "policies")
    formatter = DecisionLog(DecisionLogSettings(sink="off"), lambda: None)
    span = days * 86400
    decision_log = directory / "decisions.jsonl"
    with open(decision_log, "wb") as file:
        for i in range(decisions):
            when = START + timedelta(seconds=rng.randrange(span))
            context = random_context(rng)
            decision = policies.decide(context, now=when)
            out = decision.to_dict()
            file.write(formatter.format((f"d-{i}", when.timestamp(), {"kind": "api_key", "id": "issuer"},
                                         decision.policy_name, decision.policy_digest, context, out, 0.0001)))
    event_log = directory / "events.jsonl"
    kinds = ["token.issued", "token.refreshed", "token.refreshed", "auth.failed", "refresh.failed",
             "token.bad_signature", "logout"]
    reasons = {"auth.failed": ["bad_password", "mfa_failed"], "refresh.failed": ["expired", "revoked", "reused"],
               "token.bad_signature": ["unknown_key"]}
    with open(event_log, "wb") as file:
        for i in range(events):
            kind = rng.choice(kinds)
            event = Event(id=f"e-{i}", type=kind, time=START + timedelta(seconds=rng.randrange(span)),
                          subject=f"user-{rng.randrange(40)}", client=rng.choice(CLIENTS),
                          country=rng.choice(COUNTRIES), reason=rng.choice(reasons[kind]) if kind in reasons else None)
            file.write(orjson.dumps(event.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
    return decision_log, event_log
