"""The HTTP API in process (Starlette TestClient): every endpoint and every error status."""

from __future__ import annotations

import json
import uuid
from typing import Iterator

import pytest
from server_fixtures.helpers import EXTRA_POLICY, FINANCE, POLICIES, client
from starlette.testclient import TestClient

from ttlpolicy import load_policies

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    with client() as test_client:
        yield test_client


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"https://ttlpolicy.dev/problems/{code}"
    assert body["status"] == status and body["code"] == code
    assert body["title"] and body["detail"]
    return body


# -- POST /v1/decide -----------------------------------------------------------------------------

def test_decide_returns_the_libraries_decision_plus_an_id(api: TestClient) -> None:
    now = "2025-03-04T10:00:00Z"
    response = api.post("/v1/decide", json={"context": FINANCE, "now": now})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    expected = load_policies(POLICIES).decide(FINANCE, now=now).to_dict()
    decision_id = body.pop("decision_id")
    assert uuid.UUID(decision_id).version == 4
    assert body.pop("policy_set") == {"digest": load_policies(POLICIES).digest}
    assert body == expected


def test_decide_with_named_policy_and_explain(api: TestClient) -> None:
    body = api.post("/v1/decide", json={"context": {"grant": {"type": "client_credentials"}},
                                        "policy": "machine", "explain": True}).json()
    assert body["policy"]["name"] == "machine"
    assert {r["rule"] for r in body["rules"]} >= {"ci-pipelines", "compromised-user"}


def test_decide_lower_case_rfc3339_now_is_accepted(api: TestClient) -> None:
    assert api.post("/v1/decide", json={"context": {}, "now": "2025-03-04t10:00:00z"}).status_code == 200


def test_context_violations_are_422_with_every_field(api: TestClient) -> None:
    response = api.post("/v1/decide", json={"context": {"tier": "banking", "user": {"risk": 2, "mfa": "yes"},
                                                        "color": "red"}})
    body = assert_problem(response, 422, "invalid-context")
    assert {(e["path"], e["code"]) for e in body["errors"]} == {
        ("tier", "context-value"), ("user.risk", "context-value"), ("user.mfa", "context-value"),
        ("color", "context-unknown-attribute")}
    assert all(e["message"] for e in body["errors"])


def test_unknown_policy_is_404(api: TestClient) -> None:
    body = assert_problem(api.post("/v1/decide", json={"context": {}, "policy": "nope"}), 404, "unknown-policy")
    assert body["known"] == ["machine", "workforce"]


@pytest.mark.parametrize("payload, paths", [
    ({}, {"context"}),
    ({"context": []}, {"context"}),
    ({"context": {}, "policy": 3, "explain": "yes", "now": "yesterday", "extra": 1},
     {"policy", "explain", "now", "extra"}),
    ({"context": {}, "now": "2025-03-04T10:00:00"}, {"now"}),  # no offset
    ([1, 2], {""}),
])
def test_wrong_shape_is_400_listing_every_field(api: TestClient, payload: object, paths: set[str]) -> None:
    body = assert_problem(api.post("/v1/decide", json=payload), 400, "invalid-request")
    assert {e["path"] for e in body["errors"]} == paths


def test_malformed_json_is_400(api: TestClient) -> None:
    response = api.post("/v1/decide", content=b'{"context": ', headers={"content-type": "application/json"})
    assert_problem(response, 400, "invalid-json")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(api: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = api.post("/v1/decide", content=b'{"context": {}}', headers=headers)
    assert_problem(response, 415, "unsupported-media-type")


def test_json_with_charset_is_accepted(api: TestClient) -> None:
    response = api.post("/v1/decide", content=b'{"context": {}}',
                        headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_body_over_limit_is_413_by_content_length() -> None:
    with client(limits={"max_body_bytes": 1024}) as small:
        big = {"context": {"user": {"groups": ["g" * 100] * 20}}}
        body = assert_problem(small.post("/v1/decide", json=big), 413, "body-too-large")
        assert body["max_bytes"] == 1024


def test_body_over_limit_is_413_when_streamed_without_content_length() -> None:
    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked: no Content-Length at all
        yield b'{"context": {"user": {"groups": ['
        for _ in range(100):
            yield b'"xxxxxxxxxxxxxxxxxxxx",'
        yield b'"x"]}}}'

    with client(limits={"max_body_bytes": 1024}) as small:
        response = small.post("/v1/decide", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(response, 413, "body-too-large")


def test_body_over_limit_is_413_when_content_length_lies() -> None:
    payload = json.dumps({"context": {"user": {"groups": ["g" * 100] * 20}}}).encode()
    with client(limits={"max_body_bytes": 1024}) as small:
        # The ASGI app sees the claimed length; the streamed bytes exceed both it and the limit.
        response = small.post("/v1/decide", content=payload,
                              headers={"content-type": "application/json", "content-length": "10"})
        assert_problem(response, 413, "body-too-large")


# -- POST /v1/decide/batch -----------------------------------------------------------------------

def test_batch_answers_in_order_with_decisions_and_problems(api: TestClient) -> None:
    requests = [{"context": FINANCE}, {"context": {"tier": "banking"}}, {"context": {}, "policy": "nope"},
                {"contex": {}}, {"context": {}, "policy": "machine"}]
    response = api.post("/v1/decide/batch", json={"requests": requests})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 422, 404, 400, 200]
    assert results[0]["decision"]["tier"] == "finance"
    assert results[1]["problem"]["errors"][0]["path"] == "tier"
    assert results[2]["problem"]["code"] == "unknown-policy"
    assert results[4]["decision"]["policy"]["name"] == "machine"
    ids = {results[0]["decision"]["decision_id"], results[4]["decision"]["decision_id"]}
    assert len(ids) == 2


def test_batch_limit_and_shape() -> None:
    with client(limits={"max_batch": 3}) as small:
        assert small.post("/v1/decide/batch", json={"requests": [{"context": {}}] * 3}).status_code == 200
        body = assert_problem(small.post("/v1/decide/batch", json={"requests": [{"context": {}}] * 4}),
                              400, "invalid-request")
        assert body["errors"][0]["code"] == "too-many-items"
        assert_problem(small.post("/v1/decide/batch", json={"requests": {}}), 400, "invalid-request")
        assert_problem(small.post("/v1/decide/batch", json=[]), 400, "invalid-request")
        assert_problem(small.post("/v1/decide/batch", json={"requests": [], "x": 1}), 400, "invalid-request")
        assert_problem(small.post("/v1/decide/batch", content=b"[", headers={"content-type": "application/json"}),
                       400, "invalid-json")
        assert_problem(small.post("/v1/decide/batch", content=b"{}"), 415, "unsupported-media-type")


def test_batch_default_limit_is_100(api: TestClient) -> None:
    assert api.post("/v1/decide/batch", json={"requests": [{"context": {}}] * 100}).status_code == 200
    assert api.post("/v1/decide/batch", json={"requests": [{"context": {}}] * 101}).status_code == 400


# -- policies, health, readiness, routing ----------------------------------------------------------

def test_list_policies(api: TestClient) -> None:
    body = api.get("/v1/policies").json()
    policies = load_policies(POLICIES)
    assert body["default"] == "workforce" and body["digest"] == policies.digest
    by_name = {p["name"]: p for p in body["policies"]}
    assert set(by_name) == {"machine", "workforce"}
    workforce = by_name["workforce"]
    assert workforce["default"] is True and by_name["machine"]["default"] is False
    assert workforce["rules"] == len(policies.get("workforce").rules)
    assert workforce["digest"] == policies.get("workforce").digest
    assert workforce["files"] == list(policies.get("workforce").files)
    assert workforce["loaded_at"].endswith("Z")


def test_get_one_policy_and_unknown(api: TestClient) -> None:
    body = api.get("/v1/policies/machine").json()
    machine = load_policies(POLICIES).get("machine")
    assert body["name"] == "machine" and body["default"] is False
    assert body["rules"] == len(machine.rules) and body["digest"] == machine.digest
    assert_problem(api.get("/v1/policies/baseline"), 404, "unknown-policy")  # abstract: never served


def test_health_and_ready(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["error"] is None
    assert ready.json()["digest"] == load_policies(POLICIES).digest


def test_unknown_route_is_404_problem(api: TestClient) -> None:
    assert_problem(api.get("/v2/anything"), 404, "not-found")
    assert_problem(api.get("/v1/policies/"), 404, "not-found")  # no redirect


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/v1/decide", "POST"), ("PUT", "/v1/decide/batch", "POST"), ("DELETE", "/v1/policies", "GET, HEAD"),
    ("POST", "/healthz", "GET, HEAD"), ("GET", "/v1/reload", "POST")])
def test_wrong_method_is_405_with_allow(api: TestClient, method: str, path: str, allow: str) -> None:
    response = api.request(method, path)
    assert_problem(response, 405, "method-not-allowed")
    # Starlette keeps a route's methods in a set: the order varies between runs.
    assert sorted(response.headers["allow"].split(", ")) == sorted(allow.split(", "))


def test_unexpected_exception_is_a_500_problem_without_details(monkeypatch: pytest.MonkeyPatch) -> None:
    with client() as test_client:
        service = test_client.app.state.service

        def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals /etc/passwd")

        monkeypatch.setattr(service, "_decide_one", boom)
        response = test_client.post("/v1/decide", json={"context": {}})
        body = assert_problem(response, 500, "internal-error")
        assert "secret" not in response.text and "Traceback" not in response.text
        assert body["detail"]


# -- reload (no credentials configured: loopback, everything allowed) ---------------------------------

def test_reload_endpoint(tmp_path) -> None:
    import shutil

    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    with client(policies=directory) as test_client:
        first = test_client.get("/readyz").json()["digest"]
        assert test_client.post("/v1/reload").json() == {
            "status": "unchanged", "digest": first, "loaded_at": test_client.get("/readyz").json()["loaded_at"]}
        (directory / "extra.yaml").write_text("name: [broken\n")
        body = assert_problem(test_client.post("/v1/reload"), 422, "policy-load-failed")
        errors = [p for p in body["problems"] if p["severity"] == "error"]
        assert errors and all(p["location"]["file"].endswith("extra.yaml") for p in errors)
        assert body["digest"] == first
        ready = test_client.get("/readyz").json()
        assert ready["status"] == "degraded" and ready["digest"] == first
        assert ready["error"]["problems"] == body["problems"]
        assert test_client.post("/v1/decide", json={"context": {}}).status_code == 200  # still serving
        (directory / "extra.yaml").write_text(EXTRA_POLICY)
        reloaded = test_client.post("/v1/reload").json()
        assert reloaded["status"] == "reloaded" and reloaded["digest"] != first
        assert test_client.get("/readyz").json()["status"] == "ready"
        assert test_client.get("/v1/policies/extra").status_code == 200
        metrics = test_client.get("/metrics").text
        assert 'ttlpolicy_reloads_total{result="failure"} 1.0' in metrics
        assert 'ttlpolicy_reloads_total{result="success"} 1.0' in metrics
        assert f'ttlpolicy_policy_set_info{{digest="{reloaded["digest"]}"}} 1.0' in metrics
        assert f'ttlpolicy_policy_set_info{{digest="{first}"}} 0.0' in metrics


# -- metrics and openapi --------------------------------------------------------------------------

def test_metrics_count_decisions_rules_ttls_and_errors() -> None:
    with client() as test_client:
        test_client.post("/v1/decide", json={"context": FINANCE})
        test_client.post("/v1/decide", json={"context": {"user": {"risk": 0.95}}})
        test_client.post("/v1/decide", json={"context": {"resource": {"sensitivity": "restricted"}}})
        test_client.post("/v1/decide", json={"context": {"tier": "nope"}})
        response = test_client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        text = response.text
    assert 'ttlpolicy_decisions_total{outcome="allow",policy="workforce"} 1.0' in text
    assert 'ttlpolicy_decisions_total{outcome="deny",policy="workforce"} 1.0' in text
    assert 'ttlpolicy_decisions_total{outcome="step_up",policy="workforce"} 1.0' in text
    assert 'ttlpolicy_decisions_total{outcome="error",policy="workforce"} 1.0' in text
    assert 'ttlpolicy_rule_matches_total{policy="workforce",rule="compromised-user"} 1.0' in text
    assert 'ttlpolicy_access_ttl_seconds_count{policy="workforce"} 3.0' in text
    assert 'ttlpolicy_refresh_ttl_seconds_count{policy="workforce"} 3.0' in text
    assert "ttlpolicy_decision_duration_seconds_count 3.0" in text
    assert "ttlpolicy_seconds_since_last_successful_load " in text


def test_openapi_document_describes_every_route(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/v1/decide", "/v1/decide/batch", "/v1/policies", "/v1/policies/{name}",
                                      "/v1/reload", "/healthz", "/readyz", "/metrics", "/openapi.json",
                                      "/v1/revocations", "/v1/revocations/{id}", "/v1/tokens/check",
                                      "/v1/emergencies", "/v1/emergencies/{id}",
                                      "/v1/playground/policies", "/v1/playground/lint", "/v1/playground/decide",
                                      "/v1/playground/grid", "/v1/playground/diff",
                                      "/v1/events", "/v1/security-events", "/v1/actions", "/v1/actions/{id}"}
    decide = document["paths"]["/v1/decide"]["post"]["responses"]
    assert set(decide) == {"200", "400", "401", "403", "404", "413", "415", "422", "429", "503"}
    assert document["components"]["schemas"]["BatchRequest"]["properties"]["requests"]["maxItems"] == 100
