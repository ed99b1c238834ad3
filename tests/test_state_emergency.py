"""Emergency ceilings: typed scopes with errors at the column, only-tighten (a property test),
an end that is mandatory, capped and exact, the trace, the API and the metrics."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures.helpers import POLICIES, metric_total
from starlette.testclient import TestClient

from ttlpolicy import load_policies
from ttlpolicy.server import Settings, create_app
from ttlpolicy.state import open_store
from ttlpolicy.state.emergency import EmergencyInputError
from ttlpolicy.state.runtime import StateRuntime
from ttlpolicy.state.tighten import Ceiling, tighten

BUNDLED = load_policies(POLICIES)
FINANCE = {"tier": "finance", "device": {"trust": "managed"}, "user": {"mfa": True}}
PUBLIC = {"tier": "public", "device": {"trust": "managed"}}


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings.model_validate({"policies": POLICIES, "decision_log": {"sink": "off"},
                                        "reload": {"watch": False}, "state": {"url": f"sqlite://{tmp_path}/s.db",
                                                                              "emergency_max_duration": "2d"}})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def start(api: TestClient, **body: Any) -> Any:
    return api.post("/v1/emergencies", json={"scope": 'tier == "finance"', "reason": "INC-42", "duration": "24h",
                                             "access_ttl": "5m", "refresh_ttl": "0s"} | body)


def test_an_emergency_caps_matching_decisions_and_says_so(api: TestClient) -> None:
    created = start(api)
    assert created.status_code == 201, created.text
    emergency = created.json()
    assert emergency["effects"] == "access ≤ 5m, refresh off" and emergency["created_by"] == "anonymous:anonymous"
    decision = api.post("/v1/decide", json={"context": FINANCE}).json()
    assert decision["access_ttl"] == 300 and decision["refresh_ttl"] == 0
    steps = [s for s in decision["trace"] if s["step"] == "emergency"]
    assert [s["source"] for s in steps] == [f"emergency INC-42 until {emergency['ends_at']}: access ≤ 5m",
                                            f"emergency INC-42 until {emergency['ends_at']}: refresh off"]
    assert decision["emergencies"] == [{"id": emergency["id"], "reason": "INC-42", "ends_at": emergency["ends_at"],
                                        "effects": "access ≤ 5m, refresh off"}]
    untouched = api.post("/v1/decide", json={"context": PUBLIC}).json()
    assert "emergencies" not in untouched and untouched["access_ttl"] > 300
    metrics = api.get("/metrics").text
    assert metric_total(metrics, "ttlpolicy_emergency_decisions_total") == 1
    assert metric_total(metrics, "ttlpolicy_emergencies_active") == 1
    listed = api.get("/v1/emergencies").json()["emergencies"]
    assert [e["id"] for e in listed] == [emergency["id"]]
    ended = api.delete(f"/v1/emergencies/{emergency['id']}")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert ended.json()["ended_by"] == "anonymous:anonymous"
    assert api.post("/v1/decide", json={"context": FINANCE}).json()["access_ttl"] > 300
    assert api.get("/v1/emergencies").json()["emergencies"] == []
    assert [e["id"] for e in api.get("/v1/emergencies", params={"status": "ended"}).json()["emergencies"]] == \
        [emergency["id"]]
    assert api.delete("/v1/emergencies/em_missing").status_code == 404


def test_deny_and_step_up(api: TestClient) -> None:
    start(api, access_ttl=None, refresh_ttl=None, step_up="re-authenticate after INC-42")
    decision = api.post("/v1/decide", json={"context": FINANCE}).json()
    assert decision["step_up"] and "emergency INC-42" in decision["step_up_reasons"][-1]
    start(api, access_ttl=None, refresh_ttl=None, deny="finance logins suspended", scope="true")
    denied = api.post("/v1/decide", json={"context": PUBLIC}).json()
    assert not denied["allow"] and denied["access_ttl"] == 0 and "finance logins suspended" in denied["deny_reason"]


@pytest.mark.parametrize("scope, code, column", [
    ('tier == "finanse"', "unknown-tier", 9),
    ('device.trust == "manged"', "cel-enum-value", 17),
    ("tier ==", "cel-syntax", 8),
    ('device.trust == "managed" && user.colour == "red"', "cel-unknown-attribute", 30),
    ("user.risk > 1", "cel-type-mismatch", 1),
    ("user.risk", "cel-not-boolean", 1),
    ("(" * 100 + "user.mfa" + ")" * 100, "cel-too-deep", 26),  # refused, not a RecursionError
])
def test_a_bad_scope_is_422_at_its_column(api: TestClient, scope: str, code: str, column: int) -> None:
    response = start(api, scope=scope)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert (error["path"], error["code"], error["line"], error["column"]) == ("scope", code, 1, column)
    assert api.get("/v1/emergencies", params={"status": "all"}).json()["emergencies"] == []  # nothing stored


@pytest.mark.parametrize("body, path, code", [
    ({"duration": None, "ends_at": "2001-01-01T00:00:00Z"}, "ends_at", "out-of-range"),
    ({"duration": "3d"}, "duration", "out-of-range"),
    ({"duration": None}, "ends_at", "missing-field"),
    ({"ends_at": "2999-01-01T00:00:00Z"}, "ends_at", "missing-field"),  # both given
    ({"duration": "soon"}, "duration", "invalid-field"),
    ({"access_ttl": None, "refresh_ttl": None}, "", "missing-field"),
    ({"access_ttl": "-5m"}, "access_ttl", "invalid-field"),
    ({"reason": ""}, "reason", "missing-field"),
    ({"policies": ["nope"]}, "policies", "unknown-policy"),
    ({"colour": "red"}, "colour", "unknown-field"),
    ({"scope": "x" * 3000}, "scope", "too-long"),
])
def test_bad_emergencies_are_422_and_store_nothing(api: TestClient, body: dict[str, Any], path: str, code: str) -> None:
    response = start(api, **body)
    assert response.status_code == 422, response.text
    assert any(e["path"] == path and e["code"] == code for e in response.json()["errors"]), response.json()
    assert api.get("/v1/emergencies", params={"status": "all"}).json()["emergencies"] == []


def test_an_emergency_ends_by_itself_at_the_exact_time(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"), clock=clock)
    emergency = runtime.emergencies.prepare({"scope": 'tier == "finance"', "reason": "INC-1", "duration": "1h",
                                             "access_ttl": "5m"}, BUNDLED, "test", clock.now)
    runtime.emergencies.start(emergency, clock.now)
    at = datetime.fromtimestamp(clock.now, timezone.utc)
    clock.now += 3599.999
    assert runtime.decide(BUNDLED, FINANCE, now=at).access_ttl == 300
    clock.now = emergency.ends_at
    after = runtime.decide(BUNDLED, FINANCE, now=at)
    assert after.access_ttl > 300 and "emergencies" not in after.extra
    runtime.close()


def test_a_scope_that_a_reloaded_policy_no_longer_accepts_still_applies(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"), clock=clock)
    emergency = runtime.emergencies.prepare({"scope": 'device.trust == "managed"', "reason": "INC-2",
                                             "duration": "1h", "access_ttl": "1m"}, BUNDLED, "test", clock.now)
    runtime.emergencies.start(emergency, clock.now)
    from ttlpolicy import load_sources

    narrower = load_sources({"p.yaml": "apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\n"
                                       "attributes:\n  device.trust: {type: string, values: [corp, byod]}\n"})
    decision = runtime.decide(narrower, {"device": {"trust": "byod"}})
    assert decision.access_ttl == 60
    assert "applied to be safe" in [s for s in decision.trace if s.step == "emergency"][0].source
    runtime.close()


ceilings = st.builds(Ceiling, step=st.sampled_from(["emergency", "rate_limit", "degraded"]),
                     source=st.text(min_size=1, max_size=8),
                     access_ttl=st.one_of(st.none(), st.integers(0, 10**7)),
                     refresh_ttl=st.one_of(st.none(), st.integers(0, 10**7)),
                     deny=st.one_of(st.none(), st.just("no")), step_up=st.one_of(st.none(), st.just("mfa")))
contexts = st.fixed_dictionaries({
    "tier": st.sampled_from(["public", "standard", "healthcare", "finance", "government"]),
    "device": st.fixed_dictionaries({"trust": st.sampled_from(["managed", "compliant", "known", "unmanaged"])}),
    "user": st.fixed_dictionaries({"mfa": st.booleans(), "risk": st.floats(0, 1)}),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context=contexts, applied=st.lists(ceilings, max_size=4))
def test_no_ceiling_ever_lengthens_any_decision(context: dict[str, Any], applied: list[Ceiling]) -> None:
    before = BUNDLED.decide(context, now="2026-03-02T10:00:00Z")
    after = tighten(before, applied)
    assert after.access_ttl <= before.access_ttl and after.refresh_ttl <= before.refresh_ttl
    assert after.allow <= before.allow and after.step_up >= before.step_up
    assert tighten(before, list(reversed(applied))).to_dict() == after.to_dict()  # order never matters
    assert len(after.trace) >= len(before.trace)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(context=contexts, access=st.one_of(st.none(), st.sampled_from(["0s", "1m", "5m", "90d"])),
       refresh=st.one_of(st.none(), st.sampled_from(["0s", "1h", "400d"])),
       scope=st.sampled_from(["true", 'tier == "finance"', "user.risk > 0.5", "user.mfa"]))
def test_no_emergency_ever_lengthens_any_decision(tmp_path_factory: pytest.TempPathFactory, context: dict[str, Any],
                                                  access: str | None, refresh: str | None, scope: str) -> None:
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path_factory.mktemp('p')}/s.db"))
    body: dict[str, Any] = {"scope": scope, "reason": "P", "duration": "1h", "access_ttl": access,
                            "refresh_ttl": refresh, "step_up": None if access or refresh else "why"}
    runtime.emergencies.start(runtime.emergencies.prepare(body, BUNDLED, "t", time.time()), time.time())
    before = BUNDLED.decide(context)
    after = runtime.decide(BUNDLED, context, now=before.issued_at)
    assert after.access_ttl <= before.access_ttl and after.refresh_ttl <= before.refresh_ttl
    assert after.allow <= before.allow
    runtime.close()


def test_prepare_lists_every_problem_at_once(tmp_path: Path) -> None:
    runtime = StateRuntime(open_store(f"sqlite://{tmp_path}/s.db"))
    with pytest.raises(EmergencyInputError) as info:
        runtime.emergencies.prepare({"scope": "tier ==", "reason": ""}, BUNDLED, "t", time.time())
    assert {e.path for e in info.value.errors} >= {"scope", "reason", "ends_at", ""}
    runtime.close()


def test_emergency_visible_from_a_second_runtime_on_the_same_store(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/s.db"
    first, second = StateRuntime(open_store(url), poll_interval=0.05), StateRuntime(open_store(url),
                                                                                      poll_interval=0.05)
    second.start()
    now = time.time()
    first.emergencies.start(first.emergencies.prepare({"scope": "true", "reason": "X", "duration": "1h",
                                                       "access_ttl": "1m"}, BUNDLED, "t", now), now)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not second.emergencies.live(time.time()):
        time.sleep(0.01)
    assert second.decide(BUNDLED, PUBLIC).access_ttl == 60
    first.close()
    second.close()

