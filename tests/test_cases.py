"""Runs the data-driven decision cases in tests/cases/ (see its README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ttlpolicy import ContextError, load_sources, parse_duration

CASES = Path(__file__).parent / "cases"
DEFAULT_NOW = "2026-03-02T10:00:00Z"  # a Monday, 11:00 in Berlin
_DURATIONS = {"access_ttl", "refresh_ttl", "idle_timeout", "max_session"}


def _collect() -> list[Any]:
    params = []
    for file in sorted(CASES.glob("*.yaml")):
        spec = yaml.safe_load(file.read_text())
        for i, case in enumerate(spec["cases"]):
            params.append(pytest.param(file.name, spec, case, id=f"{file.stem}[{i}] {case.get('note', '')}"))
    return params


def _policy_set(spec: dict[str, Any]) -> Any:
    documents = spec.get("policies") or [spec["policy"]]
    return load_sources({f"{doc['name']}.yaml": yaml.safe_dump(doc, sort_keys=False) for doc in documents})


def _normalise(expected: Any, key: str = "") -> Any:
    if isinstance(expected, dict):
        return {k: _normalise(v, k) for k, v in expected.items()}
    if key in _DURATIONS and isinstance(expected, str):
        return parse_duration(expected)
    return expected


def _subset(actual: Any, expected: Any) -> Any:
    """The part of ``actual`` that ``expected`` talks about, for a readable assertion diff."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: _subset(actual.get(k), v) for k, v in expected.items()}
    return actual


@pytest.mark.parametrize("file, spec, case", _collect())
def test_case(file: str, spec: dict[str, Any], case: dict[str, Any]) -> None:
    policies = _policy_set(spec)
    now = case.get("now", DEFAULT_NOW)
    if "expect_error" in case:
        with pytest.raises(ContextError) as info:
            policies.decide(case["context"], policy=case.get("policy"), now=now)
        assert sorted(p.path for p in info.value.problems) == sorted(case["expect_error"])
        return
    decision = policies.decide(case["context"], policy=case.get("policy"), now=now).to_dict()
    expected = _normalise(case["expect"])
    assert _subset(decision, expected) == expected, decision["trace"]


def test_every_case_file_has_cases() -> None:
    files = sorted(CASES.glob("*.yaml"))
    assert len(files) >= 8
    for file in files:
        assert yaml.safe_load(file.read_text())["cases"], file
