"""The bundled ``workforce`` policy (with its ``baseline``) hand-written in plain Python.

This is the practical speed limit: what an engineer would write in a login hook, with every
rule inlined and no policy engine at all. It takes the same raw context (JSON-shaped dict,
timestamps as RFC 3339 text) and the same decision instant as ttlpolicy, computes the same
derived attributes (hour and weekday in the time zone, network zone of the IP, session age) and
combines effects with the same semantics: factors multiply in canonical order (value, then rule
name), the highest floor, then the lowest cap, the tier ceiling, refresh idle timeout and
session cap, global limits, any deny wins.

It does *not* validate the context or build a trace: that is exactly the work ttlpolicy does on
top, and what the "≤ 5× hand-written" target allows for.

``prepare(context, now)`` is also the shared pre-processing for the engines that cannot derive
attributes themselves (Rego, Rust CEL): they all receive the same prepared input.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TZ = ZoneInfo("Europe/Berlin")
_TZ_CACHE: dict[str, ZoneInfo] = {}

# baseline.yaml: zones, tiers, defaults and limits, in seconds.
ZONES = tuple(
    (net.version, int(net.network_address), int(net.broadcast_address), name)
    for name, cidrs in (("corporate", ("10.0.0.0/8", "2001:db8:100::/48")), ("vpn", ("172.16.0.0/12",)),
                        ("partner", ("198.51.100.0/24",)))
    for net in map(ipaddress.ip_network, cidrs))
TIERS = {  # name: (access_ttl, refresh_ttl, max_access_ttl, max_refresh_ttl)
    "public": (7200, 30 * 86400, 8 * 3600, 90 * 86400),
    "standard": (3600, 14 * 86400, 4 * 3600, 30 * 86400),
    "healthcare": (1800, 12 * 3600, 3600, 86400),
    "finance": (900, 8 * 3600, 1800, 12 * 3600),
    "government": (600, 4 * 3600, 1200, 8 * 3600),
}
DEFAULT_ACCESS, DEFAULT_REFRESH = 3600, 14 * 86400
IDLE_TIMEOUT, MAX_SESSION = 7 * 86400, 30 * 86400
ACCESS_MIN, ACCESS_MAX, REFRESH_MIN, REFRESH_MAX = 60, 12 * 3600, 300, 90 * 86400


def zone_of(ip: str | None) -> str:
    if not ip:
        return "none"
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    version, value = address.version, int(address)
    for zone_version, start, end, name in ZONES:
        if zone_version == version and start <= value <= end:
            return name
    return "none"


def prepare(context: dict[str, Any], now: datetime, default_tz: ZoneInfo = DEFAULT_TZ) -> dict[str, Any]:
    """Defaults filled in and derived attributes computed; JSON-ready (times as epoch seconds)."""
    device = context.get("device", {})
    location = context.get("location", {})
    user = context.get("user", {})
    client = context.get("client", {})
    zone_name = context.get("time", {}).get("zone")
    tz = default_tz
    if zone_name:
        tz = _TZ_CACHE.get(zone_name) or _TZ_CACHE.setdefault(zone_name, ZoneInfo(zone_name))
    local = now.astimezone(tz)
    auth_time = user.get("auth_time")
    out_user = {"mfa": user.get("mfa", False), "risk": float(user.get("risk", 0.0)),
                "groups": user.get("groups", [])}
    if auth_time is not None:
        out_user["auth_time"] = int(datetime.fromisoformat(auth_time).timestamp())
    if "department" in user:
        out_user["department"] = user["department"]
    out_location = {"zone": zone_of(location.get("ip")),
                    "expected_countries": location.get("expected_countries", [])}
    if "country" in location:
        out_location["country"] = location["country"]
    out_client = {"binding": client.get("binding", "none")}
    if "type" in client:
        out_client["type"] = client["type"]
    out_device = {"trust": device.get("trust", "unmanaged")}
    if "platform" in device:
        out_device["platform"] = device["platform"]
    return {
        "tier": context.get("tier", "standard"),
        "device": out_device,
        "location": out_location,
        "time": {"now": int(now.timestamp()), "hour": local.hour, "weekday": WEEKDAYS[local.weekday()]},
        "resource": {"sensitivity": context.get("resource", {}).get("sensitivity", "internal")},
        "user": out_user,
        "client": out_client,
        "grant": {"type": context.get("grant", {}).get("type")},
    }


def _seconds(value: float) -> int:
    return int(math.floor(value + 1e-6))


def combine(i: dict[str, Any], matched: set[str], risk_factor: float) -> dict[str, Any]:
    """The combination of the workforce rules' effects, given which rules matched.

    Shared by the hand-written decision and the Rust-CEL engine (which evaluates only the
    conditions); written out rule by rule, as a person would.
    """
    tier = TIERS.get(i["tier"])
    access = float(tier[0] if tier else DEFAULT_ACCESS)
    refresh = float(tier[1] if tier else DEFAULT_REFRESH)
    af: list[tuple[float, str]] = []
    rf: list[tuple[float, str]] = []
    access_caps = [ACCESS_MAX]  # lowest wins; the global max is applied last anyway
    refresh_caps = [REFRESH_MAX]
    refresh_floor = 0
    rotation = False
    idle, session = IDLE_TIMEOUT, MAX_SESSION
    deny = step_up = False
    if "compromised-user" in matched:
        deny = True
    if "risk-scaling" in matched:
        af.append((risk_factor, "risk-scaling"))
        rf.append((risk_factor, "risk-scaling"))
    if "sender-constrained" in matched:
        af.append((2.0, "sender-constrained"))
        rf.append((1.5, "sender-constrained"))
    if "public-client-rotation" in matched:
        rotation = True
    if "unmanaged-device" in matched:
        af.append((0.5, "unmanaged-device"))
        access_caps.append(1800)
        refresh_caps.append(86400)
        rotation = True
        idle = min(idle, 8 * 3600)
    if "unrecognised-platform" in matched:
        access_caps.append(900)
        refresh_caps.append(8 * 3600)
    if "managed-device-with-mfa" in matched:
        af.append((1.5, "managed-device-with-mfa"))
        refresh_floor = max(refresh_floor, 86400)
    if "off-hours" in matched:
        af.append((0.5, "off-hours"))
        refresh_caps.append(12 * 3600)
    if "outside-corporate-network" in matched:
        refresh_caps.append(86400)
    if "unexpected-country" in matched:
        step_up = True
        access_caps.append(900)
        refresh_caps.append(3600)
    if "restricted-resource" in matched:
        access_caps.append(300)
        refresh_caps.append(0)  # no refresh token: a cap of 0 holds against any floor
    if "restricted-without-mfa" in matched:
        step_up = True
    if "confidential-resource" in matched:
        access_caps.append(1800)
    if "contractor" in matched:
        refresh_caps.append(10 * 3600)
        session = min(session, 7 * 86400)
    if "stale-authentication" in matched:
        step_up = True
    if "finance-admin-outside-office" in matched or "government-unmanaged" in matched:
        deny = True

    for factor, _ in sorted(af):
        access *= factor
    for factor, _ in sorted(rf):
        refresh *= factor
    a, r = _seconds(access), _seconds(refresh)
    r = max(r, refresh_floor)
    a, r = min(a, min(access_caps)), min(r, min(refresh_caps))
    if tier:
        a, r = min(a, tier[2]), min(r, tier[3])
    r = min(r, idle)
    auth_time = i["user"].get("auth_time")
    remaining = session if auth_time is None else session - (i["time"]["now"] - auth_time)
    if remaining <= 0:
        deny = True
    if 0 <= remaining < a:
        a = remaining
    if 0 <= remaining < r:
        r = remaining
    a = max(min(a, ACCESS_MAX), ACCESS_MIN)
    r = min(r, REFRESH_MAX)
    if r > 0:
        r = max(r, REFRESH_MIN)
    if deny:
        a = r = 0
    return {"allow": not deny, "access_ttl": a, "refresh_ttl": r, "step_up": step_up, "rotation": rotation,
            "idle_timeout": idle, "max_session": session}


def decide(context: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The workforce decision for a raw context, every rule inlined."""
    i = prepare(context, now)
    device, location, user = i["device"], i["location"], i["user"]
    trust, sensitivity, tier = device["trust"], i["resource"]["sensitivity"], i["tier"]
    hour, zone, risk = i["time"]["hour"], location["zone"], user["risk"]
    matched = set()
    if risk >= 0.9:
        matched.add("compromised-user")
    if risk > 0.0:
        matched.add("risk-scaling")
    if i["client"]["binding"] in ("mtls", "dpop"):
        matched.add("sender-constrained")
    if i["client"].get("type") == "public":
        matched.add("public-client-rotation")
    if trust == "unmanaged":
        matched.add("unmanaged-device")
    if device.get("platform") == "other":
        matched.add("unrecognised-platform")
    if trust in ("managed", "compliant") and user["mfa"]:
        matched.add("managed-device-with-mfa")
    if hour >= 22 or hour < 6 or i["time"]["weekday"] in ("sat", "sun"):
        matched.add("off-hours")
    if zone not in ("corporate", "vpn"):
        matched.add("outside-corporate-network")
    expected = location["expected_countries"]
    if "country" in location and expected and location["country"] not in expected:
        matched.add("unexpected-country")
    if sensitivity == "restricted":
        matched.add("restricted-resource")
        if not user["mfa"]:
            matched.add("restricted-without-mfa")
    if sensitivity == "confidential":
        matched.add("confidential-resource")
    if user.get("department") == "contractor" or "contractors" in user["groups"]:
        matched.add("contractor")
    if (i["grant"]["type"] == "refresh_token" and "auth_time" in user
            and i["time"]["now"] - user["auth_time"] > 72 * 3600):
        matched.add("stale-authentication")
    if tier == "finance" and "finance-admins" in user["groups"] and zone == "none":
        matched.add("finance-admin-outside-office")
    if tier == "government" and trust == "unmanaged":
        matched.add("government-unmanaged")
    return combine(i, matched, min(max(1.0 - risk, 0.25), 1.0))
