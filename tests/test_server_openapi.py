"""Every response the API gives, success or problem, validates against its own OpenAPI document."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from jsonschema import Draft202012Validator
from server_fixtures.helpers import FINANCE, client, hand_made_token

from ttlpolicy.server.auth import hash_key

KEY = "openapi-test-key-0123456789"
ADMIN_KEY = "openapi-admin-key-0123456789"


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    auth = {"api_keys": [{"name": "t", "hash": hash_key(KEY), "scopes": ["decide"]},
                         {"name": "a", "hash": hash_key(ADMIN_KEY), "scopes": ["admin"]}]}
    with client(auth=auth, limits={"max_body_bytes": 2048, "max_batch": 5}) as test_client:
        yield test_client


GOOD = {"X-API-Key": KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
JSON = {"content-type": "application/json"}
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": FINANCE, "explain": True}, "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {"tier": 1}}, "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {}, "policy": "x"}, "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": 1, "now": 5}, "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"content": b"{", "headers": {**GOOD, **JSON}}),
    ("post", "/v1/decide", "/v1/decide", {"content": b"{}", "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {"x": "y" * 4000}}, "headers": GOOD}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {}}}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {}}, "headers": {"Authorization": "Bearer nope"}}),
    ("post", "/v1/decide", "/v1/decide", {"json": {"context": {}}, "headers": {
        "Authorization": "Bearer " + hand_made_token({"alg": "none"}, {}, None)}}),
    ("post", "/v1/decide/batch", "/v1/decide/batch", {"json": {"requests": [
        {"context": {}}, {"context": {"tier": 3}}, 7, {"context": {}, "policy": "nope"}]}, "headers": GOOD}),
    ("post", "/v1/decide/batch", "/v1/decide/batch", {"json": {"requests": [{}] * 6}, "headers": GOOD}),
    ("get", "/v1/policies", "/v1/policies", {"headers": GOOD}),
    ("get", "/v1/policies/workforce", "/v1/policies/{name}", {"headers": GOOD}),
    ("get", "/v1/policies/nope", "/v1/policies/{name}", {"headers": GOOD}),
    ("get", "/v1/policies/nope", "/v1/policies/{name}", {}),
    ("post", "/v1/reload", "/v1/reload", {"headers": GOOD}),  # decide scope only: 403
    ("post", "/v1/events", "/v1/events", {"json": {"events": [{"id": "oa-1", "type": "logout", "subject": "a"}]},
                                          "headers": GOOD}),
    ("post", "/v1/events", "/v1/events", {"json": {"events": [{"type": "nope"}]}, "headers": GOOD}),
    ("post", "/v1/security-events", "/v1/security-events", {"content": b"x.y.z", "headers": {
        **GOOD, "content-type": "application/secevent+jwt"}}),
    ("get", "/v1/actions", "/v1/actions", {"headers": GOOD}),  # decide scope only: 403
    ("delete", "/v1/actions/x", "/v1/actions/{id}", {"headers": GOOD}),
    ("get", "/healthz", "/healthz", {}),
    ("get", "/readyz", "/readyz", {}),
    ("get", "/metrics", "/metrics", {}),
    ("get", "/openapi.json", "/openapi.json", {}),
    # state endpoints
    ("post", "/v1/revocations", "/v1/revocations", {"json": {"kind": "subject", "value": "a", "reason": "r"},
                                                    "headers": ADMIN}),
    ("post", "/v1/revocations", "/v1/revocations", {"json": {"kind": "subject", "value": "a", "reason": "r"},
                                                    "headers": ADMIN}),  # again: 200
    ("post", "/v1/revocations", "/v1/revocations", {"json": {"kind": "nope"}, "headers": ADMIN}),
    ("post", "/v1/revocations", "/v1/revocations", {"json": {"revocations": 3}, "headers": ADMIN}),
    ("post", "/v1/revocations", "/v1/revocations", {"json": {"kind": "all", "reason": "r"}, "headers": GOOD}),
    ("get", "/v1/revocations", "/v1/revocations", {"headers": ADMIN}),
    ("get", "/v1/revocations?kind=x", "/v1/revocations", {"headers": ADMIN}),
    ("get", "/v1/revocations/rev_x", "/v1/revocations/{id}", {"headers": ADMIN}),
    ("delete", "/v1/revocations/rev_x", "/v1/revocations/{id}", {"headers": ADMIN}),
    ("post", "/v1/tokens/check", "/v1/tokens/check", {"json": {"sub": "a"}, "headers": GOOD}),
    ("post", "/v1/tokens/check", "/v1/tokens/check", {"json": {"sub": "b"}, "headers": GOOD}),
    ("post", "/v1/tokens/check", "/v1/tokens/check", {"json": {}, "headers": GOOD}),
    ("post", "/v1/tokens/check", "/v1/tokens/check", {"json": {"token": "x.y.z"}, "headers": GOOD}),
    ("post", "/v1/tokens/check", "/v1/tokens/check", {"content": b"sub=a", "headers": {**GOOD, "content-type":
                                                                                       "text/plain"}}),
    ("post", "/v1/emergencies", "/v1/emergencies", {"json": {"scope": "user.risk > 0.99", "reason": "I",
                                                             "duration": "1h", "access_ttl": "5m"}, "headers": ADMIN}),
    ("post", "/v1/emergencies", "/v1/emergencies", {"json": {"scope": "user.risk >", "reason": "I"}, "headers": ADMIN}),
    ("get", "/v1/emergencies", "/v1/emergencies", {"headers": ADMIN}),
    ("get", "/v1/emergencies?status=x", "/v1/emergencies", {"headers": ADMIN}),
    ("get", "/v1/emergencies/em_x", "/v1/emergencies/{id}", {"headers": ADMIN}),
    ("delete", "/v1/emergencies/em_x", "/v1/emergencies/{id}", {"headers": ADMIN}),
]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document["components"]},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_document_is_a_valid_json_schema_set(api: Any) -> None:
    document = api.get("/openapi.json").json()
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("method, url, template, kwargs", CASES)
def test_response_matches_the_document(api: Any, method: str, url: str, template: str,
                                       kwargs: dict[str, Any]) -> None:
    document = api.get("/openapi.json").json()
    response = api.request(method.upper(), url, **kwargs)
    declared = document["paths"][template][method]["responses"]
    assert str(response.status_code) in declared, f"{response.status_code} not documented for {method} {template}"
    spec = declared[str(response.status_code)]
    media = response.headers["content-type"].split(";")[0]
    assert media in spec["content"], f"{media} not documented"
    for header, header_spec in spec.get("headers", {}).items():
        if header_spec.get("required"):
            assert header.lower() in response.headers
    schema = spec["content"][media]["schema"]
    if media.endswith("json"):
        errors = sorted(validator(document, schema).iter_errors(response.json()), key=str)
        assert not errors, errors[0].message


def test_subject_token_is_advertised_only_when_configured() -> None:
    from ttlpolicy.server import Settings
    from ttlpolicy.server.openapi import openapi_document

    plain = openapi_document(Settings())
    assert "subject_token" not in plain["components"]["schemas"]["DecideRequest"]["properties"]
    assert plain["components"]["schemas"]["DecideRequest"]["additionalProperties"] is False


# -- each policy's context schema (issue 14, defect 8) ------------------------------------------

CONTEXTS_ACCEPTED = [FINANCE, {}, {"tier": "public", "user": {"risk": 0.5, "mfa": None, "auth_time": 1_700_000_000}},
                     {"location": {"ip": "2001:db8::1", "country": "DE"}, "time": {"zone": "Europe/Berlin"}},
                     {"user": {"auth_time": "2026-03-02T10:00:00+01:00", "groups": ["a"]}}]
CONTEXTS_REFUSED = [{"tier": "banking"}, {"device": {"trust": "rooted"}}, {"user": {"risk": 2}}, {"nope": 1},
                    {"device": {"nope": 1}}, {"location": {"zone": "corporate"}}, {"time": {"hour": 3}},
                    {"token": {"sub": "x"}}, {"user": {"mfa": "yes"}}, {"device": 5},
                    {"user": {"auth_time": 300_000_000_000}}, {"location": {"country": "de"}}]


def test_each_policy_publishes_its_context_schema_and_the_request_refers_to_it(api: Any) -> None:
    document = api.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in ("workforce", "machine"):
        context = schemas[f"Context.{name}"]
        assert context["additionalProperties"] is False
        assert schemas[f"DecideRequest.{name}"]["properties"]["context"] == {"$ref": f"#/components/schemas/Context.{name}"}
    workforce = schemas["Context.workforce"]["properties"]
    assert workforce["device"]["properties"]["trust"]["enum"] == ["managed", "compliant", "known", "unmanaged", None]
    assert workforce["user"]["properties"]["risk"]["maximum"] == 1
    assert "zone" not in workforce["location"]["properties"] and "token" not in workforce  # derived, service-only
    body = document["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"oneOf": [{"$ref": "#/components/schemas/DecideRequest.machine"},
                              {"$ref": "#/components/schemas/DecideRequest.workforce"}]}


@pytest.mark.parametrize("context", CONTEXTS_ACCEPTED + CONTEXTS_REFUSED)
def test_the_published_schema_and_the_service_agree_on_contexts(api: Any, context: dict[str, Any]) -> None:
    document = api.get("/openapi.json").json()
    body_schema = document["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = {"context": context, "now": "2026-03-02T10:00:00Z"}
    valid = validator(document, body_schema).is_valid(request)
    status = api.post("/v1/decide", json=request, headers=GOOD).status_code
    assert (status == 200) == valid, (status, valid)
    assert valid == (context in CONTEXTS_ACCEPTED)
