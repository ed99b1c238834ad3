"""Compile once, evaluate many: an immutable, thread-safe set with content digests."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import ttlpolicy.cel.parse
from ttlpolicy import UnknownPolicyError, load_policies, load_sources

ROOT = Path(__file__).parent.parent
CONTEXTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples" / "contexts").glob("*.json"))
            if not p.name.startswith("machine")]
NOWS = [f"2026-11-{day:02d}T{hour:02d}:15:00Z" for day in (23, 28) for hour in (3, 11, 21)]


def test_concurrent_decisions_equal_sequential_ones() -> None:
    policies = load_policies(ROOT / "policies")
    jobs = [(c, now) for c in CONTEXTS for now in NOWS] * 20
    expected = [policies.decide(c, now=now).to_dict() for c, now in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        actual = list(pool.map(lambda job: policies.decide(job[0], now=job[1]).to_dict(), jobs))
    assert actual == expected


def test_nothing_is_parsed_per_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_policies(ROOT / "policies")

    def refuse(text: str) -> None:
        raise AssertionError(f"parsed at decision time: {text}")

    monkeypatch.setattr(ttlpolicy.cel.parse, "parse", refuse)
    monkeypatch.setattr(ttlpolicy.compile, "parse", refuse)
    for context in CONTEXTS:
        policies.decide(context, now=NOWS[0])


def test_decisions_do_not_change_the_context() -> None:
    policies = load_policies(ROOT / "policies")
    for context in CONTEXTS:
        before = json.dumps(context, sort_keys=True)
        policies.decide(context, now=NOWS[0])
        assert json.dumps(context, sort_keys=True) == before


def test_digest_follows_meaning_not_layout() -> None:
    base = "apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\nrules:\n"
    a = "  - {name: a, when: user.mfa, access_ttl: {multiply: 2}}\n"
    b = "  - {name: b, when: 'user.risk > 0.5', deny: risky}\n"
    digest = load_sources({"p.yaml": base + a + b}).get().digest
    assert load_sources({"p.yaml": "# a comment\n" + base + b + a}).get().digest == digest
    assert load_sources({"p.yaml": base + a.replace("2}", "3}") + b}).get().digest != digest
    assert digest.startswith("sha256:") and len(digest) == 71


def test_policy_selection_and_unknown_policy() -> None:
    policies = load_policies(ROOT / "policies")
    assert policies.names == ["machine", "workforce"] and policies.default == "workforce"
    assert policies.decide({}, policy="machine", now=NOWS[0]).policy_name == "machine"
    with pytest.raises(UnknownPolicyError, match="known policies: machine, workforce"):
        policies.decide({}, policy="baseline")  # abstract: not decidable


def test_now_must_be_aware() -> None:
    from datetime import datetime

    policies = load_policies(ROOT / "policies")
    with pytest.raises(ValueError, match="aware"):
        policies.decide({}, now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="offset"):
        policies.decide({}, now="2026-01-01T10:00:00")
