"""Hypothesis fuzzing of the two doors an outsider can push on: the policy loader and the API.

The loader: random text, random YAML and policy-shaped documents with random leaves either
load or raise :class:`PolicyError` whose every problem has a registered code and a location in
the file — never another exception. The API: random decide requests (hostile timestamps,
numbers, zones, shapes) and random bodies are answered with a decision or a 4xx RFC 9457
problem — never a 500.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures.helpers import REPO, client

from ttlpolicy import PolicyError, load_sources
from ttlpolicy.errors import CODES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILE = "fuzz.yaml"

# Values chosen to sit on the edges where the standard library raises something other than
# ValueError: the ends of the calendar, numbers beyond float, zone "names" that are paths.
EDGE_TIMESTAMPS = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
                   "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "8999-12-31T23:59:59-23:59",
                   "2026-02-30T10:00:00Z", "2026-03-02T10:00:00", "2026-03-02t10:00:00z", "", "now", "T",
                   "2026-03-02T10:00:00+24:00", "+275760-09-13T00:00:00Z"]
EDGE_NUMBERS = [0, -1, 1e308, -1e308, 2**63, -(2**63) - 1, 2**64, 10**30, 253402300800, 253402300799,
                221845392000, 1.5, 5e-324, 1e16]
EDGE_ZONES = ["Europe", "Europe/", "America", "posixrules", "localtime", "../etc/passwd", "/etc/localtime",
              "Europe/Berlin", "UTC", "utc", "Etc", "zoneinfo", "\x00", "a" * 300, "Europe/Berlin\n"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), st.sampled_from(EDGE_TIMESTAMPS), st.sampled_from(EDGE_NUMBERS),
                    st.sampled_from(EDGE_ZONES))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def assert_located(exc: PolicyError) -> None:
    assert exc.problems, "a refused set names at least one problem"
    for problem in exc.problems:
        assert problem.code in CODES, problem
        assert problem.location is not None and problem.location.file == FILE, problem
        assert problem.message


def load(text: str | bytes) -> None:
    try:
        load_sources({FILE: text})
    except PolicyError as exc:
        assert_located(exc)


# -- the policy loader --------------------------------------------------------------------------

@FUZZ
@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_a_located_problem(text: str) -> None:
    load(text)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_located_problem(raw: bytes) -> None:
    load(raw)


@FUZZ
@given(json_values)
def test_random_yaml_never_raises_anything_but_a_located_problem(value: Any) -> None:
    load(yaml.safe_dump(value))


YAML_ODDITIES = ["access_ttl: .inf", "access_ttl: .nan", "access_ttl: 1.0e+999", "access_ttl: " + "[" * 200 + "]" * 200, "access_ttl: " + "9" * 5000,
                 "access_ttl: 99999999999999999999d", "access_ttl: -1", "access_ttl: 2026-01-01",
                 "access_ttl: !!binary aGk=", "access_ttl: &a [*a]", "access_ttl: {multiply: .inf}",
                 "access_ttl: {multiply: 1e308}", "access_ttl: {multiply: {expr: '1.0', max: .nan}}",
                 "? [a, b]\n: c", "access_ttl: !!python/object:os.system x", "access_ttl: P99999999999999D"]

BASE_POLICY = {
    "apiVersion": "ttlpolicy/v1", "name": "fuzz", "timezone": "Europe/Berlin",
    "defaults": {"access_ttl": "15m", "refresh_ttl": "8h", "refresh": {"idle_timeout": "8h", "max_session": "30d"}},
    "limits": {"access_ttl": {"min": "1m", "max": "1h"}, "refresh_ttl": {"max": "30d"}},
    "tiers": {"finance": {"access_ttl": "10m", "max_refresh_ttl": "1d"}},
    "zones": {"corporate": ["10.0.0.0/8"]},
    "attributes": {"user.level": {"type": "int", "min": 0, "max": 10}},
    "rules": [
        {"name": "r1", "when": 'device.trust == "unmanaged"', "access_ttl": {"multiply": 0.5, "cap": "30m"}},
        {"name": "r2", "when": "user.risk > 0.5", "access_ttl": {"multiply": {"expr": "1.0 - user.risk", "min": 0.1}},
         "refresh": {"rotation": True}},
        {"name": "r3", "when": 'time.hour < 6 || location.zone == "corporate"', "refresh_ttl": {"floor": "1d"},
         "deny": "nope", "step_up": "mfa"},
    ],
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, prefix + (i,))
    return out


PATHS = _paths(BASE_POLICY)[1:]


@st.composite
def policy_shaped(draw: st.DrawFn) -> str:
    """The base policy with a few leaves or subtrees replaced by random values."""
    document = copy.deepcopy(BASE_POLICY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        target: Any = document
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    text = yaml.safe_dump(document, sort_keys=False)
    if draw(st.booleans()):
        text += draw(st.sampled_from(YAML_ODDITIES)) + "\n"
    return text


@FUZZ
@given(policy_shaped())
def test_policy_shaped_documents_never_raise_anything_but_a_located_problem(text: str) -> None:
    load(text)


@pytest.mark.parametrize("oddity", YAML_ODDITIES)
def test_yaml_oddities_are_located_problems(oddity: str) -> None:
    text = yaml.safe_dump(BASE_POLICY, sort_keys=False).replace("access_ttl: 15m", oddity.replace("\n", "\n  "))
    load(text)


def test_non_finite_numbers_and_huge_durations_are_refused_at_their_line() -> None:
    text = yaml.safe_dump(BASE_POLICY, sort_keys=False)
    for value, code in ((".inf", "yaml-tag"), ("1.0e+999", "yaml-tag"), ("9" * 5000, "yaml-syntax"),
                        ("36501d", "schema")):
        with pytest.raises(PolicyError) as err:
            load_sources({FILE: text.replace("access_ttl: 15m", f"access_ttl: {value}")})
        (problem,) = err.value.problems
        assert problem.code == code
        assert problem.location is not None and problem.location.line == text.splitlines().index(
            "  access_ttl: 15m") + 1


def test_a_product_of_huge_factors_is_bounded_and_never_overflows() -> None:
    policy = {"apiVersion": "ttlpolicy/v1", "name": "big", "defaults": {"access_ttl": "1h", "refresh_ttl": "1d"},
              "rules": [{"name": f"r{i}", "when": "true", "access_ttl": {"multiply": 1e300}} for i in range(3)]}
    decision = load_sources({FILE: yaml.safe_dump(policy)}).decide({}, now="2026-01-01T00:00:00Z")
    assert decision.access_ttl == 36_500 * 86_400  # the longest duration a policy can hold
    assert decision.to_dict()["expires_at"]["access"].startswith("2125-")


@pytest.mark.parametrize("zone", ["Europe", "posixrules", "../../etc/passwd", "America/"])
def test_a_policy_time_zone_that_is_a_directory_or_path_is_a_located_problem(zone: str) -> None:
    text = yaml.safe_dump({**BASE_POLICY, "timezone": zone}, sort_keys=False)
    with pytest.raises(PolicyError) as err:
        load_sources({FILE: text})
    assert [p.code for p in err.value.problems] == ["invalid-timezone"]


# -- the request path ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api() -> Any:
    with client(policies=REPO / "policies") as test_client:
        yield test_client


NAMESPACES = {
    "tier": st.one_of(st.sampled_from(["public", "standard", "finance", "government", "healthcare"]), scalars),
    "device": st.fixed_dictionaries({}, optional={"trust": scalars, "platform": scalars}),
    "location": st.fixed_dictionaries({}, optional={"ip": st.one_of(st.ip_addresses().map(str), scalars),
                                                    "country": scalars, "expected_countries": json_values}),
    "time": st.fixed_dictionaries({}, optional={"zone": st.one_of(st.sampled_from(EDGE_ZONES), scalars)}),
    "user": st.fixed_dictionaries({}, optional={
        "auth_time": st.one_of(st.sampled_from(EDGE_TIMESTAMPS), st.sampled_from(EDGE_NUMBERS), scalars),
        "risk": st.one_of(st.sampled_from(EDGE_NUMBERS), scalars), "mfa": scalars, "groups": json_values}),
    "resource": json_values,
    "token": json_values,
    "client": json_values,
}
contexts = st.one_of(st.fixed_dictionaries({}, optional=NAMESPACES), json_values)
decide_requests = st.fixed_dictionaries({"context": contexts}, optional={
    "now": st.one_of(st.sampled_from(EDGE_TIMESTAMPS), scalars),
    "policy": st.one_of(st.sampled_from(["workforce", "machine", "baseline"]), scalars),
    "explain": scalars,
    "subject_token": st.one_of(st.just("a.b.c"), scalars),
    "extra": scalars,
})


def assert_answered(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == response.status_code and body["code"]


@FUZZ
@given(decide_requests)
def test_decide_never_answers_500(api: Any, request_body: dict[str, Any]) -> None:
    assert_answered(api.post("/v1/decide", json=request_body))


@FUZZ
@given(st.lists(st.one_of(decide_requests, json_values), max_size=5))
def test_batch_never_answers_500(api: Any, items: list[Any]) -> None:
    response = api.post("/v1/decide/batch", json={"requests": items})
    assert_answered(response)
    if response.status_code == 200:
        for result in response.json()["results"]:
            assert result["status"] < 500, result


@FUZZ
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_random_bodies_never_answer_500(api: Any, body: bytes) -> None:
    for path in ("/v1/decide", "/v1/decide/batch"):
        assert_answered(api.post(path, content=body, headers={"content-type": "application/json"}))


@pytest.mark.parametrize("body, path", [
    ({"context": {}, "now": "0001-01-01T00:00:00+01:00"}, "now"),
    ({"context": {}, "now": "9999-12-31T23:59:59Z"}, "now"),
    ({"context": {"time": {"zone": "Europe"}}}, "time.zone"),
    ({"context": {"user": {"auth_time": "9999-12-31T23:59:59Z"}}}, "user.auth_time"),
    ({"context": {"user": {"auth_time": 253402300799}}}, "user.auth_time"),
])
def test_the_reported_instances_are_4xx_problems_naming_the_field(api: Any, body: dict[str, Any], path: str) -> None:
    response = api.post("/v1/decide", json=body)
    assert 400 <= response.status_code < 500
    assert path in [e["path"] for e in response.json()["errors"]]
