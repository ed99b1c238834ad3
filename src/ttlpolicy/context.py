"""Request contexts: validated against the declared attributes, then enriched with derived ones.

A context is nested JSON, ``{"device": {"trust": "managed"}, "user": {"risk": 0.2}, ...}``.
Everything that violates the declaration is reported at once (promise 2: refused, not
guessed at). The result is the CEL activation: plain Python values, defaults filled in,
timestamps as aware datetimes, and the derived ``location.zone`` and ``time.*``.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import ipaddress
import math
import re
import socket
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, available_timezones

from .errors import ContextError, Problem
from .model import Attribute
from .vocabulary import NO_ZONE, WEEKDAYS

MAX_STRING = 1024
MAX_LIST = 256
_UTC = timezone.utc
# Every instant a caller can send (a context timestamp, a request's `now`, a token's NumericDate)
# lies in [1970-01-01, 9000-01-01) UTC. The upper end leaves a margin of more than the longest
# duration a policy may hold (durations.MAX_DURATION, 100 years) below datetime.max, so that
# `now + ttl`, `auth_time + max_session` and the conversion to any time zone can never overflow.
MIN_EPOCH = 0
MAX_EPOCH = 221_845_392_000  # 9000-01-01T00:00:00Z
_SURELY_AFTER = datetime(1970, 1, 2, tzinfo=_UTC)
_SURELY_BEFORE = datetime(8999, 12, 31, tzinfo=_UTC)
_fromisoformat = datetime.fromisoformat
_TIMESTAMP_RANGE = "between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 text with an offset, or seconds since the epoch, as an aware datetime.

    Raises ``ValueError`` for anything else, including instants outside [1970, 9000) UTC.
    """
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("expected an RFC 3339 timestamp or epoch seconds")
        try:
            parsed = _fromisoformat(value.upper())  # RFC 3339 allows lower-case t and z
        except ValueError:
            raise ValueError(f"{value!r} is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone offset (add Z or +01:00)")
        # Well inside the range: no need for the exact test (whose float epoch costs a call).
        return parsed if _SURELY_AFTER <= parsed < _SURELY_BEFORE else _in_range(parsed)
    if isinstance(value, bool):
        raise ValueError("expected an RFC 3339 timestamp or epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not MIN_EPOCH <= value < MAX_EPOCH:
            raise ValueError(f"epoch seconds out of range (must be {_TIMESTAMP_RANGE})")
        return datetime.fromtimestamp(value, _UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone offset")
        return _in_range(value)
    raise ValueError("expected an RFC 3339 timestamp or epoch seconds")


def _in_range(instant: datetime) -> datetime:
    try:
        # Also what fails for 0001-01-01T00:00:00+01:00 or 9999-12-31T23:59:59-01:00, whose
        # UTC instant is outside the calendar datetime can represent.
        epoch = instant.timestamp()
    except (OverflowError, ValueError, OSError):
        epoch = math.inf
    if not MIN_EPOCH <= epoch < MAX_EPOCH:
        raise ValueError(f"timestamp out of range (must be {_TIMESTAMP_RANGE})")
    return instant


def zone_info(name: Any) -> ZoneInfo:
    """The IANA time zone called ``name``; ``ValueError`` for anything that is not one.

    Only names in the IANA database are looked up: ``ZoneInfo`` itself would also try to open
    paths such as ``Europe`` (a directory: ``IsADirectoryError``) or ``posixrules``.
    """
    if not isinstance(name, str) or name not in _zone_names():
        raise ValueError(f"unknown time zone {name!r}{_nearest_zone(name)} (use an IANA name such as Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - a damaged zone file is still "not a usable time zone"
        raise ValueError(f"time zone {name!r} cannot be loaded") from None


def _nearest_zone(name: Any) -> str:
    """``; did you mean 'Europe/Berlin'?`` for ``europe/berlin`` or ``Europe/Berlim``."""
    if not isinstance(name, str) or len(name) > 64:
        return ""
    names = sorted(_zone_names())
    exact = [n for n in names if n.lower() == name.lower()]
    close = exact or difflib.get_close_matches(name, names, n=1, cutoff=0.75) or _zones_of_city(name)
    return f"; did you mean {close[0]!r}?" if close else ""


@functools.cache
def _zones_by_city() -> dict[str, list[str]]:
    by_city: dict[str, list[str]] = {}
    for zone in sorted(_zone_names()):
        by_city.setdefault(zone.rsplit("/", 1)[-1].lower(), []).append(zone)
    return by_city


def _zones_of_city(name: str) -> list[str]:
    """``['Europe/Berlin']`` for ``Berlin``, ``['America/New_York']`` for ``new york``: people
    write the city; IANA names it after a region. Nothing when the city is in several zones."""
    zones = _zones_by_city().get(name.strip().replace(" ", "_").lower(), [])
    return zones if len(zones) == 1 else []


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def check_value(attribute: Attribute, value: Any) -> str | None:
    """Why ``value`` does not fit ``attribute``, or ``None``. Shared by context and lint."""
    try:
        _coerce(attribute, value)
    except ValueError as exc:
        return str(exc)
    return None


def _coerce(attribute: Attribute, value: Any) -> Any:
    kind = attribute.type
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_json_type(value)}")
        if len(value) > MAX_STRING:
            raise ValueError(f"string longer than {MAX_STRING} characters")
        if attribute.values is not None and value not in attribute.values:
            raise ValueError(f"{value!r} is not one of {', '.join(attribute.values)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {_json_type(value)}")
        return value
    if kind in ("int", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_json_type(value)}")
        if kind == "int" and not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if kind == "double":
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("expected a finite number")
        elif not -(2**63) <= value < 2**63:
            raise ValueError("integer out of the 64-bit range")
        if attribute.min is not None and value < attribute.min:
            raise ValueError(f"{value} is below the minimum {attribute.min:g}")
        if attribute.max is not None and value > attribute.max:
            raise ValueError(f"{value} is above the maximum {attribute.max:g}")
        return value
    if kind == "timestamp":
        return parse_timestamp(value)
    if kind == "list":
        if not isinstance(value, list):
            raise ValueError(f"expected a list of strings, got {_json_type(value)}")
        if len(value) > MAX_LIST:
            raise ValueError(f"list longer than {MAX_LIST} items")
        for item in value:
            if not isinstance(item, str) or len(item) > MAX_STRING:
                raise ValueError("expected a list of strings")
            if attribute.values is not None and item not in attribute.values:
                raise ValueError(f"{item!r} is not one of {', '.join(attribute.values)}")
        return value
    raise ValueError(f"unsupported attribute type {kind}")  # pragma: no cover - schema forbids it


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)


EXTRA_CHECKS: dict[str, Callable[[Any], None]] = {}

# Exactly the dotted quads ``ipaddress`` accepts (decimal octets 0-255, ASCII digits, no leading
# zeros). Parsing them by hand is ~5x faster than ``ipaddress.ip_address`` (about 5 µs here), which
# was a tenth of a decision; everything else (IPv6, malformed text) still goes through ipaddress.
_inet_aton = socket.inet_aton
_from_bytes = int.from_bytes
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


def parse_ip(text: str) -> tuple[int, int]:
    """``(version, integer value)`` of an IP address; IPv4-mapped IPv6 counts as IPv4.

    Raises ``ValueError`` for anything ``ipaddress.ip_address`` refuses.
    """
    if _IPV4.fullmatch(text):  # a dotted quad as ipaddress accepts it, which inet_aton reads alike everywhere
        return 4, _from_bytes(_inet_aton(text), "big")
    return _parse_other_ip(text)


@functools.lru_cache(maxsize=1024)
def _parse_other_ip(text: str) -> tuple[int, int]:
    """IPv6 (and every refusal) through ``ipaddress``: ~10 µs an address, so the last thousand
    are kept (a client keeps its address; at most ~1 MiB). Errors are not kept."""
    address = ipaddress.ip_address(text)
    if address.version == 6 and address.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        address = address.ipv4_mapped
    return address.version, int(address)


def _check_ip(value: str) -> None:
    try:
        parse_ip(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _check_country(value: str) -> None:
    if len(value) != 2 or not value.isascii() or not value.isalpha() or not value.isupper():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 code such as DE or US")


def _check_zone(value: str) -> None:
    zone_info(value)


EXTRA_CHECKS.update({"location.ip": _check_ip, "location.country": _check_country, "time.zone": _check_zone})


def value_checker(name: str, attribute: Attribute) -> Callable[[Any], Any]:
    """A function validating one attribute's value: returns it coerced or raises ValueError.

    The common, valid values take a short path specialised by type; anything unusual falls
    back to :func:`_coerce`, the single source of the rules and of the error messages.
    """
    extra = EXTRA_CHECKS.get(name)

    def slow(value: Any) -> Any:
        value = _coerce(attribute, value)
        if extra is not None:
            extra(value)
        return value

    kind, allowed = attribute.type, attribute.values
    if kind == "string" and allowed is None:
        if extra is None:
            def text(value: Any) -> Any:
                return value if type(value) is str and len(value) <= MAX_STRING else slow(value)
            return text

        def checked_text(value: Any) -> Any:
            if type(value) is str and len(value) <= MAX_STRING:
                extra(value)
                return value
            return slow(value)
        return checked_text
    if kind == "timestamp" and extra is None:
        return parse_timestamp  # what _coerce does for timestamps, without the dispatch
    if extra is not None:
        return slow
    if kind == "string" and allowed is not None:
        allowed_set = frozenset(allowed)  # every allowed value is at most MAX_STRING long (schema)

        def enum(value: Any) -> Any:
            return value if type(value) is str and value in allowed_set else slow(value)
        return enum
    if kind == "bool":
        def boolean(value: Any) -> Any:
            return value if value is True or value is False else slow(value)
        return boolean
    if kind == "double":
        # Finite bounds even without min/max, so that inf also takes the slow path (and is refused).
        low = -sys.float_info.max if attribute.min is None else attribute.min
        high = sys.float_info.max if attribute.max is None else attribute.max

        def double(value: Any) -> Any:
            if type(value) is float and low <= value <= high:  # NaN fails the comparison: slow path
                return value
            return slow(value)
        return double
    if kind == "list" and allowed is None:
        def strings(value: Any) -> Any:
            if type(value) is list and len(value) <= MAX_LIST:
                for item in value:
                    if type(item) is not str or len(item) > MAX_STRING:
                        return slow(value)
                return value
            return slow(value)
        return strings
    return slow


class ContextSchema:
    """Validates contexts for one policy and builds their activations. Immutable, thread-safe."""

    def __init__(self, attributes: Mapping[str, Attribute], default_zone: ZoneInfo,
                 zones: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]):
        self.attributes = dict(attributes)
        self.default_zone = default_zone
        # Zones as integer ranges: comparing ints is several times faster than `ip in network`.
        self._zones = tuple((net.version, int(net.network_address), int(net.broadcast_address), name)
                            for net, name in zones)
        self._zone_table = {version: _zone_ranges([z for z in self._zones if z[0] == version]) for version in (4, 6)}
        self._fields: dict[str, dict[str, Attribute]] = {}
        self._top: dict[str, Attribute] = {}
        for name, attribute in self.attributes.items():
            if "." in name:
                namespace, field = name.split(".", 1)
                self._fields.setdefault(namespace, {})[field] = attribute
            else:
                self._top[name] = attribute
        self._defaults = {ns: {f: a.default for f, a in fs.items() if a.default is not None and not a.derived}
                          for ns, fs in self._fields.items()}
        self._top_defaults = {n: a.default for n, a in self._top.items() if a.default is not None}
        self._required = [n for n, a in self.attributes.items() if a.required]
        # One checker per sendable attribute, built once: the hot path of a request.
        self._checks: dict[str, dict[str, Callable[[Any], Any]]] = {
            ns: {f: value_checker(f"{ns}.{f}", a) for f, a in fs.items() if not a.derived}
            for ns, fs in self._fields.items()}
        self._top_checks = {n: value_checker(n, a) for n, a in self._top.items() if not a.derived}
        # ZoneInfo() has its own cache, but a dict lookup is cheaper still; the names are those
        # already validated, and this dict only ever grows by IANA names (a bounded set).
        self._tz: dict[str, ZoneInfo] = {}

    def activation(self, context: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The CEL activation for ``context`` at ``now``; raises :class:`ContextError`."""
        if not isinstance(context, dict) and not isinstance(context, Mapping):  # dict: skip the ABC check
            raise ContextError([Problem("context-type", f"context must be an object, got {_json_type(context)}",
                                        path="context")])
        problems: list[Problem] = []
        out: dict[str, Any] = {ns: d.copy() for ns, d in self._defaults.items()}
        out.update(self._top_defaults)
        for key, value in context.items():
            checks = self._checks.get(key)
            if checks is not None:
                if not isinstance(value, dict) and not isinstance(value, Mapping):
                    problems.append(Problem("context-type", f"expected an object, got {_json_type(value)}", path=key))
                    continue
                target = out[key]
                for field, item in value.items():
                    check = checks.get(field)
                    if check is None:  # unknown or derived: _put says which
                        self._put(target, self._fields[key].get(field), f"{key}.{field}", field, item, problems)
                    elif item is not None:  # JSON null means "not known": the default, or absent
                        try:
                            target[field] = check(item)
                        except ValueError as exc:
                            problems.append(Problem("context-value", str(exc), path=f"{key}.{field}"))
            else:
                check = self._top_checks.get(key)
                if check is None:
                    self._put(out, self._top.get(key), key, key, value, problems)
                elif value is not None:
                    try:
                        out[key] = check(value)
                    except ValueError as exc:
                        problems.append(Problem("context-value", str(exc), path=key))
        refused = {problem.path for problem in problems}  # sent but refused: said once, not also "missing"
        for name in self._required:
            namespace, _, field = name.partition(".")
            missing = (field not in out.get(namespace, {})) if field else (name not in out)
            if missing and name not in refused and namespace not in refused:
                problems.append(Problem("context-missing", "required attribute is missing", path=name))
        if problems:
            raise ContextError(problems)
        self._derive(out, now)
        return out

    def _put(self, target: dict[str, Any], attribute: Attribute | None, name: str, field: str, value: Any,
             problems: list[Problem]) -> None:
        if attribute is None:
            problems.append(Problem("context-unknown-attribute", "not a declared attribute of this policy", path=name))
            return
        if attribute.derived:
            problems.append(Problem("context-derived-attribute", "is derived by ttlpolicy; do not send it", path=name))
            return
        if value is None:  # JSON null means "not known": the default, or absent
            return
        try:
            value = _coerce(attribute, value)
            extra = EXTRA_CHECKS.get(name)
            if extra is not None:
                extra(value)
        except ValueError as exc:
            problems.append(Problem("context-value", str(exc), path=name))
            return
        target[field] = value

    def _derive(self, out: dict[str, Any], now: datetime) -> None:
        time_ns = out.setdefault("time", {})
        zone_name = time_ns.get("zone")
        local = now.astimezone(self.time_zone(zone_name) if zone_name else self.default_zone)
        time_ns["now"] = now
        time_ns["hour"] = local.hour
        time_ns["minute"] = local.minute
        time_ns["weekday"] = WEEKDAYS[local.weekday()]
        time_ns["date"] = local.date().isoformat()
        location = out.setdefault("location", {})
        location["zone"] = self.zone_of(location.get("ip"))

    def time_zone(self, name: str) -> ZoneInfo:
        """The IANA zone ``name`` (already validated as one)."""
        return self._tz.get(name) or self._tz.setdefault(name, zone_info(name))

    @property
    def time_zones(self) -> Mapping[str, ZoneInfo]:
        """The IANA zones loaded so far by :meth:`time_zone`, by name (it only ever grows)."""
        return self._tz

    @property
    def has_zones(self) -> bool:
        return bool(self._zones)

    def zone_of(self, ip: str | None) -> str:
        if not ip or not self._zones:
            return NO_ZONE
        return self.ip_zone(ip)

    def ip_zone(self, ip: str) -> str:
        """The zone of the address ``ip``; ``ValueError`` for text that is not one (as the
        ``location.ip`` check): the generated program validates and places an address with one parse."""
        version, value = parse_ip(ip)
        starts, ends, names = self._zone_table[version]
        at = bisect.bisect_right(starts, value) - 1
        return names[at] if at >= 0 and value <= ends[at] else NO_ZONE


def _zone_ranges(zones: list[tuple[int, int, int, str]]) -> tuple[list[int], list[int], list[str]]:
    """Zones of one IP version as sorted ranges ``(starts, ends, names)``, for a lookup by
    bisection instead of a test per zone. They never overlap: the validator refuses two CIDRs
    that share an address (``zone-overlap``, within one zone too), and this refuses them again
    rather than let the bisection pick one silently."""
    ordered = sorted(zones, key=lambda zone: zone[1])
    for left, right in zip(ordered, ordered[1:]):
        if left[2] >= right[1]:
            raise ValueError(f"zones {left[3]!r} and {right[3]!r} overlap")
    return [z[1] for z in ordered], [z[2] for z in ordered], [z[3] for z in ordered]


# -- the declared attributes as JSON Schema (for the OpenAPI document and generated clients) -----

_FORMATS: dict[str, dict[str, Any]] = {
    "location.ip": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    "location.country": {"pattern": "^[A-Z]{2}$"},
}


def attribute_schema(name: str, attribute: Attribute) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one declared attribute, as :func:`_coerce` checks it.

    ``null`` is allowed everywhere: it means "not known" (the default applies).
    """
    kind = attribute.type
    schema: dict[str, Any]
    if kind == "string":
        schema = {"type": ["string", "null"], "maxLength": MAX_STRING, **_FORMATS.get(name, {})}
        if attribute.values is not None:
            schema = {"enum": [*attribute.values, None]}
    elif kind == "bool":
        schema = {"type": ["boolean", "null"]}
    elif kind in ("int", "double"):
        low, high = attribute.min, attribute.max
        if kind == "int":
            low = max(low, -(2**63)) if low is not None else -(2**63)
            high = min(high, 2**63 - 1) if high is not None else 2**63 - 1
        schema = {"type": ["integer" if kind == "int" else "number", "null"]}
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
    elif kind == "timestamp":
        schema = {"anyOf": [{"type": "string", "format": "date-time", "maxLength": 64},
                            {"type": "number", "minimum": MIN_EPOCH, "exclusiveMaximum": MAX_EPOCH},
                            {"type": "null"}],
                  "description": f"RFC 3339 with an offset, or epoch seconds; {_TIMESTAMP_RANGE}"}
    else:  # list
        items: dict[str, Any] = {"type": "string", "maxLength": MAX_STRING}
        if attribute.values is not None:
            items = {"enum": list(attribute.values)}
        schema = {"type": ["array", "null"], "maxItems": MAX_LIST, "items": items}
    if attribute.description:
        schema["description"] = attribute.description + (
            " " + schema["description"] if "description" in schema else "")
    if attribute.default is not None:
        schema["default"] = attribute.default
    return schema


def context_json_schema(attributes: Mapping[str, Attribute], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of a context for these declared attributes: what :meth:`ContextSchema.activation`
    accepts (undeclared and derived attributes refused), leaving out the namespaces in ``exclude``."""
    top: dict[str, Any] = {}
    required_top: list[str] = []
    for name, attribute in sorted(attributes.items()):
        namespace, _, field = name.partition(".")
        if attribute.derived or namespace in exclude:
            continue
        if not field:
            top[name] = attribute_schema(name, attribute)
            if attribute.required:
                required_top.append(name)
            continue
        section = top.setdefault(namespace, {"type": "object", "additionalProperties": False, "properties": {}})
        section["properties"][field] = attribute_schema(name, attribute)
        if attribute.required:
            section.setdefault("required", []).append(field)
            if namespace not in required_top:
                required_top.append(namespace)
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": top}
    if required_top:
        schema["required"] = required_top
    return schema
