"""Context validation and derived attributes: every rule and every message, on both paths.

A context is untrusted input. Each value is checked against its declared attribute by a fast
checker specialised by type (``value_checker``), which hands anything unusual to ``_coerce``,
the one source of the rules and messages; the reference evaluator builds its activation with
``ContextSchema.activation``. These tables hold both to the same answers, value by value.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ttlpolicy import ContextError, load_sources
from ttlpolicy.context import (MAX_EPOCH, ContextSchema, MAX_LIST, MAX_STRING, check_value, parse_ip, parse_timestamp,
                               value_checker, zone_info)
from ttlpolicy.model import Attribute

UTC = timezone.utc
LEVELS = Attribute(type="string", values=("low", "high"))
SCORE = Attribute(type="double", min=0, max=10)
COUNT = Attribute(type="int", min=1, max=5)
ANY_INT = Attribute(type="int")
ANY_DOUBLE = Attribute(type="double")
GROUPS = Attribute(type="list", values=("admins", "staff"))
TAGS = Attribute(type="list")
FLAG = Attribute(type="bool")
TEXT = Attribute(type="string")
WHEN = Attribute(type="timestamp")

VALID: list[tuple[str, Attribute, Any, Any]] = [
    ("x.level", LEVELS, "high", "high"),
    ("x.score", SCORE, 10, 10.0),
    ("x.score", SCORE, 0.0, 0.0),
    ("x.count", COUNT, 5, 5),
    ("x.count", COUNT, 1, 1),
    ("x.big", ANY_INT, 2**63 - 1, 2**63 - 1),
    ("x.big", ANY_INT, -(2**63), -(2**63)),
    ("x.ratio", ANY_DOUBLE, -1e300, -1e300),
    ("x.groups", GROUPS, ["staff", "admins"], ["staff", "admins"]),
    ("x.tags", TAGS, ["a" * MAX_STRING] * MAX_LIST, ["a" * MAX_STRING] * MAX_LIST),
    ("x.flag", FLAG, False, False),
    ("x.text", TEXT, "t" * MAX_STRING, "t" * MAX_STRING),
    ("location.ip", TEXT, "10.0.0.1", "10.0.0.1"),
    ("location.ip", TEXT, "2001:db8::1", "2001:db8::1"),
    ("location.country", TEXT, "DE", "DE"),
    ("time.zone", TEXT, "Europe/Berlin", "Europe/Berlin"),
    ("x.when", WHEN, 0, datetime(1970, 1, 1, tzinfo=UTC)),
]

INVALID: list[tuple[str, Attribute, Any, str]] = [
    ("x.level", LEVELS, "medium", "'medium' is not one of low, high"),
    ("x.level", LEVELS, 3, "expected a string, got integer"),
    ("x.text", TEXT, "t" * (MAX_STRING + 1), f"string longer than {MAX_STRING} characters"),
    ("x.text", TEXT, None, "expected a string, got null"),
    ("x.text", TEXT, {"a": 1}, "expected a string, got object"),
    ("x.text", TEXT, [], "expected a string, got list"),
    ("x.text", TEXT, 1.5, "expected a string, got number"),
    ("x.text", TEXT, b"x", "expected a string, got bytes"),
    ("x.flag", FLAG, 1, "expected a boolean, got integer"),
    ("x.flag", FLAG, "true", "expected a boolean, got string"),
    ("x.score", SCORE, True, "expected a number, got boolean"),
    ("x.score", SCORE, "5", "expected a number, got string"),
    ("x.score", SCORE, 10.5, "10.5 is above the maximum 10"),
    ("x.score", SCORE, -0.5, "-0.5 is below the minimum 0"),
    ("x.ratio", ANY_DOUBLE, float("inf"), "expected a finite number"),
    ("x.ratio", ANY_DOUBLE, float("nan"), "expected a finite number"),
    ("x.count", COUNT, 2.0, "expected an integer, got 2.0"),
    ("x.count", COUNT, 6, "6 is above the maximum 5"),
    ("x.count", COUNT, 0, "0 is below the minimum 1"),
    ("x.big", ANY_INT, 2**63, "integer out of the 64-bit range"),
    ("x.big", ANY_INT, -(2**63) - 1, "integer out of the 64-bit range"),
    ("x.groups", GROUPS, ["staff", "guests"], "'guests' is not one of admins, staff"),
    ("x.groups", GROUPS, "staff", "expected a list of strings, got string"),
    ("x.tags", TAGS, ["a"] * (MAX_LIST + 1), f"list longer than {MAX_LIST} items"),
    ("x.tags", TAGS, ["a", 1], "expected a list of strings"),
    ("x.tags", TAGS, ["a" * (MAX_STRING + 1)], "expected a list of strings"),
    ("location.ip", TEXT, "10.0.0.256", "'10.0.0.256' is not an IPv4 or IPv6 address"),
    ("location.ip", TEXT, "010.0.0.1", "'010.0.0.1' is not an IPv4 or IPv6 address"),
    ("location.country", TEXT, "de", "'de' is not an ISO 3166-1 alpha-2 code such as DE or US"),
    ("location.country", TEXT, "DEU", "'DEU' is not an ISO 3166-1 alpha-2 code such as DE or US"),
    ("location.country", TEXT, "D1", "'D1' is not an ISO 3166-1 alpha-2 code such as DE or US"),
    ("location.country", TEXT, "ÄÖ", "'ÄÖ' is not an ISO 3166-1 alpha-2 code such as DE or US"),
    ("time.zone", TEXT, "europe/berlin",
     "unknown time zone 'europe/berlin'; did you mean 'Europe/Berlin'? (use an IANA name such as Europe/Berlin)"),
    ("time.zone", TEXT, "Europe/Berlim",
     "unknown time zone 'Europe/Berlim'; did you mean 'Europe/Berlin'? (use an IANA name such as Europe/Berlin)"),
    ("time.zone", TEXT, "Berlin",
     "unknown time zone 'Berlin'; did you mean 'Europe/Berlin'? (use an IANA name such as Europe/Berlin)"),
    ("time.zone", TEXT, "new york",
     "unknown time zone 'new york'; did you mean 'America/New_York'? (use an IANA name such as Europe/Berlin)"),
    ("time.zone", TEXT, "Louisville",  # a city in two zones (America/Louisville, America/Kentucky/...): no guess
     "unknown time zone 'Louisville' (use an IANA name such as Europe/Berlin)"),
    ("time.zone", TEXT, "Mars/Olympus_Mons_Base",
     "unknown time zone 'Mars/Olympus_Mons_Base' (use an IANA name such as Europe/Berlin)"),
    ("x.when", WHEN, "yesterday", "'yesterday' is not an RFC 3339 timestamp"),
]


@pytest.mark.parametrize(("name", "attribute", "value", "coerced"), VALID, ids=[f"{v[0]}={v[2]!r:.30}" for v in VALID])
def test_valid_values_pass_both_checkers_unchanged_or_coerced(name: str, attribute: Attribute, value: Any,
                                                              coerced: Any) -> None:
    assert value_checker(name, attribute)(value) == coerced
    assert type(value_checker(name, attribute)(value)) is type(coerced)
    assert check_value(attribute, value) is None


@pytest.mark.parametrize(("name", "attribute", "value", "message"), INVALID,
                         ids=[f"{v[0]}={v[2]!r:.30}" for v in INVALID])
def test_invalid_values_get_the_same_message_from_both_checkers(name: str, attribute: Attribute, value: Any,
                                                                message: str) -> None:
    with pytest.raises(ValueError) as raised:
        value_checker(name, attribute)(value)
    assert str(raised.value) == message
    if not name.startswith(("location.", "time.")):
        assert check_value(attribute, value) == message


@pytest.mark.parametrize(("text", "instant"), [
    ("2026-03-02T10:00:00Z", datetime(2026, 3, 2, 10, tzinfo=UTC)),
    ("2026-03-02t10:00:00z", datetime(2026, 3, 2, 10, tzinfo=UTC)),
    ("2026-03-02T11:00:00+01:00", datetime(2026, 3, 2, 10, tzinfo=UTC)),
    (1_772_445_600, datetime(2026, 3, 2, 10, tzinfo=UTC)),
    (1_772_445_600.5, datetime(2026, 3, 2, 10, 0, 0, 500_000, tzinfo=UTC)),
    (MAX_EPOCH - 1, datetime(8999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ("2026-03-02T10:00:00." + "1" * 38 + "+01:00", datetime(2026, 3, 2, 9, 0, 0, 111_111, tzinfo=UTC)),  # 64 long
    (datetime(2026, 3, 2, 10, tzinfo=UTC), datetime(2026, 3, 2, 10, tzinfo=UTC)),
])
def test_timestamps_are_rfc_3339_or_epoch_seconds(text: Any, instant: datetime) -> None:
    assert parse_timestamp(text) == instant


@pytest.mark.parametrize(("value", "message"), [
    (True, "expected an RFC 3339 timestamp or epoch seconds"),
    (-1, "epoch seconds out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    (MAX_EPOCH, "epoch seconds out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    (float("nan"), "epoch seconds out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    (datetime(2026, 3, 2, 10), "timestamp has no time zone offset"),
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
     "timestamp out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    ("0001-01-01T00:00:00+01:00",
     "timestamp out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    ("9000-01-01T00:00:00Z", "timestamp out of range (must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z)"),
    ("2026-03-02T10:00:00", "'2026-03-02T10:00:00' has no time zone offset (add Z or +01:00)"),
    ("2026-03-02T10:00:00." + "1" * 39 + "+01:00", "expected an RFC 3339 timestamp or epoch seconds"),  # 65
    (None, "expected an RFC 3339 timestamp or epoch seconds"),
    ("2026-13-02T10:00:00Z", "'2026-13-02T10:00:00Z' is not an RFC 3339 timestamp"),
])
def test_timestamps_out_of_range_or_without_an_offset_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_timestamp(value)
    assert str(raised.value) == message


def test_ip_addresses_parse_to_their_version_and_value_ipv4_mapped_as_ipv4() -> None:
    assert parse_ip("10.1.2.3") == (4, 0x0A010203)
    assert parse_ip("255.255.255.255") == (4, 2**32 - 1)
    assert parse_ip("::ffff:10.1.2.3") == (4, 0x0A010203)
    assert parse_ip("2001:db8::1") == (6, 0x20010DB8 << 96 | 1)
    with pytest.raises(ValueError):
        parse_ip("1.2.3")


def test_only_iana_zone_names_are_time_zones() -> None:
    assert zone_info("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    for name in ("Europe", "posixrules", 5, None, "x" * 100):
        with pytest.raises(ValueError, match="unknown time zone"):
            zone_info(name)


POLICY_TEXT = """
apiVersion: ttlpolicy/v1
name: p
timezone: Europe/Berlin
defaults: {access_ttl: 1h, refresh_ttl: 1d}
zones: {office: [10.0.0.0/24, "2001:db8::/64"], vpn: [10.8.0.0/16]}
attributes:
  user.level: {type: string, values: [low, high], default: low}
  user.badge: {type: string, required: true}
  tenant: {type: string, default: acme}
  region: {type: string}
rules: []
"""
POLICY = load_sources({"p.yaml": POLICY_TEXT}).get("p")
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 11:00 in Berlin


def _activation(context: dict[str, Any], now: datetime = NOW) -> dict[str, Any]:
    # a policy of its own each time: mutation testing forks from a process that built the shared
    # one already, so a mutant in ContextSchema.__init__ would never reach it
    return load_sources({"p.yaml": POLICY_TEXT}).get("p").context.activation(context, now)


def test_the_activation_holds_the_context_the_defaults_and_the_derived_attributes() -> None:
    act = _activation({"user": {"badge": "b1"}, "location": {"ip": "10.8.1.1"}, "region": "eu"})
    assert act["user"]["level"] == "low" and act["user"]["badge"] == "b1"
    assert act["tenant"] == "acme" and act["region"] == "eu"
    assert act["time"] == {"now": NOW, "hour": 11, "minute": 0, "weekday": "mon", "date": "2026-03-02"}
    assert act["location"]["zone"] == "vpn"
    assert _activation({"user": {"badge": "b1"}, "location": {"ip": "2001:db8::7"}})["location"]["zone"] == "office"
    assert _activation({"user": {"badge": "b1"}, "location": {"ip": "10.0.1.0"}})["location"]["zone"] == "none"
    for edge in ("10.8.0.0", "10.8.255.255"):
        assert _activation({"user": {"badge": "b1"}, "location": {"ip": edge}})["location"]["zone"] == "vpn"
    assert _activation({"user": {"badge": "b1"}, "location": {"ip": "10.9.0.0"}})["location"]["zone"] == "none"
    assert _activation({"user": {"badge": "b1"}})["location"]["zone"] == "none"


def test_the_context_s_time_zone_sets_the_local_hour_weekday_and_date() -> None:
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    # a policy of its own: the shared one may already have looked up (and cached) the zone
    fresh = load_sources({"p.yaml": POLICY_TEXT}).get("p")
    act = fresh.context.activation({"user": {"badge": "b1"}, "time": {"zone": "Asia/Tokyo"}}, late)
    assert act["time"] == {"zone": "Asia/Tokyo", "now": late, "hour": 8, "minute": 30, "weekday": "mon",
                           "date": "2026-03-02"}
    other = fresh.context.activation({"user": {"badge": "b1"}, "time": {"zone": "America/New_York"}}, late)
    assert other["time"]["hour"] == 18  # each zone by its own name, not the one looked up first
    assert _activation({"user": {"badge": "b1"}}, late)["time"]["weekday"] == "mon"  # 00:30 in Berlin
    assert _activation({"user": {"badge": "b1"}}, late + timedelta(hours=-1))["time"]["weekday"] == "sun"


def test_null_means_not_known_and_gives_the_default() -> None:
    act = _activation({"user": {"badge": "b1", "level": None}, "tenant": None, "region": None})
    assert act["user"]["level"] == "low" and act["tenant"] == "acme" and "region" not in act


def _problems(context: Any) -> list[tuple[str, str, str]]:
    with pytest.raises(ContextError) as raised:
        _activation(context)
    return [(p.code, p.path or "", p.message) for p in raised.value.problems]


def test_every_problem_of_a_context_is_reported_with_its_path() -> None:
    assert _problems({"user": {"level": "mid", "shoe": 44, "badge": 7}, "location": {"zone": "office"},
                      "time": "noon", "tenant": 5, "weather": "rain"}) == [
        ("context-value", "user.level", "'mid' is not one of low, high"),
        ("context-unknown-attribute", "user.shoe", "not a declared attribute of this policy"),
        ("context-value", "user.badge", "expected a string, got integer"),
        ("context-derived-attribute", "location.zone", "is derived by ttlpolicy; do not send it"),
        ("context-type", "time", "expected an object, got string"),
        ("context-value", "tenant", "expected a string, got integer"),
        ("context-unknown-attribute", "weather", "not a declared attribute of this policy"),
    ]  # user.badge was sent, and refused: said once, not also "missing"
    assert _problems({}) == [("context-missing", "user.badge", "required attribute is missing")]
    assert _problems({"user": 5}) == [("context-type", "user", "expected an object, got integer")]
    assert _problems({"user": {"badge": None}}) == [("context-missing", "user.badge", "required attribute is missing")]
    assert _problems(["not", "an", "object"]) == [("context-type", "context", "context must be an object, got list")]


# -- the published JSON Schema of a context says what validation accepts ---------------------------

def test_each_attribute_type_has_its_json_schema() -> None:
    from ttlpolicy.context import MIN_EPOCH, attribute_schema

    assert attribute_schema("x.level", Attribute(type="string", values=("low", "high"), default="low",
                                                 description="Level.")) == {
        "enum": ["low", "high", None], "description": "Level.", "default": "low"}
    assert attribute_schema("x.text", TEXT) == {"type": ["string", "null"], "maxLength": MAX_STRING}
    assert attribute_schema("location.ip", TEXT) == {"type": ["string", "null"], "maxLength": MAX_STRING,
                                                     "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
    assert attribute_schema("location.country", TEXT)["pattern"] == "^[A-Z]{2}$"
    assert attribute_schema("x.flag", FLAG) == {"type": ["boolean", "null"]}
    assert attribute_schema("x.count", COUNT) == {"type": ["integer", "null"], "minimum": 1, "maximum": 5}
    assert attribute_schema("x.big", ANY_INT) == {"type": ["integer", "null"], "minimum": -(2**63),
                                                  "maximum": 2**63 - 1}
    assert attribute_schema("x.huge", Attribute(type="int", min=-1e30, max=1e30)) == {
        "type": ["integer", "null"], "minimum": -(2**63), "maximum": 2**63 - 1}
    assert attribute_schema("x.score", SCORE) == {"type": ["number", "null"], "minimum": 0, "maximum": 10}
    assert attribute_schema("x.ratio", ANY_DOUBLE) == {"type": ["number", "null"]}
    assert attribute_schema("x.when", Attribute(type="timestamp", description="When.")) == {
        "anyOf": [{"type": "string", "format": "date-time", "maxLength": 64},
                  {"type": "number", "minimum": MIN_EPOCH, "exclusiveMaximum": MAX_EPOCH}, {"type": "null"}],
        "description": "When. RFC 3339 with an offset, or epoch seconds; "
                       "between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"}
    assert attribute_schema("x.groups", GROUPS) == {"type": ["array", "null"], "maxItems": MAX_LIST,
                                                    "items": {"enum": ["admins", "staff"]}}
    assert attribute_schema("x.tags", TAGS) == {"type": ["array", "null"], "maxItems": MAX_LIST,
                                                "items": {"type": "string", "maxLength": MAX_STRING}}


SCHEMA_CAN_SAY = [case for case in VALID + INVALID if not case[0].startswith("time.")
                  and not isinstance(case[2], (bytes, float)) and case[1].type != "timestamp"]


@pytest.mark.parametrize(("name", "attribute", "value", "expected"), SCHEMA_CAN_SAY,
                         ids=[f"{v[0]}={v[2]!r:.30}" for v in SCHEMA_CAN_SAY])
def test_the_json_schema_accepts_exactly_what_validation_accepts(name: str, attribute: Attribute, value: Any,
                                                                 expected: Any) -> None:
    import jsonschema

    from ttlpolicy.context import attribute_schema

    accepted = jsonschema.Draft202012Validator(attribute_schema(name, attribute),
                                               format_checker=jsonschema.FormatChecker()).is_valid(value)
    assert accepted == ((name, attribute, value, expected) in VALID or value is None)


def test_a_context_s_json_schema_leaves_out_derived_attributes_and_lists_the_required_ones() -> None:
    from ttlpolicy.context import context_json_schema

    schema = context_json_schema(POLICY.attributes, exclude=("activity",))
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["user"]
    assert schema["properties"]["user"]["required"] == ["badge"]
    assert schema["properties"]["user"]["additionalProperties"] is False
    assert schema["properties"]["user"]["type"] == "object"
    assert schema["properties"]["location"]["properties"]["ip"]["anyOf"] == [{"format": "ipv4"}, {"format": "ipv6"}]
    assert schema["properties"]["tenant"] == {"type": ["string", "null"], "maxLength": MAX_STRING, "default": "acme"}
    assert "zone" not in schema["properties"]["location"]["properties"]
    assert set(schema["properties"]["time"]["properties"]) == {"zone"}
    assert "activity" not in schema["properties"]
    required = context_json_schema({"tier": Attribute(type="string", required=True),
                                    "a.b": Attribute(type="bool", required=True),
                                    "a.c": Attribute(type="bool", required=True)})
    assert required["required"] == ["a", "tier"] and required["properties"]["a"]["required"] == ["b", "c"]
    assert "required" not in context_json_schema({"a.b": Attribute(type="bool")})


@pytest.mark.parametrize(("name", "message"), [
    (5, "unknown time zone 5 (use an IANA name such as Europe/Berlin)"),
    ("EUROPE/BERLIN", "unknown time zone 'EUROPE/BERLIN'; did you mean 'Europe/Berlin'? (use an IANA name such as "
                      "Europe/Berlin)"),
    ("Euxxxx/Berlin", "unknown time zone 'Euxxxx/Berlin' (use an IANA name such as Europe/Berlin)"),  # not close enough
])
def test_an_unknown_zone_suggests_the_nearest_name_only_when_it_is_close(name: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        zone_info(name)
    assert str(raised.value) == message


def test_any_mapping_is_a_context_and_a_required_top_level_attribute_is_checked() -> None:
    from types import MappingProxyType

    policy = load_sources({"p.yaml": POLICY_TEXT.replace("  region: {type: string}",
                                                         "  region: {type: string}\n  seats: {type: int, required: true}")
                           }).get("p")
    act = policy.context.activation(MappingProxyType({"user": MappingProxyType({"badge": "b1"}), "seats": 3}), NOW)
    assert act["seats"] == 3 and act["user"]["badge"] == "b1"
    with pytest.raises(ContextError) as raised:
        policy.context.activation({"user": {"badge": "b1"}}, NOW)
    assert [(p.path, p.message) for p in raised.value.problems] == [("seats", "required attribute is missing")]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=4).map(lambda a: str(a).replace(".", ".0", 1)),
                 st.text(alphabet="0123456789.:abcdefABCDEF% x", max_size=20)))
def test_an_address_parses_as_ipaddress_reads_it(text: str) -> None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_ip(text)
        return
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    assert parse_ip(text) == (address.version, int(address))


_networks = st.one_of(st.ip_addresses(v=4).flatmap(lambda a: st.integers(8, 32).map(
                          lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))),
                      st.ip_addresses(v=6).flatmap(lambda a: st.integers(16, 128).map(
                          lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_networks, st.sampled_from(["a", "b", "c"])), max_size=8),
       st.lists(st.ip_addresses(), min_size=1, max_size=8))
def test_an_address_is_in_the_zone_that_holds_it(zones: list[Any], addresses: list[Any]) -> None:
    """Found by bisection over the zones' ranges: the zone a scan of the table finds."""
    accepted: list[Any] = []  # as the validator accepts them: no two CIDRs share an address
    for net, name in zones:
        if all(net.version != other.version or not net.overlaps(other) for other, _ in accepted):
            accepted.append((net, name))
    schema = ContextSchema({}, ZoneInfo("UTC"), accepted)
    for address in [*addresses, *(net.network_address for net, _ in zones), *(net.broadcast_address for net, _ in zones)]:
        mapped = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address  # as parse_ip
        expected = next((name for net, name in accepted if mapped in net), "none")
        assert schema.ip_zone(str(address)) == expected, (accepted, address)


def test_adjacent_zones_each_keep_their_addresses() -> None:
    schema = ContextSchema({}, ZoneInfo("UTC"), [(ipaddress.ip_network("10.0.1.0/24"), "b"),
                                                 (ipaddress.ip_network("10.0.0.0/24"), "a")])
    assert [schema.ip_zone(ip) for ip in ("10.0.0.255", "10.0.1.0", "10.0.1.255", "10.0.2.0")] == ["a", "b", "b", "none"]


@pytest.mark.parametrize("zones", [
    [("10.0.0.0/24", "a"), ("10.0.0.255/32", "b")],  # one shared address, the last of the first
    [("10.1.0.0/16", "a"), ("10.0.0.0/8", "a")],  # within one zone
    [("2001:db8::/48", "b"), ("2001:db8::/32", "a")],
])
def test_overlapping_zones_are_refused_even_when_they_share_one_address(zones: list[tuple[str, str]]) -> None:
    """The validator refuses them first (zone-overlap); the schema refuses them again rather
    than let the lookup pick one of the two silently."""
    with pytest.raises(ValueError, match="overlap"):
        ContextSchema({}, ZoneInfo("UTC"), [(ipaddress.ip_network(cidr), name) for cidr, name in zones])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
       st.sampled_from([str.upper, str.lower]))
@example(datetime(1970, 1, 1), timezone.utc, str.upper)
@example(datetime(1969, 12, 31, 23, 59, 59, 999999), timezone.utc, str.upper)
@example(datetime(1970, 1, 1, 0, 59), timezone(timedelta(hours=1)), str.upper)
@example(datetime(8999, 12, 31, 23, 59, 59, 999999), timezone.utc, str.upper)
@example(datetime(8999, 12, 31, 23, 59, 59), timezone.utc, str.lower)
@example(datetime(9000, 1, 1, 0, 59), timezone(timedelta(hours=1)), str.upper)
def test_a_timestamp_is_accepted_exactly_when_its_instant_is_in_range(local: datetime, offset: timezone,
                                                                      case: Any) -> None:
    """The short path for well-inside instants must not move the edges of the range."""
    instant = local.replace(tzinfo=offset)
    text = case(instant.isoformat())
    try:
        epoch = instant.timestamp()
    except (OverflowError, ValueError):
        epoch = float("inf")
    if 0 <= epoch < MAX_EPOCH:
        assert parse_timestamp(text) == instant
    else:
        with pytest.raises(ValueError, match="out of range"):
            parse_timestamp(text)
