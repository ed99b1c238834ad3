"""The generated program's own validation of a context (ttlpolicy.generate: ``_validation``,
``_check``, ``_plain_test``, ``_derivation``) against ``ContextSchema.activation``.

The generated code checks a plainly valid value of each declared attribute inline and hands
anything else to the shared checkers (``value_checker``) or to the whole reference validation;
either way the answers are the same, so a test that compares answers alone cannot see the
generated checks at all. These tests also count the work: a plainly valid value of every kind
that has an inline test (strings, enums, booleans, integers and doubles with and without bounds,
country codes, time zones, IP addresses, top-level attributes with defaults) is accepted by the
generated code with no call to a shared checker or to the reference validation, into the same
activation the reference builds; and every policy shape is generated at all (a broken generator
raises while the policy loads).
"""

from __future__ import annotations

import functools
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest
import yaml

import ttlpolicy.compile
import ttlpolicy.context
import ttlpolicy.generate
from ttlpolicy import ContextError, Decision, PolicyError, load_sources
from ttlpolicy.context import MAX_STRING, value_checker
from ttlpolicy.evaluate import decide as reference_decide
from ttlpolicy.program import CompiledPolicy
from ttlpolicy.vocabulary import WEEKDAYS

sys.path.insert(0, str(Path(__file__).parent))
from test_context import INVALID, VALID  # noqa: E402

NOW = datetime(2026, 3, 2, 10, 45, tzinfo=timezone.utc)  # a Monday: 19:45 in Tokyo, 11:45 in Berlin
ZONES = {"corp": ["10.0.0.0/8"], "lab": ["2001:db8::/32"]}

# One attribute of every kind with an inline test, with and without bounds or values, and two
# that always take the shared checker (a timestamp, a list).
_ATTRIBUTES: dict[str, Any] = {
    "x.text": {"type": "string"}, "x.level": {"type": "string", "values": ["low", "high"]},
    "x.flag": {"type": "bool"}, "x.big": {"type": "int"}, "x.count": {"type": "int", "min": 1, "max": 5},
    "x.ratio": {"type": "double"}, "x.score": {"type": "double", "min": -1, "max": 1},
    "x.when": {"type": "timestamp"}, "x.tags": {"type": "list"},
    "tenant": {"type": "string", "default": "acme"}, "level": {"type": "int"},
}
# location.* and time.zone as the vocabulary declares them, or redeclared with values and defaults
_NARROWED: dict[str, Any] = {
    "location.country": {"type": "string", "values": ["DE", "JP"]},
    "time.zone": {"type": "string", "values": ["Europe/Berlin", "Asia/Tokyo"], "default": "Asia/Tokyo"},
    "location.ip": {"type": "string", "values": ["10.1.2.3", "192.0.2.1", "2001:db8::7"], "default": "10.1.2.3"},
}
SHAPES = {  # name: (zones, redeclared built-ins)
    "zones": (ZONES, {}),
    "no-zones": ({}, {}),
    "zones-narrowed": (ZONES, _NARROWED),
    "no-zones-narrowed": ({}, _NARROWED),
    "zones-ip-default": (ZONES, {"location.ip": {"type": "string", "default": "2001:db8::1"}}),
}
# Plainly valid contexts: the generated code alone accepts them (for the narrowed shapes too).
PLAIN = [
    {},
    {"x": {"text": "t" * MAX_STRING, "level": "high", "flag": False, "big": -(2**63), "count": 5,
           "ratio": 1e300, "score": -1.0},
     "tenant": "globex", "level": 2**63 - 1, "user": {"risk": 0.5, "mfa": True}, "device": {"trust": "managed"},
     "location": {"ip": "10.1.2.3", "country": "DE"}, "time": {"zone": "Asia/Tokyo"}},
    {"x": {"text": "", "big": 2**63 - 1, "count": 1, "ratio": -1e300, "score": 1.0, "flag": True},
     "level": -(2**63), "location": {"ip": "192.0.2.1", "country": "JP"}, "time": {"zone": "Europe/Berlin"}},
    {"location": {"ip": "2001:db8::7"}, "tenant": None, "x": {"text": None}},  # null: the default, or absent
]


def _document(shape: str, rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    zones, redeclared = SHAPES[shape]
    return {"apiVersion": "ttlpolicy/v1", "name": "p", "defaults": {"access_ttl": 3600, "refresh_ttl": 0},
            "zones": zones, "attributes": {**_ATTRIBUTES, **redeclared},
            "rules": rules or [{"name": "r", "when": "x.flag", "access_ttl": {"cap": 60}}]}


class Counted:
    """A policy whose generated program counts its hand-overs: the values given to a shared
    checker (by attribute name), the contexts given to the reference validation, and the
    activations given to the reference evaluator (with ``explain``)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.checked: list[str] = []
        self.validated: list[Any] = []
        self.explained: list[Any] = []

        def counting_checker(name: str, attribute: Any) -> Callable[[Any], Any]:
            check = value_checker(name, attribute)
            return lambda value: self.checked.append(name) or check(value)

        def recorder(policy: CompiledPolicy, act: Any, now: datetime, explain: bool) -> Decision:
            self.explained.append(act)
            return reference_decide(policy, act, now, explain)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ttlpolicy.generate, "value_checker", counting_checker)
            patch.setattr(ttlpolicy.compile, "generate_program",
                          functools.partial(ttlpolicy.generate.generate_program, reference=recorder))
            self.policy = load_sources({"p.yaml": yaml.safe_dump(document)}).get("p")
        assert self.policy.program is not None
        namespace = self.policy.program.run.__globals__
        validate = namespace["_activation"]
        namespace["_activation"] = lambda context, now: self.validated.append(context) or validate(context, now)

    def activation(self, context: Any, now: datetime = NOW) -> Any:
        """The activation the generated code builds for ``context`` (handed over with explain)."""
        self.explained.clear()
        self.policy.decide(context, now, explain=True)
        [act] = self.explained
        return act


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except ContextError as exc:
        return sorted((p.path, p.message) for p in exc.problems)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_plainly_valid_value_of_every_kind_is_checked_by_the_generated_code_alone(shape: str) -> None:
    """No shared checker, no reference validation, and the activation the reference builds:
    location.zone and time.* included, from the address and zone sent or the defaults."""
    counted = Counted(_document(shape))
    for context in PLAIN:
        act = counted.activation(context)
        assert (counted.checked, counted.validated) == ([], []), (shape, context)
        assert act == counted.policy.context.activation(context, NOW), (shape, context)
        assert counted.policy.decide(context, NOW).to_dict() == reference_decide(counted.policy, act, NOW).to_dict()
    assert (counted.checked, counted.validated) == ([], [])


def test_timestamps_and_lists_go_to_the_shared_checker_and_nothing_else_does() -> None:
    counted = Counted(_document("zones"))
    context = {"x": {"when": "2026-03-01T10:00:00Z", "tags": ["a"], "flag": True}}
    assert counted.activation(context) == counted.policy.context.activation(context, NOW)
    assert sorted(counted.checked) == ["x.tags", "x.when"] and counted.validated == []


def test_the_address_is_checked_and_placed_in_its_zone_by_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """location.ip is parsed once per decision (by the zone lookup, which also checks it), and
    not at all for a default, whose zone is known when the policy loads."""
    for shape in ("zones", "no-zones", "zones-ip-default"):
        policy = load_sources({"p.yaml": yaml.safe_dump(_document(shape))}).get("p")
        parsed: list[str] = []
        parse = ttlpolicy.context.parse_ip
        monkeypatch.setattr(ttlpolicy.context, "parse_ip", lambda text: parsed.append(text) or parse(text))
        longest = "fe80::1%" + "e" * (MAX_STRING - 8)  # an address with a zone index, as long as a string may be
        for ip, zone in (("10.200.0.1", "corp"), ("2001:db8::1", "lab"), ("192.0.2.1", "none"), (longest, "none")):
            act = policy.context.activation({"location": {"ip": ip}}, NOW)
            parsed.clear()
            policy.decide({"location": {"ip": ip}}, NOW)
            assert parsed == [ip], shape
            assert act["location"]["zone"] == (zone if shape != "no-zones" else "none")
        parsed.clear()
        policy.decide({}, NOW)
        assert parsed == []
        monkeypatch.undo()


@pytest.mark.parametrize("shape", ["zones", "no-zones", "zones-narrowed", "no-zones-narrowed"])
def test_the_generated_validation_accepts_refuses_and_builds_exactly_what_the_context_schema_does(shape: str) -> None:
    """Value by value from tests/test_context.py's tables and a few more: the same refusals with
    the same messages, and for an accepted value the same activation."""
    counted = Counted(_document(shape))
    policy = counted.policy
    attributes = {name: attribute for name, attribute, _, _ in VALID + INVALID}
    values = [(name, value) for name, _, value, _ in VALID + INVALID if name.split(".")[1] in
              ("text", "level", "flag", "big", "count", "ratio", "score", "when", "tags")
              or not name.startswith("x.")]
    values += [  # beyond the tables: the address, country and time zone checks of the generated code
        ("location.ip", 167837953), ("location.ip", ["10.0.0.1"]), ("location.ip", "10.0.0.1 "),
        ("location.ip", "fe80::1%" + "e" * MAX_STRING),  # an address, by ipaddress, but too long a string
        ("location.ip", "10.1.2.3"), ("location.ip", "10.1.2.4"), ("location.ip", "2001:db8::7"),
        ("location.country", "JP"), ("location.country", "US"), ("location.country", 49),
        ("time.zone", "Asia/Tokyo"), ("time.zone", "America/New_York"), ("time.zone", "Europe"),
        ("time.zone", 3), ("x.level", "low"), ("x.count", True), ("x.score", 1.5), ("x.ratio", 5),
        ("level", "1"), ("level", 1.0), ("tenant", 7), ("tenant", "t" * (MAX_STRING + 1))]
    assert attributes  # the tables are there
    for name, value in values:
        namespace, _, leaf = name.partition(".")
        context = {namespace: {leaf: value}} if leaf else {name: value}
        expected = _outcome(lambda: policy.context.activation(context, NOW))
        counted.explained.clear()
        decided = _outcome(lambda: policy.decide(context, NOW, explain=True))
        if isinstance(expected, list):
            assert decided == expected, (shape, name, value)
        else:
            assert not isinstance(decided, list), (shape, name, value, decided)
            assert counted.explained == [expected], (shape, name, value)


def test_after_the_fast_checks_give_up_the_rules_read_the_validator_s_activation() -> None:
    """A value the fast checks leave to the reference validation, which accepts it (an int for a
    double, a mapping that is not a dict): every rule reads the activation it built, not what the
    fast checks had filled in before they gave up (a default where the value was sent)."""
    from types import MappingProxyType

    counted = Counted(_document("zones", [
        {"name": "risky", "when": "user.risk > 0.5", "deny": "risky"},
        {"name": "mfa", "when": "user.mfa", "access_ttl": {"cap": 60}},
        {"name": "managed", "when": 'device.trust == "managed"', "access_ttl": {"cap": 120}}]))
    for context, allow, ttl in [({"user": {"mfa": True, "risk": 1}}, False, 0),
                                ({"device": MappingProxyType({"trust": "managed"})}, True, 120),
                                ({"user": {"mfa": True}, "x": {"score": 1}}, True, 60)]:
        counted.validated.clear()
        decision = counted.policy.decide(context, NOW)
        assert len(counted.validated) == 1, context  # handed to the reference validation
        assert counted.explained == []  # and decided by the generated rules (none failed)
        assert (decision.allow, decision.access_ttl) == (allow, ttl), context
        act = counted.policy.context.activation(context, NOW)
        assert decision.to_dict() == reference_decide(counted.policy, act, NOW).to_dict()


def test_an_address_outside_location_ip_s_declared_values_is_refused_in_a_policy_with_zones() -> None:
    """It was accepted: the generated zone lookup checked the address but not the values."""
    policy = load_sources({"p.yaml": yaml.safe_dump(_document("zones-narrowed"))}).get("p")
    with pytest.raises(ContextError) as raised:
        policy.decide({"location": {"ip": "10.1.2.4"}}, NOW)
    assert [(p.path, p.message) for p in raised.value.problems] == [
        ("location.ip", "'10.1.2.4' is not one of 10.1.2.3, 192.0.2.1, 2001:db8::7")]


@pytest.mark.parametrize("default, zone", [("10.1.2.3", "corp"), ("2001:db8::1", "lab"), ("192.0.2.1", "none")])
def test_a_request_without_an_address_is_in_the_zone_of_location_ip_s_default(default: str, zone: str) -> None:
    rules = [{"name": "corp", "when": 'location.zone == "corp"', "access_ttl": {"cap": 60}},
             {"name": "lab", "when": 'location.zone == "lab"', "access_ttl": {"cap": 120}}]
    document = _document("zones", rules)
    document["attributes"]["location.ip"] = {"type": "string", "default": default}
    policy = load_sources({"p.yaml": yaml.safe_dump(document)}).get("p")
    for context in ({}, {"location": {"ip": None}}, {"location": {"country": "DE"}}):
        assert policy.decide(context, NOW).access_ttl == {"corp": 60, "lab": 120, "none": 3600}[zone]
    assert policy.decide({"location": {"ip": "10.9.9.9"}}, NOW).access_ttl == 60  # a sent address wins


def test_time_is_derived_in_the_default_time_zone_of_a_fresh_policy() -> None:
    """time.zone's default is loaded by the first decision that needs it (not by the check of a
    zone sent), and time.* follow it; a zone sent wins."""
    policy = load_sources({"p.yaml": yaml.safe_dump(_document("zones-narrowed", [
        {"name": "evening", "when": "time.hour == 19 && time.minute == 45", "access_ttl": {"cap": 60}}]))}).get("p")
    assert policy.decide({}, NOW).access_ttl == 60  # 10:45 UTC is 19:45 in Tokyo
    assert policy.decide({"time": {"zone": "Europe/Berlin"}}, NOW).access_ttl == 3600


@pytest.mark.parametrize("redeclared, message", [
    ({"location.ip": {"type": "int"}}, "location.ip is a built-in string attribute; a redeclaration may narrow its "
                                       "values or give it a default, not make it int"),
    ({"location.country": {"type": "list"}}, "location.country is a built-in string attribute; a redeclaration may "
                                             "narrow its values or give it a default, not make it list"),
    ({"location.ip": {"type": "string", "default": "10.0.0.300"}},
     "default of location.ip: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ({"time.zone": {"type": "string", "default": "Berlin"}}, "default of time.zone: unknown time zone 'Berlin'; did "
                                                             "you mean 'Europe/Berlin'? (use an IANA name such as "
                                                             "Europe/Berlin)"),
])
def test_a_built_in_attribute_keeps_its_type_and_its_check_applies_to_its_default(
        redeclared: dict[str, Any], message: str) -> None:
    """Each of these made every request fail with a TypeError or ValueError (a 500 in the
    service) instead of being refused when the policy was loaded."""
    document = _document("zones")
    document["attributes"].update(redeclared)
    with pytest.raises(PolicyError) as raised:
        load_sources({"p.yaml": yaml.safe_dump(document)})
    assert [p.message for p in raised.value.problems] == [message]


def _namespace_defaults(policy: CompiledPolicy) -> list[dict[str, Any]]:
    by_namespace: dict[str, dict[str, Any]] = {}
    for name, attribute in policy.attributes.items():
        namespace, _, leaf = name.partition(".")
        if leaf and attribute.default is not None:
            by_namespace.setdefault(namespace, {})[leaf] = attribute.default
    return list(by_namespace.values())


# What each constant of the validation and derivation holds, by the name the shown source gives it.
_HOLDS: dict[str, Callable[[Any, CompiledPolicy], bool]] = {
    "keys": lambda value, policy: isinstance(value, frozenset) and all(isinstance(k, str) for k in value),
    "location_zone": lambda value, policy: value in (*policy.document.zones, "none"),
    "defaults": lambda value, policy: value in _namespace_defaults(policy),
    "default": lambda value, policy: value in [a.default for a in policy.attributes.values()],
    "values": lambda value, policy: value in [frozenset(a.values) for a in policy.attributes.values() if a.values],
    "countries": lambda value, policy: value == ttlpolicy.generate._COUNTRY_CODES,
    "time_zones": lambda value, policy: value is policy.context.time_zones,
    "time_zone": lambda value, policy: value == policy.context.time_zone,
    "ip_zone": lambda value, policy: value == policy.context.ip_zone,
    "check": lambda value, policy: callable(value) and value.__module__ == "ttlpolicy.context",  # value_checker(...)
    "zone": lambda value, policy: isinstance(value, ZoneInfo) and value == policy.context.default_zone,
    "weekdays": lambda value, policy: value == WEEKDAYS,
}


@pytest.mark.parametrize("shape", ["zones", "no-zones-narrowed"])
def test_the_shown_validation_names_each_constant_after_what_it_holds(shape: str) -> None:
    """``ttlpolicy compile --show`` is read by reviewers: in the validation and the derived
    attributes, each constant is named after what it holds (``_countries12``, ``_ip_zone7``)."""
    policy = load_sources({"p.yaml": yaml.safe_dump(_document(shape))}).get("p")
    assert policy.program is not None
    source = policy.program.source
    validation = source[source.index("def decide("):source.index("if explain:")]
    namespace = policy.program.run.__globals__
    names = set(re.findall(r"\b_[A-Za-z]\w*", validation)) - {"_Slow", "_activation"}
    hints = set()
    for name in names:
        match = re.fullmatch(r"_([a-z_]*[a-z])\d+", name)
        assert match and match[1] in _HOLDS, name
        assert _HOLDS[match[1]](namespace[name], policy), (name, namespace[name])
        hints.add(match[1])
    assert hints == set(_HOLDS)
