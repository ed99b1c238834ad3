"""The built-in context vocabulary: what a token issuer usually knows about a request.

A policy may redeclare any of these (to narrow the allowed values or set a default, never to
change the type: lint refuses that) and add its own under ``attributes:``. Derived attributes
are computed by ttlpolicy and refused in a request.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from .model import Attribute

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NO_ZONE = "none"  # location.zone when the IP is in no named zone (or no IP was sent)


def _a(type_: str, description: str, **kw: object) -> Attribute:
    return Attribute.model_validate({"type": type_, "description": description, **kw})


BUILTIN: Mapping[str, Attribute] = MappingProxyType({
    "tier": _a("string", "Sector tier of the tenant; its values are the policy's tiers."),
    "device.trust": _a("string", "How far the device is trusted.",
                       values=["managed", "compliant", "known", "unmanaged"], default="unmanaged"),
    "device.platform": _a("string", "Operating system family.",
                          values=["windows", "macos", "linux", "ios", "android", "chromeos", "other"]),
    "location.ip": _a("string", "Client IP address (IPv4 or IPv6); location.zone is derived from it."),
    "location.country": _a("string", "ISO 3166-1 alpha-2 country code, upper case."),
    "location.zone": _a("string", "Named network zone of location.ip, or \"none\".", derived=True),
    "time.zone": _a("string", "IANA time zone overriding the policy's, e.g. Europe/Berlin."),
    "time.now": _a("timestamp", "The decision instant.", derived=True),
    "time.hour": _a("int", "Hour of day (0-23) in the time zone.", derived=True, min=0, max=23),
    "time.minute": _a("int", "Minute of the hour (0-59) in the time zone.", derived=True, min=0, max=59),
    "time.weekday": _a("string", "Day of the week in the time zone.", derived=True, values=list(WEEKDAYS)),
    "time.date": _a("string", "Calendar date (YYYY-MM-DD) in the time zone.", derived=True),
    "resource.sensitivity": _a("string", "Classification of the requested resource.",
                               values=["public", "internal", "confidential", "restricted"], default="internal"),
    "resource.audience": _a("string", "Audience (resource server) the token is for."),
    "user.id": _a("string", "Subject identifier."),
    "user.groups": _a("list", "Groups the user belongs to.", default=[]),
    "user.mfa": _a("bool", "The user authenticated with a second factor.", default=False),
    "user.risk": _a("double", "Risk score from 0 (none) to 1 (certain compromise).", min=0, max=1, default=0.0),
    "user.auth_time": _a("timestamp", "When the user last authenticated (RFC 3339 or epoch seconds)."),
    "client.id": _a("string", "OAuth client identifier."),
    "client.type": _a("string", "OAuth client type.", values=["public", "confidential"]),
    "client.binding": _a("string", "Sender constraint of the token: mTLS (RFC 8705), DPoP (RFC 9449) or none.",
                         values=["mtls", "dpop", "none"], default="none"),
    "grant.type": _a("string", "OAuth grant being served.",
                     values=["authorization_code", "refresh_token", "client_credentials",
                             "device_code", "token_exchange", "password"]),
    # Claims of the caller's current token (``subject_token``), set only from a token that
    # ttlpolicy verified; the service refuses a request that sends them in the context.
    "token.sub": _a("string", "Subject of the verified subject token."),
    "token.client_id": _a("string", "Client the subject token was issued to."),
    "token.scope": _a("list", "Scopes of the subject token.", default=[]),
    "token.amr": _a("list", "Authentication methods (RFC 8176), e.g. pwd, otp, hwk, mfa.", default=[]),
    "token.acr": _a("string", "Authentication context class reference."),
    "token.auth_time": _a("timestamp", "When the user authenticated, from the token."),
    "token.iat": _a("timestamp", "When the subject token was issued."),
    "token.exp": _a("timestamp", "When the subject token expires."),
    "token.session_exp": _a("timestamp", "Absolute end of the session the token belongs to."),
    "token.binding": _a("string", "Sender constraint of the subject token, from its cnf claim "
                        "(x5t#S256: mtls, jkt: dpop).", values=["mtls", "dpop", "none"], default="none"),
    # Activity of the user (user.id) and the client (client.id) before this request, computed by
    # the service from its state store over sliding windows. No defaults: when the store cannot
    # answer they are absent, and a condition reading them fails safe. The service refuses a
    # request that sends them; tests and the library may set them directly.
    **{name: _a(kind, description, min=0) if kind == "int" else _a(kind, description)
       for name, (kind, description) in {
        "activity.refreshes_1h": ("int", "Refreshes (token.refreshed events) of this user in the last hour."),
        "activity.failed_auth_15m": ("int", "Failed authentications (auth.failed) of this user in the last "
                                            "15 minutes."),
        "activity.refresh_failures_1h": ("int", "Refused refreshes (refresh.failed) of this user in the last hour."),
        "activity.bad_signatures_1h": ("int", "Tokens of this user presented with a bad signature in the last hour."),
        "activity.sessions": ("int", "Sessions of this user with activity in the last day and no logout."),
        "activity.ips_24h": ("int", "Distinct IP addresses of this user in the last day."),
        "activity.countries_24h": ("int", "Distinct countries of this user in the last day."),
        "activity.new_country": ("bool", "location.country was not seen for this user in the last 90 days."),
        "activity.idle_seconds": ("int", "Seconds since this user's previous activity (absent: none known)."),
        "activity.client_refreshes_1h": ("int", "Refreshes by this client (client.id) in the last hour."),
        "activity.client_failed_auth_15m": ("int", "Failed authentications at this client in the last 15 minutes."),
    }.items()},
})
ACTIVITY = tuple(name for name in BUILTIN if name.startswith("activity."))
