"""The decide request is written once (server/request_model.py): the OpenAPI document's
``DecideRequest`` schema and the validator every request passes come from the same model, and
hypothesis holds them to the same verdicts on bodies generated from the schema.

The bodies come from :func:`from_schema` below, not from hypothesis-jsonschema: its last release
(0.23.1) reaches into hypothesis internals that hypothesis 6.1xx no longer has ('many' object
has no attribute 'more'). The few keywords a request schema uses are generated here, and any
other keyword fails the test, so the schema cannot grow past what is generated.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from ttlpolicy.errors import CODES
from ttlpolicy.server import Settings
from ttlpolicy.server.openapi import openapi_document
from ttlpolicy.server.request_model import decide_request_schema, validate_decide_request

_DATE_TIMES = st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                                       timezone(timedelta(hours=-8))]))
_KEYWORDS = {"type", "properties", "required", "additionalProperties", "minLength", "maxLength", "format",
             "description"}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that ``schema`` allows, for the keywords in ``_KEYWORDS``."""
    unknown = set(schema) - _KEYWORDS
    assert not unknown, f"the request schema uses {unknown}: teach from_schema to generate them"
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        if schema.get("format") == "date-time":
            return _DATE_TIMES.map(lambda d: d.isoformat().replace("+00:00", "Z"))
        assert "format" not in schema, schema
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        edge = st.sampled_from("aé\U0001f600").map(lambda c: c * high) if high is not None else st.nothing()
        return st.text(min_size=low, max_size=min(high, 64) if high is not None else 64) | edge  # and at the limit
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        assert extra in (True, False), extra
        fixed = st.fixed_dictionaries({k: from_schema(v) for k, v in properties.items() if k in required},
                                      optional={k: from_schema(v) for k, v in properties.items() if k not in required})
        if extra is False:
            return fixed
        return st.tuples(fixed, st.dictionaries(st.text(max_size=8), JSON, max_size=4)).map(
            lambda t: {**t[1], **t[0]})
    raise AssertionError(f"from_schema cannot generate {schema}")


SCHEMA = decide_request_schema()
VALIDATOR = Draft202012Validator(SCHEMA)  # no format checking: `format` is an annotation in JSON Schema
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = st.sampled_from([*SCHEMA["properties"], "contexts", "token", ""])
OVER_LIMIT = st.sampled_from([p["maxLength"] + 1 for p in SCHEMA["properties"].values() if "maxLength" in p]).map(
    lambda n: "x" * n)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _now_content_only(problems: list[Any]) -> bool:
    """The one thing the schema leaves to the validator: whether ``now``'s text is an instant in
    [1970, 9000) UTC that the calendar has (the schema says ``format: date-time``)."""
    return bool(problems) and all(p.path == "now" and p.code == "invalid-field" for p in problems)


def test_the_published_request_schema_is_the_models() -> None:
    document = openapi_document(Settings(subject_tokens={"issuers": []}))
    published = document["components"]["schemas"]["DecideRequest"]
    assert {k: v for k, v in published.items() if k != "properties"} == \
        {k: v for k, v in SCHEMA.items() if k != "properties"}
    assert published["properties"] == {k: v for k, v in SCHEMA["properties"].items() if k != "subject_token"}
    assert SCHEMA["required"] == ["context"] and SCHEMA["additionalProperties"] is False


@FAST
@given(from_schema(SCHEMA))
def test_every_body_the_schema_allows_is_accepted(body: dict[str, Any]) -> None:
    result = validate_decide_request(body)
    if isinstance(result, list):
        assert _now_content_only(result), result
        assert not 1970 <= int(body["now"][:4]) < 9000 or "not an RFC 3339" in result[0].message, body["now"]
    else:
        assert result["context"] == body["context"]
        assert set(result) == set(body)


@FAST
@given(st.one_of(
    JSON,
    st.dictionaries(FIELDS, JSON, max_size=6),
    st.tuples(from_schema(SCHEMA), FIELDS, JSON | OVER_LIMIT).map(lambda t: {**t[0], t[1]: t[2]}),
    st.tuples(from_schema(SCHEMA), FIELDS).map(lambda t: {k: v for k, v in t[0].items() if k != t[1]}),
))
def test_the_schema_and_the_validator_refuse_the_same_bodies(body: Any) -> None:
    allowed = VALIDATOR.is_valid(body)
    result = validate_decide_request(body)
    if allowed:
        assert isinstance(result, dict) or _now_content_only(result), (body, result)
    else:
        assert isinstance(result, list) and result, (body, list(VALIDATOR.iter_errors(body)))
        assert all(p.code in CODES for p in result)
        # every field the validator names is one the schema objects to too (or the body itself)
        flagged = {e.path[0] if e.path else None for e in VALIDATOR.iter_errors(body)}
        extra = {name for e in VALIDATOR.iter_errors(body) if e.validator == "additionalProperties"
                 for name in body if name not in SCHEMA["properties"]}
        required = {name for e in VALIDATOR.iter_errors(body) if e.validator == "required" for name in SCHEMA["required"]}
        for problem in result:
            field = problem.path.split(".")[0] or None
            assert field in flagged | extra | required or field == "now" or (field is None and None in flagged), (
                body, problem)


def test_problems_name_the_field_never_the_value() -> None:
    token = "eyJ.secret." + "x" * 9000
    problems = validate_decide_request({"context": [], "subject_token": token, "explain": "yes", "now": 5,
                                        "policy": None, "extra": 1})
    assert isinstance(problems, list)
    assert sorted((p.path, p.code) for p in problems) == [
        ("context", "invalid-field"), ("explain", "invalid-field"), ("extra", "unknown-field"),
        ("now", "invalid-field"), ("policy", "invalid-field"), ("subject_token", "too-long")]
    assert not any("secret" in p.message or "yes" in p.message for p in problems)
    assert [(p.path, p.code) for p in validate_decide_request([1])] == [("", "invalid-type")]  # type: ignore[union-attr]
    assert [(p.path, p.code) for p in validate_decide_request({})] == [("context", "missing-field")]  # type: ignore[union-attr]
