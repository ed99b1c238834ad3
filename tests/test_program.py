"""The compiled policy and its generated program, as the rest of the pipeline sees them."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from ttlpolicy import load_sources
from ttlpolicy.program import Program

NOW = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
POLICY = """
apiVersion: ttlpolicy/v1
name: p
description: Short tokens.
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - {name: mfa, when: user.mfa, access_ttl: {multiply: 2}}
"""


def test_a_program_keeps_its_source_packed_and_its_fallbacks() -> None:
    def run(context: object, now: datetime, explain: bool) -> object:
        raise AssertionError("not called")

    program = Program.of(run, "def decide(): ...\n", (("slow-rule", "calls a closure"),))
    assert program.source == "def decide(): ...\n" and program.packed_source != program.source.encode()
    assert program.fallbacks == (("slow-rule", "calls a closure"),)
    assert Program.of(run, "x").fallbacks == ()


def test_a_compiled_policy_decides_without_explaining_unless_asked_and_summarises_itself() -> None:
    policy = load_sources({"p.yaml": POLICY}).get("p")
    assert policy.decide({"user": {"mfa": True}}, NOW).rules is None
    assert policy.decide({"user": {"mfa": True}}, NOW, explain=True).rules is not None
    assert policy.summary() == {"name": "p", "digest": policy.digest, "description": "Short tokens.",
                                "files": ["p.yaml"], "rules": 1}
    with pytest.raises(ValueError, match="^policy 'p' has no program$"):
        dataclasses.replace(policy, program=None).decide({}, NOW)
