"""The JSON Schema: one source, valid draft 2020-12, and what editors see matches the loader."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from ttlpolicy.durations import parse_duration
from ttlpolicy.validate import policy_schema

ROOT = Path(__file__).parent.parent
POLICY_FILES = sorted((ROOT / "policies").glob("*.yaml"))


def test_top_level_copy_is_the_shipped_schema() -> None:
    assert json.loads((ROOT / "schema" / "policy.schema.json").read_text()) == policy_schema()


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(policy_schema())
    assert policy_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_bundled_policies_validate_and_carry_the_modeline(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../schema/policy.schema.json")
    jsonschema.validate(yaml.safe_load(text), policy_schema())


@pytest.mark.parametrize("text, ok", [
    ("90", True), ("90s", True), ("15m", True), ("1h30m", True), ("14d", True), ("2w", True),
    ("PT15M", True), ("P1DT12H", True), ("P2W", True), ("0" * 30 + "90s", True), ("0" * 30 + "90", True),
    ("15 m", False), ("1.5h", False), ("P1M", False), ("-5m", False), ("PT", False), ("", False), ("1h2d", False),
    ("P1DT", False), ("P", False),
])
def test_schema_and_parser_agree_on_durations(text: str, ok: bool) -> None:
    duration_schema = {**policy_schema()["$defs"]["duration"], "$defs": policy_schema()["$defs"]}
    schema_ok = jsonschema.Draft202012Validator(duration_schema).is_valid(text)
    try:
        parse_duration(text)
        parser_ok = True
    except ValueError:
        parser_ok = False
    assert schema_ok == parser_ok == ok


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("1h30m", 5400), ("14d", 1209600), ("PT15M", 900),
                                           ("P1DT12H", 129600), (45, 45)])
def test_duration_values(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


def _errors(validator: jsonschema.Draft202012Validator, data: object) -> list[tuple[object, ...]]:
    return sorted((tuple(e.absolute_path), e.validator, e.message) for e in validator.iter_errors(data))


def test_inlined_schema_judges_as_the_shipped_one() -> None:
    """The loader validates with the $refs inlined (twice as fast); same errors, same paths."""
    from ttlpolicy.validate import _validator

    shipped, inlined = jsonschema.Draft202012Validator(policy_schema()), _validator()
    assert json.dumps(inlined.schema).count('"$ref"') < json.dumps(policy_schema()).count('"$ref"')
    base = yaml.safe_load((ROOT / "policies" / "workforce.yaml").read_text())
    broken = [
        base,
        {**base, "defaults": {"access_ttl": "1 hour", "refresh_ttl": [1]}},
        {**base, "limits": {"access_ttl": {"min": "1x"}}, "tiers": {"t": {"access_ttl": -3}}},
        {**base, "rules": [{"name": "r", "when": "true", "access_ttl": {"multiply": "x", "cap": True}},
                           {"name": 3, "refresh": {"idle_timeout": "5q", "rotation": "yes"}}, "rule"]},
        {**base, "rate_limits": [{"name": "n", "limit": "many"}], "attributes": {"a.b": {"type": "nope"}}},
    ]
    for data in broken:
        assert _errors(inlined, data) == _errors(shipped, data)
