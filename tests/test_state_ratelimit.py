"""Rate limits in the policy language: compiled at load, counted only by the state runtime."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from ttlpolicy import load_sources
from ttlpolicy.model import RateLimit
from ttlpolicy.state import open_store
from ttlpolicy.state.ratelimit import (canonical_ip, compile_rate_limits, hashed_key, key_digest, parse_rate,
                                       store_key)
from ttlpolicy.state.runtime import StateRuntime
from ttlpolicy.state.store import Window
from ttlpolicy.vocabulary import BUILTIN

POLICY = """\
apiVersion: ttlpolicy/v1
name: rl
defaults: {access_ttl: 15m, refresh_ttl: 8h}
rate_limits:
  - name: refresh-per-user
    description: A runaway client or a stolen refresh token.
    when: grant.type == "refresh_token"
    key: user
    rate: [3 per 1m, 5 per 1h]
    on_exceed: {deny: too many refresh attempts}
  - name: per-ip
    key: [ip, caller]
    rate: 4 per 10m
    on_exceed: {step_up: unusual request rate, access_ttl: 5m, refresh_ttl: 0s}
"""
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def policies():  # type: ignore[no-untyped-def]
    return load_sources({"rl.yaml": POLICY})


@pytest.fixture(params=["sqlite", "redis"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateRuntime]:
    url = f"sqlite://{tmp_path}/state.db" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    state = StateRuntime(open_store(url))
    yield state
    state.close()


def refresh(user: str = "alice", ip: str = "192.0.2.1") -> dict[str, object]:
    return {"grant": {"type": "refresh_token"}, "user": {"id": user}, "location": {"ip": ip}}


def test_counts_exactly_at_the_window_edges(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    for seconds in (0, 10, 20):
        assert runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=seconds)).allow
    refused = runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=59.5))
    assert not refused.allow and refused.access_ttl == 0 and refused.refresh_ttl == 0
    out = refused.to_dict()
    assert out["retry_after"] == 1  # the event at T0 leaves the 1m window at T0+60s: 0.5s, rounded up
    entry = next(e for e in out["rate_limits"] if e["name"] == "refresh-per-user")
    assert entry == {"name": "refresh-per-user", "key": entry["key"], "rate": ["3 per 1m", "5 per 1h"],
                     "counts": [3, 3], "exceeded": True, "retry_after": 1}
    assert entry["key"].startswith("sha256:") and "alice" not in str(out)
    assert out["deny_reason"].startswith("rate limit refresh-per-user (3 per 1m, 5 per 1h; retry after 1s)")
    steps = [s for s in out["trace"] if s["step"] == "deny"]
    assert steps and "rate limit refresh-per-user" in steps[0]["source"]
    # At exactly T0 + 60s the first event no longer counts.
    assert runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=60)).allow


def test_several_windows_and_separate_keys(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    allowed = [runtime.decide(policies, refresh(), now=T0 + timedelta(minutes=m)).allow for m in range(7)]
    assert allowed == [True] * 5 + [False] * 2  # the hour's 5 are used up although each minute has room
    later = runtime.decide(policies, refresh(), now=T0 + timedelta(minutes=7))
    assert later.to_dict()["retry_after"] == 53 * 60  # the 5th-oldest (T0) leaves the hour at T0 + 60m
    assert runtime.decide(policies, refresh("bob"), now=T0 + timedelta(minutes=7)).allow  # another user


def test_step_up_and_ceilings_on_exceed(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    context = {"grant": {"type": "authorization_code"}, "location": {"ip": "198.51.100.7"}}
    for i in range(4):
        decision = runtime.decide(policies, context, now=T0 + timedelta(seconds=i), caller="issuer-a")
        assert decision.allow and not decision.step_up and decision.access_ttl == 900
    over = runtime.decide(policies, context, now=T0 + timedelta(seconds=5), caller="issuer-a")
    assert over.allow and over.step_up and over.access_ttl == 300 and over.refresh_ttl == 0
    assert any(r.startswith("rate limit per-ip") for r in over.step_up_reasons)
    trace = {(s.target, s.step): s for s in over.trace}
    assert trace[("access_ttl", "rate_limit")].result == 300
    assert trace[("refresh_ttl", "rate_limit")].source.endswith("refresh off")
    # The key includes the caller: another API caller from the same IP has its own count.
    assert not runtime.decide(policies, context, now=T0 + timedelta(seconds=5), caller="issuer-b").step_up


def test_a_missing_key_attribute_still_counts(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    context = {"grant": {"type": "refresh_token"}}  # no user.id: counted under <unknown>, never skipped
    results = [runtime.decide(policies, context, now=T0 + timedelta(seconds=i)).allow for i in range(4)]
    assert results == [True, True, True, False]


def test_reading_state_without_consuming(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    for i in range(10):
        assert runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=i), consume=False).allow
    assert runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=11)).allow


def test_the_library_test_and_diff_never_consume(policies, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """PolicySet.decide is pure: the same request a thousand times gives the same decision."""
    first = policies.decide(refresh(), now=T0).to_dict()
    for _ in range(50):
        assert policies.decide(refresh(), now=T0).to_dict() == first
    assert "rate_limits" not in first
    # `ttlpolicy test` and `diff` run on PolicySet.decide; a test expecting allow after 50 runs passes.
    (tmp_path / "rl.yaml").write_text(POLICY)
    tests = tmp_path / "tests"
    tests.mkdir()
    cases = "\n".join(f"""  - name: refresh {i}
    context: {{grant: {{type: refresh_token}}, user: {{id: alice}}}}
    expect: {{allow: true, access_ttl: 15m}}""" for i in range(10))
    (tests / "rl.yaml").write_text(f'policy: rl\nnow: "2026-12-01T12:00:00Z"\ncases:\n{cases}\n')
    from ttlpolicy.cli.main import main

    assert main(["test", str(tests), "--policies", str(tmp_path)]) == 0
    assert main(["diff", str(tmp_path), str(tmp_path)]) == 0


def test_rate_limit_changes_the_digest_and_a_policy_without_keeps_its_digest() -> None:
    plain = POLICY.split("rate_limits:")[0]
    with_limits = load_sources({"rl.yaml": POLICY}).get().digest
    without = load_sources({"rl.yaml": plain}).get().digest
    assert with_limits != without
    assert load_sources({"rl.yaml": plain + "rate_limits: []\n"}).get().digest == without


def test_rate_limits_are_inherited_from_a_base() -> None:
    base = POLICY.replace("name: rl\n", "name: base\nabstract: true\n")
    child = "apiVersion: ttlpolicy/v1\nname: child\nextends: [base]\n"
    policies = load_sources({"base.yaml": base, "child.yaml": child})
    assert [limit.name for limit in policies.rate_limits["child"]] == ["per-ip", "refresh-per-user"]


def test_the_decision_api_limits_its_callers(tmp_path: Path) -> None:
    from server_fixtures.helpers import POLICIES, metric_total
    from starlette.testclient import TestClient

    from ttlpolicy.server import Settings, create_app
    from ttlpolicy.server.auth import hash_key

    keys = [{"name": "issuer", "hash": hash_key("issuer-key"), "scopes": ["decide"]},
            {"name": "bulk", "hash": hash_key("bulk-key"), "scopes": ["decide"]}]
    settings = Settings.model_validate({
        "policies": POLICIES, "decision_log": {"sink": "off"}, "reload": {"watch": False}, "auth": {"api_keys": keys},
        "state": {"url": f"sqlite://{tmp_path}/s.db", "callers": {"rate": "3 per 1m", "keys": {"bulk": "1 per 1h"}}}})
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        issuer, bulk = {"x-api-key": "issuer-key"}, {"x-api-key": "bulk-key"}
        assert [api.post("/v1/decide", json={"context": {}}, headers=issuer).status_code for _ in range(3)] == [200] * 3
        refused = api.post("/v1/decide", json={"context": {}}, headers=issuer)
        assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 and refused.json()["code"] == "rate-limited"
        batch = api.post("/v1/decide/batch", json={"requests": [{"context": {}}]}, headers=issuer)
        assert batch.status_code == 429
        assert api.post("/v1/decide", json={"context": {}}, headers=bulk).status_code == 200  # its own rate
        assert api.post("/v1/decide", json={"context": {}}, headers=bulk).headers["retry-after"] == "3600"
        assert api.get("/v1/policies", headers=issuer).status_code == 200  # only decisions are limited
        assert metric_total(api.get("/metrics").text, "ttlpolicy_api_caller_rate_limited_total") == 3


def test_decide_cli_counts_only_with_state_and_never_on_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  ) -> None:
    import json

    from ttlpolicy.cli.main import main

    (tmp_path / "rl.yaml").write_text(POLICY)
    (tmp_path / "ctx.json").write_text(json.dumps(refresh()))
    base = ["decide", "--policies", str(tmp_path), "--context", str(tmp_path / "ctx.json"),
            "--now", "2026-12-01T12:00:00Z"]
    state = ["--state", f"sqlite://{tmp_path}/state.db"]

    def allowed(*extra: str) -> bool:
        assert main([*base, *extra]) == 0
        return bool(json.loads(capsys.readouterr().out)["allow"])

    assert all(allowed() for _ in range(5))  # no state: nothing is counted
    assert all(allowed(*state, "--dry-run") for _ in range(5))
    assert [allowed(*state) for _ in range(4)] == [True, True, True, False]
    assert main([*base, "--dry-run"]) == 2


def test_a_key_read_as_sent_is_the_key_the_activation_gives(policies) -> None:  # type: ignore[no-untyped-def]
    """A key part that is a string attribute (user, client, IP) is read from the validated context
    without building the activation again; it must be exactly the activation's value, or a limit
    could be dodged by sending a key another way."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from contexts import workforce_contexts

    from ttlpolicy.policyset import resolve_now

    limits = {limit.name: limit for limit in policies.rate_limits["rl"]}
    assert [p.path for p in limits["refresh-per-user"].key] == [("user", "id")]
    assert [p.path for p in limits["per-ip"].key] == [("location", "ip"), None]  # caller: who called
    assert limits["refresh-per-user"].needs_activation  # its `when` is an expression
    compiled = policies.get("rl")
    contexts = [c for c, _ in workforce_contexts(300, seed=5)] + [
        {}, {"user": {}}, {"user": {"id": None}}, {"user": {"id": "Ünïcødé 名前"}}, {"user": {"id": ""}},
        {"location": {"ip": "2001:DB8::1"}}, {"location": {"ip": "::ffff:192.0.2.1"}}]
    for context in contexts:
        keep = {"user": "id", "location": "ip", "grant": "type"}  # what the test policy declares
        context = {ns: {f: v for f, v in context[ns].items() if f == keep[ns]} for ns in keep if ns in context}
        activation = compiled.context.activation(context, resolve_now("2026-12-01T12:00:00Z"))
        for limit in limits.values():
            assert limit.key_values(activation, "api_key:x", context) == limit.key_values(activation, "api_key:x")


def test_one_address_written_several_ways_is_one_key(runtime: StateRuntime, policies) -> None:  # type: ignore[no-untyped-def]
    """A per-IP limit cannot be dodged by spelling the same address differently."""
    spellings = ["2001:DB8::1", "2001:db8:0:0::1", "2001:0db8::0001", "2001:db8::1"]
    def request(ip: str) -> dict[str, object]:
        return {"grant": {"type": "authorization_code"}, "location": {"ip": ip}}

    outcomes = [runtime.decide(policies, request(ip), now=T0, caller="api_key:a").to_dict()
                for ip in [*spellings, "2001:db8::1"]]
    assert [o["step_up"] for o in outcomes] == [False, False, False, False, True]  # per-ip: 4 per 10m
    assert [e["name"] for e in outcomes[-1]["rate_limits"] if e["exceeded"]] == ["per-ip"]
    mapped = [runtime.decide(policies, request(ip), now=T0, caller="api_key:b").to_dict()
              for ip in ("192.0.2.7", "::ffff:192.0.2.7")]
    keys = [next(e["key"] for e in d["rate_limits"] if e["name"] == "per-ip") for d in mapped]
    assert keys[0] == keys[1]


def test_an_address_read_inside_a_key_expression_is_one_key_however_written(  # type: ignore[no-untyped-def]
        runtime: StateRuntime) -> None:
    """Not only a bare `ip` key: an expression reading location.ip reads it in one spelling."""
    limit = ("rate_limits:\n  - {name: per-ip-and-client, key: ['location.ip + \"/\" + client.id', '(location.ip)'],"
             " rate: 3 per 1m, on_exceed: {deny: slow down}}\n")
    policies = load_sources({"rl.yaml": POLICY.split("rate_limits:")[0] + limit})
    spellings = ["2001:DB8::1", "2001:db8:0:0::1", "2001:0db8::0001", "2001:db8::1", "::ffff:192.0.2.1", "192.0.2.1"]
    allowed = [runtime.decide(policies, {"location": {"ip": ip}, "client": {"id": "web"}}, now=T0).allow
               for ip in spellings]
    assert allowed == [True, True, True, False, True, True]


def test_a_condition_of_a_limit_reads_the_activation_the_policy_built(  # type: ignore[no-untyped-def]
        runtime: StateRuntime, policies, monkeypatch: pytest.MonkeyPatch) -> None:
    """`when: grant.type == ...` needs the activation: the decision carries the one the program
    built for its rules (validating the context again cost ~9 µs), and it is that request's."""
    from ttlpolicy.context import ContextSchema

    built: list[object] = []
    original = ContextSchema.activation
    monkeypatch.setattr(ContextSchema, "activation", lambda self, *a: built.append(a) or original(self, *a))
    compiled = policies.get("rl")
    decision = compiled.decide(refresh(), T0)
    assert decision.activation == original(compiled.context, refresh(), T0)  # the request's own activation
    built.clear()
    allowed = [runtime.decide(policies, refresh(), now=T0 + timedelta(seconds=s)).allow for s in range(4)]
    assert allowed == [True, True, True, False]  # the condition held: the limit counted
    other = {"grant": {"type": "authorization_code"}, "user": {"id": "alice"}, "location": {"ip": "192.0.2.2"}}
    assert runtime.decide(policies, other, now=T0 + timedelta(seconds=5)).allow  # the condition did not hold
    assert built == []  # no activation built again
    # A decision that carries none (made elsewhere, then handed over) still has its activation built.
    runtime.after_policy(dataclasses.replace(decision, activation=None), compiled, refresh(), T0,
                         policies.rate_limits["rl"])
    assert len(built) == 1


KEYED = """\
apiVersion: ttlpolicy/v1
name: keyed
defaults: {access_ttl: 15m, refresh_ttl: 8h}
attributes:
  tenant.id: {type: string, default: acme}
  user.level: {type: int}
rate_limits:
  - {name: per-caller-and-user, key: [caller, user], rate: 5 per 1m, on_exceed: {deny: slow down}}
  - {name: per-tenant, key: tenant.id, rate: 5 per 1m, on_exceed: {deny: slow down}}
  - {name: per-level, key: user.level, rate: 5 per 1m, on_exceed: {deny: slow down}}
  - {name: per-day, key: time.date, rate: 5 per 1d, on_exceed: {deny: slow down}}
  - {name: per-pair, key: 'client.id + "/" + user.id', rate: 5 per 1m, on_exceed: {deny: slow down}}
  - {name: per-ip, key: ip, rate: 5 per 1m, on_exceed: {deny: slow down}}
  - {name: per-ip-and-client, key: 'location.ip + "/" + client.id', rate: 5 per 1m, on_exceed: {deny: slow down}}
"""


def test_a_key_part_is_read_as_sent_only_when_that_is_its_value() -> None:
    """Only a sent string attribute without a default is read from the context as sent; a default,
    another type, a derived attribute or an expression is what the policy's activation says."""
    policies = load_sources({"keyed.yaml": KEYED})
    limits = {limit.name: limit for limit in policies.rate_limits["keyed"]}
    assert {name: [(p.text, p.path) for p in limit.key] for name, limit in limits.items()} == {
        "per-caller-and-user": [("caller", None), ("user.id", ("user", "id"))],
        "per-tenant": [("tenant.id", None)],
        "per-level": [("user.level", None)],
        "per-day": [("time.date", None)],
        "per-pair": [('client.id + "/" + user.id', None)],
        "per-ip": [("location.ip", ("location", "ip"))],
        "per-ip-and-client": [('location.ip + "/" + client.id', None)],
    }
    assert load_sources({"rl.yaml": POLICY}).rate_limits["rl"][1].description == \
        "A runaway client or a stolen refresh token."


@pytest.mark.parametrize("context, expected", [
    ({"user": {"id": "alice", "level": 3}, "client": {"id": "web"}, "location": {"ip": "2001:DB8::1"}},
     {"per-caller-and-user": ["api_key:a", "alice"], "per-tenant": ["acme"], "per-level": ["3"],
      "per-day": ["2026-12-01"], "per-pair": ["web/alice"], "per-ip": ["2001:db8::1"],
      "per-ip-and-client": ["2001:db8::1/web"]}),
    # the default is the value: sending it or leaving it out is one key; an id that looks like an
    # address is an id (only location.ip is read as an address); a part that cannot be evaluated
    # counts under <unknown>
    ({"user": {"id": "2001:DB8::1"}, "tenant": {"id": "acme"}},
     {"per-caller-and-user": ["api_key:a", "2001:DB8::1"], "per-tenant": ["acme"], "per-level": ["<unknown>"],
      "per-day": ["2026-12-01"], "per-pair": ["<unknown>"], "per-ip": ["<unknown>"],
      "per-ip-and-client": ["<unknown>"]}),
], ids=["sent", "defaults-and-absent"])
def test_every_key_part_counts_by_its_own_value(context: dict[str, object], expected: dict[str, list[str]]) -> None:
    policies = load_sources({"keyed.yaml": KEYED})
    limits = {limit.name: limit for limit in policies.rate_limits["keyed"]}
    activation = policies.get("keyed").context.activation(context, T0)
    for name, values in expected.items():
        assert limits[name].key_values(activation, "api_key:a", context) == values, name
        assert limits[name].key_values(activation, "api_key:a") == values, name  # the activation alone: the same


@pytest.mark.parametrize("sent", [5, True, ["192.0.2.1"], {"ip": "192.0.2.1"}])
def test_a_key_value_that_is_not_the_declared_string_counts_as_unknown(policies, sent: object) -> None:  # type: ignore[no-untyped-def]
    """A limit that needs no activation is counted from the context as sent, before the policy
    has validated it when it shares the activity's round trip (StateRuntime.counting): a value
    that is not the string declared counts under <unknown>, never under its Python spelling."""
    limit = {limit.name: limit for limit in policies.rate_limits["rl"]}["per-ip"]
    assert not limit.needs_activation
    assert limit.key_values(None, "api_key:a", {"location": {"ip": sent}}) == ["<unknown>", "api_key:a"]


@pytest.mark.parametrize("sent, key", [
    ("192.0.2.1", "192.0.2.1"), ("::ffff:192.0.2.1", "192.0.2.1"), ("198.51.100.7", "198.51.100.7"),
    ("2001:DB8::1", "2001:db8::1"), ("2001:0db8:0:0::0001", "2001:db8::1"),
    ("::192.0.2.1", "::c000:201"),  # IPv4-compatible IPv6 is another address than 192.0.2.1
])
def test_an_address_is_counted_under_its_one_canonical_spelling(sent: str, key: str) -> None:
    assert canonical_ip(sent) == key


def test_store_keys_are_stable_across_versions() -> None:
    """A key's name in the store must not change between releases: a new name would hand every
    client a fresh quota on upgrade, and replicas of two versions would count apart."""
    values = ["192.0.2.1", "api_key:a"]
    digest = hashlib.sha256("192.0.2.1\x1fapi_key:a".encode()).hexdigest()
    assert key_digest(values) == digest
    assert store_key("rl", "per-ip", values) == store_key("rl", "per-ip", (), digest) == \
        f"ratelimit:rl:per-ip:{digest[:32]}"
    assert hashed_key(values) == hashed_key((), digest) == f"sha256:{digest[:16]}"


@pytest.mark.parametrize("text, window", [("1 per 1s", Window(1, 1)), (" 20  per 1h ", Window(20, 3600))])
def test_a_rate_is_a_count_per_window(text: str, window: Window) -> None:
    assert parse_rate(text) == window


@pytest.mark.parametrize("text, message", [
    ("twenty per hour", "not a rate: 'twenty per hour' (write e.g. '20 per 1h')"),
    ("0 per 1m", "'0 per 1m': the count must be at least 1"),
    ("3 per 0s", "'3 per 0s': the window must be at least 1s"),
])
def test_a_rate_that_is_not_one_says_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rate(text)
    assert str(info.value) == message


@pytest.mark.parametrize("retry_after, shown", [(0.5, "1s"), (1.5, "2s"), (3180.0, "53m"), (math.inf, "never")])
def test_the_ceiling_says_when_to_retry_rounded_up(policies, retry_after: float, shown: str) -> None:  # type: ignore[no-untyped-def]
    limit = {limit.name: limit for limit in policies.rate_limits["rl"]}["refresh-per-user"]
    ceiling = limit.ceiling(retry_after)
    assert ceiling.source == f"rate limit refresh-per-user (3 per 1m, 5 per 1h; retry after {shown})"
    assert (ceiling.step, ceiling.deny, ceiling.access_ttl) == ("rate_limit", "too many refresh attempts", None)


def test_only_the_limits_without_a_problem_are_compiled() -> None:
    exceed = {"deny": "slow down"}
    limits = [RateLimit(name="ok", key=("user",), rate=("1 per 1m",), on_exceed=exceed, index=0),
              RateLimit(name="bad-when", when="user.nme == 'x'", key=("user",), rate=("1 per 1m",),
                        on_exceed=exceed, index=1),
              RateLimit(name="bad-key", key=("user", "user.nme"), rate=("1 per 1m",), on_exceed=exceed, index=2),
              RateLimit(name="bad-rate", key=("user",), rate=("1 per 1m", "0 per 1h"), on_exceed=exceed, index=3),
              RateLimit(name="ok", key=("ip",), rate=("1 per 1m",), on_exceed=exceed, index=4)]
    compiled, problems = compile_rate_limits(limits, BUILTIN, {}, lambda path, file: None)
    assert [(limit.name, limit.key[0].text) for limit in compiled] == [("ok", "user.id")]
    assert [(p.code, p.path) for p in problems] == [
        ("cel-unknown-attribute", "rate_limits.1.when"), ("cel-unknown-attribute", "rate_limits.2.key.1"),
        ("rate-limit-rate", "rate_limits.3.rate.1"), ("duplicate-rate-limit", "rate_limits.4.name")]
