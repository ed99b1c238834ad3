"""The decision's fields are defined once (``ttlpolicy.decision.FIELDS``): ``to_dict`` is generated
from the table, the OpenAPI document's Decision schema is built from it, diff compares each of its
keys or says why not, and the token SDK's view reads it through the same keys."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from ttlpolicy import load_policies
from ttlpolicy.decision import FIELDS, decision_schema
from ttlpolicy.diffing import DECISION_FIELDS, NOT_COMPARED
from ttlpolicy.server import Settings
from ttlpolicy.server.openapi import openapi_document
from ttlpolicy.tokens import DecisionView

POLICIES = load_policies("policies")
CONTEXTS = [
    {"user": {"mfa": True, "auth_time": "2025-03-04T09:00:00Z", "risk": 0.1}, "device": {"trust": "managed"}},
    {"user": {"mfa": False, "risk": 0.95}, "device": {"trust": "unmanaged"}, "location": {"ip": "203.0.113.9"}},
    {"tier": "finance", "user": {"mfa": True, "groups": ["payments"]}, "client": {"binding": "dpop"}},
    {},
]


def _decisions(explain: bool = False) -> list[Any]:
    return [POLICIES.decide(context, now=now, explain=explain)
            for context in CONTEXTS for now in ("2025-03-04T10:00:00Z", "2025-03-08T23:30:00+05:30")]


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_to_dict_has_exactly_the_fields_of_the_table() -> None:
    keys = [spec.key for spec in FIELDS]
    assert len(keys) == len(set(keys))
    for decision in _decisions(explain=True):
        assert _flatten(decision.to_dict()) == set(keys)
    for decision in _decisions():
        assert _flatten(decision.to_dict()) == {spec.key for spec in FIELDS if not spec.optional}


def test_every_attribute_the_table_names_is_the_decisions_value() -> None:
    for decision in _decisions(explain=True):
        data = decision.to_dict()
        for spec in FIELDS:
            if spec.attribute is None or spec.key.startswith("expires_at.") or spec.key in ("errors", "rules"):
                continue
            value: Any = data
            for part in spec.key.split("."):
                value = value[part]
            assert value == getattr(decision, spec.attribute), spec.key


def test_the_published_decision_schema_is_the_tables_and_holds_every_decision() -> None:
    schema = decision_schema()
    assert list(schema["properties"]) == list(dict.fromkeys(spec.key.split(".")[0] for spec in FIELDS))
    published = openapi_document(Settings())["components"]["schemas"]["Decision"]
    # ... plus what the service adds (decision_id, policy_set, and the state layer's rate_limits, emergencies, ...)
    assert {k: published["properties"][k] for k in schema["properties"]} == schema["properties"]
    assert set(schema["required"]) <= set(published["required"])
    validator = Draft202012Validator(schema)
    for decision in _decisions() + _decisions(explain=True):
        errors = list(validator.iter_errors(decision.to_dict()))
        assert not errors, errors[0].message


def test_diff_compares_every_field_or_says_why_not() -> None:
    keys = {spec.key for spec in FIELDS}
    assert set(DECISION_FIELDS) | set(NOT_COMPARED) == keys
    assert not set(DECISION_FIELDS) & set(NOT_COMPARED)


def test_the_token_sdk_view_reads_a_decision_and_its_json_alike() -> None:
    for decision in _decisions():
        from_object, from_json = DecisionView.of(decision), DecisionView.of(decision.to_dict())
        assert from_object == from_json
        assert (from_object.allow, from_object.access_ttl, from_object.rotation, from_object.reuse_grace,
                from_object.policy, from_object.digest) == (decision.allow, decision.access_ttl, decision.rotation,
                                                            decision.reuse_grace, decision.policy_name,
                                                            decision.policy_digest)
