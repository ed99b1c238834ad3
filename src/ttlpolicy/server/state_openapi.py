"""The OpenAPI description of the state endpoints (see :mod:`.state_api`), merged into the
service's document by :func:`.openapi.openapi_document`."""

from __future__ import annotations

from typing import Any, Callable

from .openapi_parts import ok, problem, ref

_INSTANT = {"type": "string", "format": "date-time"}
_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}}

RATE_LIMITED = problem("`rate-limited`: the API caller exceeded its rate (state.callers).", _RETRY)
UNAVAILABLE = problem("`state-unavailable`: the state store cannot answer; nothing was changed.", _RETRY)

SCHEMAS: dict[str, Any] = {
    "RevocationRequest": {
        "type": "object", "required": ["kind", "reason"], "additionalProperties": False,
        "properties": {
            "kind": {"enum": ["token", "family", "subject", "client", "tenant", "all"]},
            "value": {"type": "string", "minLength": 1, "maxLength": 512,
                      "description": "jti, sid, sub, client id or tenant; absent for kind all"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500},
            "issued_before": {**_INSTANT, "description": "revoke what was issued up to here (default: now)"},
            "expires_at": {**_INSTANT, "description": "for a token: its exp"},
        },
    },
    "Revocation": {
        "type": "object", "required": ["id", "kind", "value", "reason", "created_by", "created_at", "status"],
        "properties": {
            "id": {"type": "string"}, "kind": {"type": "string"}, "value": {"type": ["string", "null"]},
            "issued_before": {"type": ["string", "null"]}, "reason": {"type": "string"},
            "created_by": {"type": "string"}, "created_at": _INSTANT, "expires_at": _INSTANT,
            "status": {"enum": ["active", "lifted"]}, "lifted_at": {"type": ["string", "null"]},
            "lifted_by": {"type": ["string", "null"]}, "lift_reason": {"type": ["string", "null"]},
            "created": {"type": "boolean", "description": "false when it already existed (idempotent)"},
        },
    },
    "RevocationList": {
        "type": "object", "required": ["revocations"],
        "properties": {"revocations": {"type": "array", "items": ref("Revocation")},
                       "next_cursor": {"type": ["string", "null"]}},
    },
    "TokenCheck": {
        "type": "object", "required": ["active"],
        "description": "RFC 7662-shaped: active, plus the token's iss, sub, client_id, exp, iat, jti, sid, scope; "
                       "or active false with a reason.",
        "properties": {"active": {"type": "boolean"}, "reason": {"type": "string"},
                       "revocation": {"type": "object"}},
    },
    "EmergencyRequest": {
        "type": "object", "required": ["scope", "reason"], "additionalProperties": False,
        "properties": {
            "scope": {"type": "string", "minLength": 1, "maxLength": 2000,
                      "description": "CEL over the declared attributes, e.g. tier == \"finance\""},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500},
            "duration": {"type": "string", "description": "how long (e.g. 24h); or give ends_at"},
            "ends_at": _INSTANT,
            "policies": {"type": "array", "items": {"type": "string"}},
            "access_ttl": {"type": "string", "description": "ceiling, e.g. 5m"},
            "refresh_ttl": {"type": "string", "description": "ceiling; 0s turns refresh off"},
            "deny": {"type": "string"}, "step_up": {"type": "string"},
        },
    },
    "Emergency": {
        "type": "object", "required": ["id", "scope", "reason", "starts_at", "ends_at", "status", "effects"],
        "properties": {"id": {"type": "string"}, "scope": {"type": "string"}, "reason": {"type": "string"},
                       "starts_at": _INSTANT, "ends_at": _INSTANT, "status": {"enum": ["active", "ended"]},
                       "effects": {"type": "string"}},
    },
    "EmergencyList": {
        "type": "object", "required": ["emergencies"],
        "properties": {"emergencies": {"type": "array", "items": ref("Emergency")}, "state": {"type": "object"}},
    },
}

# What the state layer may add to a decision.
DECISION_PROPERTIES: dict[str, Any] = {
    "rate_limits": {"type": "array", "description": "Rate limits this decision counted against.",
                    "items": {"type": "object", "required": ["name", "key", "rate", "counts", "exceeded"]}},
    "retry_after": {"type": ["integer", "null"], "description": "Seconds until an exceeded limit has room."},
    "emergencies": {"type": "array", "description": "Emergency ceilings that applied.",
                    "items": {"type": "object", "required": ["id", "reason", "ends_at", "effects"]}},
    "state": {"const": "degraded", "description": "Present when the state store could not answer."},
}


READY_STATE: dict[str, Any] = {
    "type": "object", "required": ["status", "reason", "since", "store", "backend"],
    "description": "The state store: ok, or degraded (with the reason and since when).",
    "properties": {"status": {"enum": ["ok", "degraded"]}, "reason": {"type": ["string", "null"]},
                   "since": {"type": ["string", "null"]}, "store": {"type": "string"},
                   "backend": {"enum": ["sqlite", "redis"]}},
}


def paths(op: Callable[..., dict[str, Any]], body_responses: dict[str, Any]) -> dict[str, Any]:
    """The state endpoints; ``op`` is the document's operation builder (adds auth responses)."""
    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
    return {
        "/v1/revocations": {
            "post": op("Revoke one, or up to 1,000 at once (scope: revoke or admin)", {
                "200": ok("Already revoked (idempotent).", "Revocation"),
                "201": ok("Revoked. A bulk request answers {\"revocations\": [...]}.", "Revocation"),
                **body_responses, "422": problem("`invalid-revocation`: see `errors`; nothing was revoked."),
                "503": UNAVAILABLE}, body="RevocationRequest"),
            "get": op("List revocations, newest first (scope: revoke or admin)", {
                "200": ok("One page; pass next_cursor as cursor for the next.", "RevocationList"),
                "400": problem("An unknown or invalid query parameter."), "503": UNAVAILABLE},
                parameters=[{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                            for n in ("kind", "value", "status", "limit", "cursor")]),
        },
        "/v1/revocations/{id}": {
            "get": op("One revocation (scope: revoke or admin)", {
                "200": ok("The revocation.", "Revocation"), "404": problem("No such revocation."),
                "503": UNAVAILABLE}, parameters=id_param),
            "delete": op("Lift a revocation, audited (scope: revoke or admin)", {
                "200": ok("Lifted (idempotent).", "Revocation"), "400": problem("Reason too long."),
                "404": problem("No such revocation."), "503": UNAVAILABLE},
                parameters=[*id_param, {"name": "reason", "in": "query", "required": False,
                                        "schema": {"type": "string", "maxLength": 500}}]),
        },
        "/v1/tokens/check": {"post": op("Is this token still good? RFC 7662-shaped (scope: decide, revoke or admin)", {
            "200": ok("active true, or false with a reason.", "TokenCheck"),
            "400": problem("Not a check request (see `errors`)."), "413": body_responses["413"],
            "415": problem("Send application/x-www-form-urlencoded or JSON."),
            "422": problem("`subject-token-not-configured`: no issuer to verify a token; send its claims."),
            "503": problem("`state-unavailable`: the store cannot answer, so the token cannot be vouched for.",
                            _RETRY)})},
        "/v1/emergencies": {
            "post": op("Start an emergency ceiling (scope: admin)", {
                "201": ok("Started.", "Emergency"), **body_responses,
                "422": problem("`invalid-emergency`: see `errors` (a scope error has line and column)."),
                "503": UNAVAILABLE}, body="EmergencyRequest"),
            "get": op("List emergencies (scope: revoke or admin)", {
                "200": ok("Emergencies.", "EmergencyList"), "400": problem("Unknown status.")},
                parameters=[{"name": "status", "in": "query", "required": False,
                             "schema": {"enum": ["active", "ended", "all"]}}]),
        },
        "/v1/emergencies/{id}": {
            "get": op("One emergency (scope: revoke or admin)", {
                "200": ok("The emergency.", "Emergency"), "404": problem("No such emergency."),
                "503": UNAVAILABLE}, parameters=id_param),
            "delete": op("End an emergency early (scope: admin)", {
                "200": ok("Ended (idempotent).", "Emergency"), "404": problem("No such emergency."),
                "503": UNAVAILABLE}, parameters=id_param),
        },
    }
