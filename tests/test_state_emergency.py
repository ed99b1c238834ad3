"""Emergency ceilings: typed scopes with errors at the column, only-tighten (a property test),
an end that is mandatory, capped and exact, the trace, the API and the metrics."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fixtures.helpers import POLICIES, metric_total
from starlette.testclient import TestClient

from ttlpolicy import load_policies, load_sources
from ttlpolicy.server import Settings, create_app
from ttlpolicy.state import emergency as emergency_module
from ttlpolicy.state import open_store
from ttlpolicy.state.conditions import compile_condition, holds
from ttlpolicy.state.sqlite import SQLiteStore
from ttlpolicy.state.emergency import (MAX_EMERGENCIES, MAX_REASON, MAX_SCOPE, Emergencies, Emergency,
                                       EmergencyInputError, emergencies_in)
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
    with pytest.raises(EmergencyInputError) as info:
        runtime.emergencies.prepare({"scope": "true", "reason": " ", "duration": "0s", "deny": "d"}, BUNDLED, "t", 0)
    assert str(info.value) == ("reason: required: the incident id or why; "
                               "duration: must be above 0s and at most 7d (state.emergency_max_duration)")
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



# -- the rules of one emergency, at their exact edges ----------------------------------------------

T0 = 1_800_000_000.0
DAY = 86400.0
ONE = Emergency(id="em_1", scope="true", policies=None, access_ttl=300, refresh_ttl=None, deny=None, step_up=None,
                reason="INC-7", created_by="t", starts_at=T0, ends_at=T0 + 3600)


def test_an_emergency_applies_from_its_start_until_just_before_its_end() -> None:
    assert [ONE.live(T0 + d) for d in (-0.001, 0, 3599.999, 3600)] == [False, True, True, False]
    assert not replace(ONE, ended_at=T0 + 10).live(T0 + 5)  # ended early: over at once
    assert emergencies_in([ONE, replace(ONE, id="em_2", starts_at=T0 + 60)], T0 + 30) == 1


def test_what_an_emergency_does_is_said_in_words() -> None:
    every = replace(ONE, access_ttl=300, refresh_ttl=3600, deny="logins suspended", step_up="re-authenticate")
    assert every.effects() == "access ≤ 5m, refresh ≤ 1h, deny (logins suspended), step-up (re-authenticate)"
    assert replace(ONE, access_ttl=None, refresh_ttl=0).effects() == "refresh off"
    assert replace(ONE, access_ttl=0).effects() == "access ≤ 0s"
    assert ONE.label() == "emergency INC-7 until 2027-01-15T09:00:00Z"


@pytest.mark.parametrize("emergency", [ONE, replace(ONE, policies=("machine",), refresh_ttl=0, deny="d", step_up="s",
                                                   ended_at=T0 + 1.5, ended_by="admin")])
def test_an_emergency_is_stored_and_read_back_whole(emergency: Emergency) -> None:
    assert Emergency.from_record(emergency.id, emergency.to_record()) == emergency
    assert Emergency.from_record("em_1", {k: v for k, v in ONE.to_record().items() if k != "created_by"}) == \
        replace(ONE, created_by="")


def test_an_emergency_as_json_says_whether_it_is_still_active() -> None:
    shown = replace(ONE, policies=("machine",)).to_dict(T0)
    assert shown == {"id": "em_1", "scope": "true", "policies": ["machine"], "access_ttl": 300, "refresh_ttl": None,
                     "deny": None, "step_up": None, "reason": "INC-7", "created_by": "t",
                     "starts_at": "2027-01-15T08:00:00Z", "ends_at": "2027-01-15T09:00:00Z", "ended_at": None,
                     "ended_by": None, "status": "active", "effects": "access ≤ 5m"}
    assert ONE.to_dict(T0)["policies"] is None
    assert ONE.to_dict(T0 + 3600)["status"] == "ended"
    ended = replace(ONE, ended_at=T0 + 1.5, ended_by="admin").to_dict(T0 + 2)
    assert (ended["status"], ended["ended_at"], ended["ended_by"]) == ("ended", "2027-01-15T08:00:01.500Z", "admin")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Emergencies]:
    store = open_store(f"sqlite://{tmp_path}/s.db")
    yield Emergencies(store, max_duration=2 * DAY)
    store.close()


def problems(registry: Emergencies, **body: Any) -> list[tuple[str, str, str]]:
    """The (path, code, message) of every problem of a start request (``None`` drops a field)."""
    full = {"scope": 'tier == "finance"', "reason": "INC-42", "duration": "1h", "access_ttl": "5m"} | body
    try:
        registry.prepare({k: v for k, v in full.items() if v is not None}, BUNDLED, "t", T0)
    except EmergencyInputError as exc:
        return [(e.path, e.code, e.message) for e in exc.errors]
    return []


CAP = "at most 2d (state.emergency_max_duration)"


@pytest.mark.parametrize("body, expected", [
    ({"scope": 'user.id == "' + "a" * (MAX_SCOPE - 13) + '"'}, []),
    ({"scope": 'user.id == "' + "a" * (MAX_SCOPE - 12) + '"'}, [("scope", "too-long", "longer than 2000 characters")]),
    ({"scope": "  "}, [("scope", "missing-field",
                        'required: a CEL condition such as tier == "finance" (or "true" for every request)')]),
    ({"scope": 7}, [("scope", "missing-field",
                     'required: a CEL condition such as tier == "finance" (or "true" for every request)')]),
    ({"reason": "r" * MAX_REASON}, []),
    ({"reason": "r" * (MAX_REASON + 1)}, [("reason", "too-long", "longer than 500 characters")]),
    ({"reason": 42}, [("reason", "missing-field", "required: the incident id or why")]),
    ({"policies": "workforce"}, [("policies", "invalid-field", "expected a list of policy names")]),
    ({"policies": []}, [("policies", "invalid-field", "expected a list of policy names")]),
    ({"policies": ["workforce", 3]}, [("policies", "invalid-field", "expected a list of policy names")]),
    ({"policies": ["workforce", "nope"]},
     [("policies", "unknown-policy", "no policy 'nope' (known: machine, workforce)")]),
    ({"access_ttl": "-5m"}, [("access_ttl", "invalid-field", "not a duration: '-5m' (write e.g. 90s, 15m, 1h30m, "
                                                              "14d or PT15M)")]),
    ({"refresh_ttl": "soon"}, [("refresh_ttl", "invalid-field", "not a duration: 'soon' (write e.g. 90s, 15m, 1h30m, "
                                                                "14d or PT15M)")]),
    ({"deny": ""}, [("deny", "invalid-field", "expected a reason (text)")]),
    ({"deny": 5}, [("deny", "invalid-field", "expected a reason (text)")]),
    ({"step_up": "s" * MAX_REASON}, []),
    ({"step_up": "s" * (MAX_REASON + 1)}, [("step_up", "invalid-field", "expected a reason (text)")]),
    ({"access_ttl": None, "deny": "suspended"}, []), ({"access_ttl": None, "refresh_ttl": "0s"}, []),
    ({"access_ttl": None, "step_up": "re-authenticate"}, []),
    ({"access_ttl": None},
     [("", "missing-field", "an emergency needs an effect: access_ttl, refresh_ttl, deny or step_up")]),
    ({"duration": "2d"}, []), ({"duration": "1s"}, []),
    ({"duration": "2d1s"}, [("duration", "out-of-range", f"must be above 0s and {CAP}")]),
    ({"duration": "0s"}, [("duration", "out-of-range", f"must be above 0s and {CAP}")]),
    ({"duration": None},
     [("ends_at", "missing-field", f"give exactly one of ends_at or duration: an emergency must end, {CAP} from now")]),
    ({"duration": None, "ends_at": "2027-01-17T08:00:00Z"}, []),  # exactly the cap
    ({"duration": None, "ends_at": "2027-01-17T08:00:01Z"}, [("ends_at", "out-of-range", f"is too far ahead: {CAP}")]),
    ({"duration": None, "ends_at": "2027-01-15T08:00:00Z"}, [("ends_at", "out-of-range", "is in the past")]),
    ({"duration": None, "ends_at": "tomorrow"},
     [("ends_at", "invalid-field", "'tomorrow' is not an RFC 3339 timestamp")]),
    ({"zeta": 1, "alpha": 2},
     [("alpha", "unknown-field", "unknown field"), ("zeta", "unknown-field", "unknown field")]),
])
def test_each_problem_of_a_start_request_at_its_exact_edge(registry: Emergencies, body: dict[str, Any],
                                                          expected: list[tuple[str, str, str]]) -> None:
    assert problems(registry, **body) == expected


def test_a_valid_request_becomes_exactly_the_emergency_asked_for(registry: Emergencies) -> None:
    emergency = registry.prepare({"scope": "true", "reason": "  INC-9 ", "duration": "90m", "access_ttl": "5m",
                                  "refresh_ttl": "0s", "policies": ["machine"], "step_up": "why"}, BUNDLED, "me", T0)
    assert emergency.id.startswith("em_") and len(emergency.id) == 19
    assert replace(emergency, id="x") == Emergency(
        id="x", scope="true", policies=("machine",), access_ttl=300, refresh_ttl=0, deny=None, step_up="why",
        reason="INC-9", created_by="me", starts_at=T0, ends_at=T0 + 5400)
    assert registry.prepare({"scope": "true", "reason": "R", "ends_at": "2027-01-15T09:00:00Z", "deny": "d"},
                            BUNDLED, "me", T0).ends_at == T0 + 3600


def test_a_scope_mistake_is_reported_once_with_the_policies_it_breaks(registry: Emergencies) -> None:
    assert problems(registry, scope='user.colour == "red"') == [
        ("scope", "cel-unknown-attribute", problems(registry, scope='user.colour == "red"', policies=["machine"])[0][2]
         .replace("(policies: machine)", "(policies: machine, workforce)"))]
    found = problems(registry, scope='user.id.matches("[")')  # refused by the compiler, after the type checker
    assert [(path, code) for path, code, _ in found] == [("scope", "cel-unsupported")]
    assert found[0][2].startswith("invalid regex (RE2 syntax)")


def test_at_most_a_thousand_emergencies_are_live(registry: Emergencies) -> None:
    records = [(f"em_{i}", replace(ONE, id=f"em_{i}").to_record()) for i in range(MAX_EMERGENCIES - 1)]
    registry.collection.write(records)
    registry.sync(T0)
    assert problems(registry) == []
    registry.start(registry.prepare({"scope": "true", "reason": "last", "duration": "1h", "deny": "d"}, BUNDLED, "t",
                                    T0), T0)
    assert problems(registry) == [("", "too-many-items", "1000 emergencies are live")]


def matched(registry: Emergencies, policy: str, context: dict[str, Any],
            now: float = T0) -> list[tuple[str, str | None]]:
    compiled = BUNDLED.get(policy)
    activation = compiled.context.activation(context, datetime.fromtimestamp(now, timezone.utc))
    return [(m.emergency.reason, m.error) for m in registry.matching(compiled, activation, now)]


def test_an_emergency_applies_where_its_scope_holds_and_where_it_cannot_be_told(registry: Emergencies) -> None:
    def begin(scope: str, reason: str, minutes: int = 60, **more: Any) -> None:
        body = {"scope": scope, "reason": reason, "duration": f"{minutes}m", "access_ttl": "1m"} | more
        # ids in the order begun: the store lists them in that order, so the first is looked at first
        registry.start(replace(registry.prepare(body, BUNDLED, "t", T0), id=f"em_{len(registry.all())}"), T0)

    assert matched(registry, "workforce", FINANCE) == []
    begin("true", "machines only", 20, policies=["machine"])
    begin('tier == "finance"', "finance", 50)
    begin('tier == "public"', "public")
    begin('{"a": 1, "b": "x"}["a"]', "not-a-bool", 40)  # type-checks (dyn), evaluates to 1: cannot be told
    begin("[1, 2][5] == 1", "errs", 30)
    assert matched(registry, "workforce", FINANCE) == [
        ("errs", "the scope could not be evaluated for this context"),
        ("not-a-bool", "the scope could not be evaluated for this context"), ("finance", None)]  # by end
    assert [r for r, _ in matched(registry, "machine", FINANCE)] == ["machines only", "errs", "not-a-bool", "finance"]
    assert matched(registry, "workforce", FINANCE, T0 + 45 * 60) == [("finance", None)]  # the others have ended
    assert matched(registry, "workforce", FINANCE, T0 + 3600) == []


def test_a_scope_that_does_not_fit_a_policy_applies_and_says_why(registry: Emergencies) -> None:
    narrower = load_sources({"p.yaml": "apiVersion: ttlpolicy/v1\nname: p\n"
                                       "defaults: {access_ttl: 1h, refresh_ttl: 1d}\n"
                                       "attributes:\n  device.trust: {type: string, values: [corp, byod]}\n"}).get()
    for number, (scope, reason) in enumerate((('device.trust == "managed" || device.trust == "known"', "misfit"),
                                              ("true", "fits"))):  # the misfit is looked at first
        body = {"scope": scope, "reason": reason, "duration": "1h", "access_ttl": "1m"}
        registry.start(replace(registry.prepare(body, BUNDLED, "t", T0), id=f"em_{number}"), T0)
    activation = narrower.context.activation({}, datetime.fromtimestamp(T0, timezone.utc))
    found = {m.emergency.reason: m.error for m in registry.matching(narrower, activation, T0)}
    assert found == {"fits": None, "misfit": "the scope does not fit policy p: "
                     '"managed" is not a value of device.trust (allowed: corp, byod); '
                     '"known" is not a value of device.trust (allowed: corp, byod)'}


def test_a_scope_is_compiled_once_per_policy_and_the_cache_stays_bounded(registry: Emergencies,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    registry.start(registry.prepare({"scope": 'tier == "finance"', "reason": "R", "duration": "1h",
                                     "access_ttl": "1m"}, BUNDLED, "t", T0), T0)
    compiled: list[str] = []
    original = emergency_module.compile_condition
    monkeypatch.setattr(emergency_module, "compile_condition",
                        lambda text, attributes: compiled.append(text) or original(text, attributes))
    for _ in range(3):
        assert matched(registry, "workforce", FINANCE) == [("R", None)]
    assert compiled == ['tier == "finance"']
    registry._programs = {(str(i), "digest"): "x" for i in range(4 * MAX_EMERGENCIES)}
    matched(registry, "machine", FINANCE)
    assert len(registry._programs) == 4 * MAX_EMERGENCIES + 1  # at the bound: kept
    matched(registry, "workforce", FINANCE)
    assert len(registry._programs) == 1  # past it: emptied, then the new entry


def test_listing_ending_and_the_audit_trail(registry: Emergencies, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ttlpolicy.audit")
    first = registry.start(registry.prepare({"scope": "true", "reason": "A", "duration": "1h", "access_ttl": "1m"},
                                            BUNDLED, "alice", T0), T0)
    second = registry.start(registry.prepare({"scope": "true", "reason": "B", "duration": "2h", "deny": "no"},
                                             BUNDLED, "bob", T0 + 60), T0 + 60)
    assert caplog.messages[0] == "emergency A until 2027-01-15T09:00:00Z started by alice: scope true, access ≤ 1m"
    assert [e.reason for e in registry.listing(T0 + 120)] == ["B", "A"]  # the newest first
    assert registry.get(first.id) == first and registry.get("em_missing") is None
    ended = registry.end(first.id, by="carol", now=T0 + 600)
    assert ended == replace(first, ended_at=T0 + 600, ended_by="carol")
    assert caplog.messages[-1] == "emergency A until 2027-01-15T09:00:00Z ended early by carol"
    assert registry.end(first.id, by="dave", now=T0 + 700) == ended  # already over: unchanged
    assert registry.end("em_missing", by="dave", now=T0 + 700) is None
    assert [e.reason for e in registry.listing(T0 + 800)] == ["B"]
    assert [e.reason for e in registry.listing(T0 + 800, "ended")] == ["A"]
    assert [e.reason for e in registry.listing(T0 + 800, "all")] == ["B", "A"]
    assert registry.live(T0 + 800) == [second]


def test_sync_reads_the_store_only_when_it_changed_and_forgets_long_ended_emergencies(registry: Emergencies) -> None:
    def begin(reason: str, now: float) -> Emergency:
        return registry.start(registry.prepare({"scope": "true", "reason": reason, "duration": "1h", "deny": "d"},
                                               BUNDLED, "t", now), now)

    assert registry.sync(T0) is False and registry.live(T0) == []  # nothing was ever written
    first = begin("A", T0)
    assert registry.sync(T0 + 1) is False
    other = Emergencies(registry.collection.store, max_duration=2 * DAY)
    assert other.listing(T0) == [first]  # listing reads the store: another replica's emergency at once
    assert other.sync(T0) is False and other.live(T0) == [first]
    begin("B", first.ends_at + 2 * DAY - 1)
    assert registry.get(first.id) == first  # ended, still listable for emergency_max_duration
    begin("C", first.ends_at + 2 * DAY)
    assert registry.get(first.id) is None  # then the next change forgets it
    assert other.sync(first.ends_at + 2 * DAY) is True and sorted(e.reason for e in other.all()) == ["B", "C"]
    assert [e.reason for e in other.listing(first.ends_at + 2 * DAY, "all")] == ["C", "B"]


def test_the_store_keeps_emergencies_while_they_can_be_listed_and_gets_back_live_ones_it_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store_clock = Clock(T0)
    registry = Emergencies(SQLiteStore(tmp_path / "s.db", clock=store_clock), max_duration=2 * DAY)
    longest = registry.start(registry.prepare({"scope": "true", "reason": "long", "duration": "2d", "deny": "d"},
                                              BUNDLED, "t", T0), T0)
    short = registry.start(registry.prepare({"scope": "true", "reason": "short", "duration": "1h", "deny": "d"},
                                            BUNDLED, "t", T0), T0)
    kept_until = T0 + 2 * DAY + 2 * DAY + DAY  # the longest emergency, listable as long again, and a day to spare
    store_clock.now = kept_until - 1
    assert registry.get(longest.id) == longest
    store_clock.now = kept_until  # the store forgets the collection (as a Redis restarted without persistence)
    assert registry.get(longest.id) is None and registry.get(short.id) is None
    caplog.set_level("WARNING", logger="ttlpolicy.audit")
    assert registry.sync(T0 + 7200) is True  # "long" is still live there, "short" is over
    assert caplog.messages == ["the state store lost 1 live emergency(ies); restoring them from memory"]
    assert registry.get(longest.id) == longest and registry.get(short.id) is None


# -- the CEL of the state layer ---------------------------------------------------------------------

WORKFORCE = BUNDLED.get("workforce").attributes


@pytest.mark.parametrize("text, expect, issue", [
    ("user.mfa", "bool", None),
    ('{"a": 1, "b": "x"}["a"]', "bool", None),  # dyn: decided at run time (and not a bool there: cannot be told)
    ("user.risk", "bool", ("cel-not-boolean", "a condition must be bool, but this is double", 1, 1)),
    ("tier", "bool", ("cel-not-boolean", "a condition must be bool, but this is string", 1, 1)),
    ("tier", "key", None), ("time.hour", "key", None), ("user.mfa", "key", None),
    ("[1, 2][0]", "key", None), ("uint(time.hour)", "key", None), ('{"a": 1, "b": "x"}["a"]', "key", None),
    ("user.risk", "key", ("cel-type-mismatch", "a key must be a string, an int or a bool, but this is double", 1, 1)),
    ("user.groups", "key", ("cel-type-mismatch",
                            "a key must be a string, an int or a bool, but this is list(string)", 1, 1)),
    ("tier ==", "bool", ("cel-syntax", None, 1, 8)),
    ('user.id.matches("[")', "key", ("cel-unsupported", "invalid regex (RE2 syntax): missing ]: [", 1, 17)),
])
def test_state_conditions_are_typed_like_rule_conditions(text: str, expect: str,
                                                         issue: tuple[str, str | None, int, int] | None) -> None:
    program, issues = compile_condition(text, WORKFORCE, expect)
    if issue is None:
        assert program is not None and issues == []
    else:
        assert program is None and len(issues) == 1
        found = issues[0]
        assert (found.code, found.message if issue[1] else None, found.line, found.column) == issue


def test_a_condition_that_fails_or_is_not_a_bool_cannot_be_told() -> None:
    def fails(activation: Any) -> bool:
        raise ZeroDivisionError

    assert holds(lambda a: True, {}) is True and holds(lambda a: False, {}) is False
    assert holds(fails, {}) is None and holds(lambda a: 1, {}) is None and holds(lambda a: "true", {}) is None
