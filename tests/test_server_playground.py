"""The playground API (/v1/playground/*) and the /ui/ assets: shapes, every bound, credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from jsonschema import Draft202012Validator
from server_fixtures.helpers import POLICIES, client

from ttlpolicy import load_policies
from ttlpolicy.server.auth import hash_key

KEY = "playground-test-key-0123456789"
WORKFORCE = next(p for p in POLICIES.iterdir() if p.name == "workforce.yaml")


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    with client() as test_client:
        yield test_client


def _served_name(api: Any) -> str:
    files = api.get("/v1/playground/policies").json()["files"]
    return next(f["file"] for f in files if f["file"].endswith("workforce.yaml"))


def _check(api: Any, response: Any, path: str, method: str = "post") -> None:
    """The response is documented in /openapi.json, body included."""
    document = api.get("/openapi.json").json()
    declared = document["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, (response.status_code, response.text)
    media = response.headers["content-type"].split(";")[0]
    schema = declared[str(response.status_code)]["content"][media]["schema"]
    validator = Draft202012Validator({**schema, "components": document["components"]})
    errors = list(validator.iter_errors(response.json()))
    assert not errors, errors[0].message


def test_the_page_and_its_assets_are_served_with_a_strict_policy(api: Any) -> None:
    page = api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = api.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media) and asset.content
    for text in (page.text, api.get("/ui/app.js").text, api.get("/ui/app.css").text):
        assert "http://" not in text and "https://" not in text  # nothing from anywhere else
    assert api.get("/ui", follow_redirects=False).headers["location"].endswith("/ui/")
    missing = api.get("/ui/../openapi.json")
    assert missing.status_code == 404 or missing.json().get("openapi")  # normalised by the client, never a file
    assert api.get("/ui/secret.txt").status_code == 404


def test_policies_describe_the_form_and_the_rules(api: Any) -> None:
    response = api.get("/v1/playground/policies")
    _check(api, response, "/v1/playground/policies", "get")
    data = response.json()
    workforce = next(p for p in data["policies"] if p["name"] == "workforce")
    attributes = {a["name"]: a for a in workforce["attributes"]}
    assert attributes["device.trust"]["values"] == ["managed", "compliant", "known", "unmanaged"]
    assert attributes["tier"]["values"] == workforce["tiers"] and attributes["user.risk"]["max"] == 1
    assert not any(name.startswith(("token.", "activity.")) for name in attributes)
    assert not any(name.startswith(("token.", "activity.")) for name in workforce["dimensions"])
    assert "time.hour" in workforce["dimensions"]
    rule = next(r for r in workforce["rules"] if r["name"] == "off-hours")
    lines = WORKFORCE.read_text().splitlines()
    assert rule["file"].endswith("workforce.yaml") and "- name: off-hours" in lines[rule["line"] - 1]
    assert any(f["file"].endswith("baseline.yaml") for f in data["files"])


def test_decide_against_an_edited_version_changes_nothing_served(api: Any) -> None:
    name = _served_name(api)
    text = WORKFORCE.read_text().replace("access_ttl: {multiply: 0.5}\n    refresh_ttl: {cap: 12h}",
                                         "access_ttl: {multiply: 0.25}\n    refresh_ttl: {cap: 12h}")
    context = {"tier": "standard", "device": {"trust": "managed"}}
    night = "2026-03-04T02:00:00+01:00"
    edited = api.post("/v1/playground/decide", json={"version": {"files": {name: text}}, "context": context,
                                                     "now": night})
    _check(api, edited, "/v1/playground/decide")
    served = api.post("/v1/decide", json={"context": context, "now": night}).json()
    assert edited.json()["access_ttl"] == served["access_ttl"] // 2
    assert edited.json()["rules"]  # explained: every rule's outcome
    again = api.post("/v1/playground/decide", json={"context": context, "now": night}).json()
    assert again["access_ttl"] == served["access_ttl"]


def test_lint_reports_problems_at_their_line_with_the_cli_codes(api: Any, tmp_path: Path) -> None:
    name = _served_name(api)
    broken = WORKFORCE.read_text().replace('when: device.trust == "unmanaged"', 'when: device.trust == ')
    response = api.post("/v1/playground/lint", json={"files": {name: broken}})
    _check(api, response, "/v1/playground/lint")
    data = response.json()
    assert data["ok"] is False and data["policies"] == []
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if text.endswith("device.trust == "))
    error = next(p for p in data["problems"] if p["severity"] == "error")
    assert error["location"]["line"] == line and error["location"]["file"] == name
    for file in POLICIES.glob("*.yaml"):
        (tmp_path / file.name).write_text(broken if file.name == "workforce.yaml" else file.read_text())
    cli = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", "lint", "--format", "json", str(tmp_path)],
                         capture_output=True, text=True)
    assert [p["code"] for p in json.loads(cli.stdout)["problems"]] == [p["code"] for p in data["problems"]]
    clean = api.post("/v1/playground/lint", json={"files": {name: WORKFORCE.read_text()}}).json()
    assert clean["ok"] is True and {p["name"] for p in clean["policies"]} == {"workforce", "machine"}


def test_grid_cells_are_decisions(api: Any) -> None:
    response = api.post("/v1/playground/grid", json={"x": "time.hour", "y": "device.trust",
                                                     "fixed": {"tier": "finance"}})
    _check(api, response, "/v1/playground/grid")
    data = response.json()
    assert len(data["cells"]) == 96 and data["x"]["labels"][3] == "03"
    cell = data["cells"][3 * 24 + 3]
    decided = load_policies(POLICIES).decide(cell["context"], now=cell["now"])
    assert decided.access_ttl == cell["decision"]["access_ttl"] and cell["decision"]["trace"]


def test_diff_between_the_served_set_and_an_edit(api: Any) -> None:
    name = _served_name(api)
    text = WORKFORCE.read_text().replace("access_ttl: {multiply: 0.5}\n    refresh_ttl: {cap: 12h}",
                                         "access_ttl: {multiply: 0.8}\n    refresh_ttl: {cap: 12h}")
    response = api.post("/v1/playground/diff", json={"head": {"files": {name: text}}, "x": "time.hour",
                                                     "y": "device.trust"})
    _check(api, response, "/v1/playground/diff")
    data = response.json()
    assert data["map"]["changed"] == 32 and data["report"]["loosening"] is True
    assert {g["kind"] for g in data["report"]["groups"]} == {"access longer"}
    assert data["map"]["cells"][2]["kinds"] == ["access longer"]


def test_diff_against_a_git_revision(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    for file in POLICIES.glob("*.yaml"):
        (repo / "policies" / file.name).write_text(file.read_text())
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    edited = repo / "policies" / "workforce.yaml"
    edited.write_text(edited.read_text().replace('deny: government tenants require a managed device',
                                                 'step_up: a managed device is advised'))
    with client(policies=repo / "policies") as api:
        revisions = api.get("/v1/playground/policies").json()["git"]
        assert [r["subject"] for r in revisions] == ["first"]
        response = api.post("/v1/playground/diff", json={"base": {"git": "HEAD"}, "x": "tier", "y": "device.trust"})
        assert response.status_code == 200, response.text
        assert "deny→allow" in {g["kind"] for g in response.json()["report"]["groups"]}
        bad = api.post("/v1/playground/diff", json={"base": {"git": "no-such-rev"}, "x": "tier", "y": "device.trust"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid-source"
        option = api.post("/v1/playground/diff", json={"base": {"git": "--output=/tmp/x"}, "x": "tier",
                                                       "y": "device.trust"})
        assert option.status_code == 400 and option.json()["errors"][0]["path"] == "base.git"


# -- every bound and every refusal ------------------------------------------------------------

def test_text_size_is_bounded() -> None:
    with client(ui={"max_text_bytes": 2048}) as api:
        response = api.post("/v1/playground/lint", json={"files": {"big.yaml": "#" * 3000}})
        assert response.status_code == 413 and response.json()["code"] == "text-too-large"
        assert response.json()["max_bytes"] == 2048
        body = api.post("/v1/playground/lint", content=b'{"files": {"a.yaml": "' + b"x" * 70_000 + b'"}}',
                        headers={"content-type": "application/json"})
        assert body.status_code == 413 and body.json()["code"] == "body-too-large"
        _check(api, response, "/v1/playground/lint")


def test_grid_size_is_bounded() -> None:
    with client(ui={"max_cells": 95}) as api:
        response = api.post("/v1/playground/grid", json={"x": "time.hour", "y": "device.trust"})
        assert response.status_code == 422 and response.json()["code"] == "grid-too-large"
        assert response.json()["max_cells"] == 95 and "96 cells" in response.json()["detail"]
        _check(api, response, "/v1/playground/grid")
        diff = api.post("/v1/playground/diff", json={"x": "time.hour", "y": "device.trust"})
        assert diff.status_code == 422 and diff.json()["code"] == "grid-too-large"


def test_compute_time_is_bounded() -> None:
    with client(ui={"max_seconds": 0.000001}) as api:
        response = api.post("/v1/playground/grid", json={"x": "time.hour", "y": "device.trust"})
        assert response.status_code == 422 and response.json()["code"] == "compute-time-exceeded"
        _check(api, response, "/v1/playground/grid")


@pytest.mark.parametrize("path, body, status, code, field", [
    ("/v1/playground/grid", {"x": "time.hour"}, 400, "invalid-request", "y"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "nope"}, 422, "invalid-grid", "y.attribute"),
    ("/v1/playground/grid", {"x": "time.hour", "y": {"attribute": "user.risk", "values": [3]}}, 422,
     "invalid-grid", "y.values[0]"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "device.trust", "fixed": {"user": {"risk": 9}}}, 422,
     "invalid-context", "fixed.user.risk"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "device.trust", "fixed": {"token": {"sub": "x"}}}, 400,
     "invalid-request", "fixed.token"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "device.trust", "extra": 1}, 400, "invalid-request", "extra"),
    ("/v1/playground/decide", {"context": {"activity": {"sessions": 0}}}, 400, "invalid-request",
     "context.activity"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "device.trust", "now": "yesterday"}, 400,
     "invalid-request", "now"),
    ("/v1/playground/grid", {"x": "time.hour", "y": "device.trust", "policy": "nope"}, 404, "unknown-policy", None),
    ("/v1/playground/decide", {"context": {"tier": "mars"}}, 422, "invalid-context", "tier"),
    ("/v1/playground/decide", {}, 400, "invalid-request", "context"),
    ("/v1/playground/decide", {"context": {}, "version": {"files": {"x.txt": "a"}}}, 400, "invalid-request",
     "version.files"),
    ("/v1/playground/decide", {"context": {}, "version": {"files": {"x.yaml": "name: ["}}}, 422,
     "policy-load-failed", None),
    ("/v1/playground/lint", {"files": {}}, 400, "invalid-request", "files"),
    ("/v1/playground/lint", [1], 400, "invalid-request", ""),
])
def test_bad_requests_are_problems_at_their_field(api: Any, path: str, body: Any, status: int, code: str,
                                                  field: str | None) -> None:
    response = api.post(path, json=body)
    assert response.status_code == status, response.text
    data = response.json()
    assert data["code"] == code and response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in [e["path"] for e in data["errors"]]
    _check(api, response, path)


def test_wrong_media_type_is_refused(api: Any) -> None:
    response = api.post("/v1/playground/lint", content=b"files", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_credentials_guard_the_api_not_the_static_page() -> None:
    auth = {"api_keys": [{"name": "t", "hash": hash_key(KEY), "scopes": ["decide"]}]}
    with client(auth=auth) as api:
        assert api.get("/ui/").status_code == 200  # no data in it
        refused = api.get("/v1/playground/policies")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        _check(api, refused, "/v1/playground/policies", "get")
        assert api.post("/v1/playground/grid", json={"x": "tier", "y": "device.trust"}).status_code == 401
        ok = api.post("/v1/playground/grid", json={"x": "tier", "y": "device.trust"}, headers={"X-API-Key": KEY})
        assert ok.status_code == 200


def test_the_playground_can_be_turned_off() -> None:
    with client(ui={"enabled": False}) as api:
        assert api.get("/ui/").status_code == 404
        assert api.post("/v1/playground/grid", json={"x": "tier", "y": "device.trust"}).status_code == 404
        assert not any(p.startswith("/v1/playground") for p in api.get("/openapi.json").json()["paths"])
