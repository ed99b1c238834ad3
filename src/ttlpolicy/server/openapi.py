"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

It describes what the server really does, status code by status code, so a schema-driven
fuzzer (schemathesis) can check every response against it. Built once per app: the batch
limit, the body limit and whether credentials are required come from the settings.
"""

from __future__ import annotations

from typing import Any

from .. import PolicySet, __version__
from ..context import context_json_schema
from ..decision import RULE_OUTCOME_SCHEMA, STEP_SCHEMA, decision_schema
from . import state_openapi
from .config import Settings
from .openapi_parts import ok, problem, ref
from .request_model import decide_request_schema


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


_CHALLENGE = {"WWW-Authenticate": {"description": 'RFC 6750 challenge, e.g. Bearer realm="ttlpolicy", '
                                                  'error="invalid_token", error_description="token expired"',
                                   "required": True, "schema": {"type": "string", "pattern": "^Bearer realm="}}}
_AUTH_RESPONSES = {"401": problem("Missing or invalid credentials.", _CHALLENGE),
                   "403": problem("The credentials lack the required scope.", _CHALLENGE)}
_BODY_RESPONSES = {"400": problem("Body is not valid JSON, or not the expected shape (see `errors`)."),
                   "413": problem("Body larger than the configured limit."),
                   "415": problem("Content-Type is not application/json.")}

_AUDIT_RESPONSES = {"503": problem("`decision-log-unavailable`: the decision log cannot be written and "
                                     "`decision_log.on_failure` is refuse; retry after `Retry-After`.")}

def _service_decision() -> dict[str, Any]:
    """The decision's own fields (decision.FIELDS), plus what the service adds to each."""
    schema = decision_schema()
    schema["properties"]["decision_id"] = {"type": "string", "format": "uuid"}
    schema["properties"]["policy_set"] = {
        "type": "object", "required": ["digest"], "description": "digest of the whole set that made this decision",
        "properties": {"digest": {"type": "string"},
                       "revision": {"type": "string", "description": "the bundle's (or manifest's) revision, when "
                                    "the set has one"}}}
    schema["required"] += ["decision_id", "policy_set"]
    return schema


_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details. `code` is a stable slug; `errors` lists every offending field.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": ref("FieldError")},
            "problems": {"type": "array", "items": ref("PolicyProblem")},
            "policy": {"type": "string"},
            "known": {"type": "array", "items": {"type": "string"}},
            "digest": {"type": "string"},
            "max_bytes": {"type": "integer"},
            "reason": {"type": "string", "description": "invalid-subject-token: why the token was refused "
                                                        "(expired, not_yet_valid, signature, unknown_issuer, "
                                                        "audience, algorithm, unknown_key, malformed, "
                                                        "missing_claim, claim_type, token_type, revoked)"},
        },
    },
    "FieldError": {
        "type": "object", "required": ["path", "code", "message"],
        "properties": {"path": {"type": "string", "description": "e.g. user.risk (context) or now (request)"},
                       "code": {"type": "string", "description": "one of the codes in docs/errors.md"},
                       "message": {"type": "string"},
                       "line": {"type": "integer", "description": "in a text the request sent (a CEL scope)"},
                       "column": {"type": "integer"}},
    },
    "PolicyProblem": {
        "type": "object", "required": ["code", "severity", "message"],
        "properties": {
            "code": {"type": "string"}, "severity": {"enum": ["error", "warning", "note"]}, "message": {"type": "string"},
            "path": {"type": "string"},
            "location": {"type": "object", "required": ["file", "line", "column"],
                         "properties": {"file": {"type": "string"}, "line": {"type": "integer"},
                                        "column": {"type": "integer"}}},
        },
    },
    "DecideRequest": decide_request_schema(),  # written once, as the validator's model
    "RuleOutcome": dict(RULE_OUTCOME_SCHEMA),
    "Step": dict(STEP_SCHEMA),
    "Decision": _service_decision(),
    "BatchResult": {
        "oneOf": [
            {"type": "object", "required": ["status", "decision"], "additionalProperties": False,
             "properties": {"status": {"const": 200}, "decision": ref("Decision")}},
            {"type": "object", "required": ["status", "problem"], "additionalProperties": False,
             "properties": {"status": {"type": "integer", "minimum": 400, "maximum": 499},
                            "problem": ref("Problem")}},
        ],
    },
    "BatchResponse": {
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": ref("BatchResult")}},
    },
    "PolicySummary": {
        "type": "object", "required": ["name", "digest", "description", "files", "rules", "default", "loaded_at"],
        "properties": {"name": {"type": "string"}, "digest": {"type": "string"}, "description": {"type": "string"},
                       "files": {"type": "array", "items": {"type": "string"}},
                       "rules": {"type": "integer", "description": "number of rules, inherited ones included"},
                       "default": {"type": "boolean"}, "loaded_at": {"type": "string", "format": "date-time"}},
    },
    "PolicyList": {
        "type": "object", "required": ["default", "digest", "loaded_at", "policies"],
        "properties": {"default": {"type": "string"}, "digest": {"type": "string"},
                       "loaded_at": {"type": "string", "format": "date-time"},
                       "policies": {"type": "array", "items": ref("PolicySummary")}},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object", "required": ["status", "digest", "loaded_at", "error"],
        "properties": {
            "status": {"enum": ["ready", "degraded", "unavailable"]}, "digest": {"type": "string"},
            "decision_log": {"type": "object", "required": ["status", "lost"],
                             "description": "failing: lines cannot be written (error says why); lost counts "
                                            "the lines that never reached the sink",
                             "properties": {"status": {"enum": ["ok", "failing", "off"]},
                                            "sink": {"type": "string"}, "lost": {"type": "integer", "minimum": 0},
                                            "error": _nullable("string"),
                                            "failing_since": _nullable("string")}},
            "loaded_at": {"type": "string", "format": "date-time"},
            "error": {"oneOf": [{"type": "null"}, {
                "type": "object", "required": ["detail", "problems"],
                "properties": {"detail": {"type": "string"},
                               "problems": {"type": "array", "items": ref("PolicyProblem")}}}]},
            "reasons": {"type": "array", "items": {"type": "string"}, "description": "why the status is degraded"},
            "revision": _nullable("string"),
            "source": {"type": "object", "description": "where sets come from: a directory or a bundle (with "
                       "its last fetch)"},
            "watcher": {"type": "object", "description": "the file watcher or bundle poller: status, restarts, "
                        "error"},
            "disk": {"type": "object", "description": "the last comparison of the files on disk with the served "
                     "set: in_sync, digest, checked_at"},
        },
    },
    "ReloadResult": {
        "type": "object", "required": ["status", "digest", "loaded_at"],
        "properties": {"status": {"enum": ["reloaded", "unchanged"]}, "digest": {"type": "string"},
                       "loaded_at": {"type": "string", "format": "date-time"}},
    },
}


# The context may not carry these namespaces: `token` comes only from a verified subject_token,
# `activity` only from the service's state store.
_SERVICE_NAMESPACES = ("token", "activity")


def policy_schemas(policies: PolicySet, request: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``Context.<policy>`` (generated from the policy's declared attributes) and
    ``DecideRequest.<policy>`` for every policy of the set, and the references to the latter."""
    schemas: dict[str, Any] = {}
    refs: list[dict[str, str]] = []
    for compiled in policies:
        name = compiled.name
        context = context_json_schema(compiled.context.attributes, exclude=_SERVICE_NAMESPACES)
        context["description"] = (f"The context of policy {name}: its declared attributes (derived ones, "
                                  "token.* and activity.* are never sent). null means not known.")
        schemas[f"Context.{name}"] = context
        default = name == policies.default
        schemas[f"DecideRequest.{name}"] = {
            **request,
            "description": f"A decide request for policy {name}" + (" (the default policy)" if default else ""),
            "required": ["context"] if default else ["context", "policy"],
            "properties": {**request["properties"], "context": ref(f"Context.{name}"),
                           "policy": {"const": name}},
        }
        refs.append(ref(f"DecideRequest.{name}"))
    return schemas, refs


def openapi_document(settings: Settings, policies: PolicySet | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API as configured by ``settings``.

    With ``policies``, the decide request is described per policy, its ``context`` by the
    policy's declared attributes; without, ``context`` is any object.
    """
    secured = settings.auth.enabled
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}] if secured else []
    schemas = dict(_SCHEMAS)
    if not settings.subject_tokens.issuers:
        # Advertise subject_token only where the service accepts it, so that every request
        # the document allows is one the service can decide.
        request = schemas["DecideRequest"]
        properties = {k: v for k, v in request["properties"].items() if k != "subject_token"}
        schemas["DecideRequest"] = {**request, "properties": properties}
    schemas["EventBatch"] = {
        "type": "object", "required": ["events"], "additionalProperties": False,
        "properties": {"events": {"type": "array", "maxItems": settings.activity.max_events, "items": {
            "type": "object", "required": ["id", "type"], "additionalProperties": False,
            "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 128},
                           "type": {"enum": ["token.issued", "token.refreshed", "refresh.failed", "auth.failed",
                                             "token.bad_signature", "logout"]},
                           "time": {"type": "string", "description": "RFC 3339; default: when received"},
                           **{k: {"type": "string", "minLength": 1, "maxLength": n} for k, n in (
                               ("subject", 256), ("client", 256), ("tenant", 256), ("session", 256),
                               ("token_id", 256), ("reason", 128), ("ip", 64), ("country", 2))}}}}}}
    schemas["EventsAccepted"] = {"type": "object", "required": ["accepted", "duplicates", "detections"], "properties": {
        "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
        "detections": {"type": "array", "items": {"type": "object"}}}}
    schemas["Action"] = {"type": "object", "required": ["id", "kind", "per", "key", "cause", "evidence"], "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["disable_refresh", "step_up", "revoke_family", "revoke_subject",
                                                    "emergency"]},
        "per": {"enum": ["subject", "client"]}, "key": {"type": "string"}, "cause": {"type": "string"},
        "evidence": {"type": "object"}, "created_at": {"type": "number"}, "until": {"type": "number"},
        "undone_at": {"type": ["number", "null"]}, "undone_by": {"type": ["string", "null"]},
        "refs": {"type": "array", "items": {"type": "string"}}}}
    schemas["ActionList"] = {"type": "object", "required": ["actions"],
                             "properties": {"actions": {"type": "array", "items": ref("Action")}}}
    decide_body: dict[str, Any] = ref("DecideRequest")
    if policies is not None:
        per_policy, refs = policy_schemas(policies, schemas["DecideRequest"])
        schemas.update(per_policy)
        decide_body = {"oneOf": refs} if len(refs) > 1 else refs[0]
    schemas["BatchRequest"] = {
        "type": "object", "required": ["requests"], "additionalProperties": False,
        "properties": {"requests": {"type": "array", "maxItems": settings.limits.max_batch,
                                    "description": "Decide requests (see DecideRequest.<policy>); each is checked "
                                                   "on its own and answered in order, with a decision or a "
                                                   "problem.",
                                    "items": {}}},
    }

    def op(summary: str, responses: dict[str, Any], body: str | dict[str, Any] | None = None, auth: bool = True,
           **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
        if body is not None:
            schema = ref(body) if isinstance(body, str) else body
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        if auth:
            out["responses"] = {**responses, **_AUTH_RESPONSES}
            out["security"] = security
        else:
            out["security"] = []
        return out

    name_param = [{"name": "name", "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}]
    metrics_auth = settings.auth.metrics_require_auth
    paths = {
        "/v1/decide": {"post": op("Decide token lifetimes for one context (scope: decide)", {
            "200": ok("The decision.", "Decision"), **_BODY_RESPONSES, **_AUDIT_RESPONSES,
            "404": problem("Unknown policy."),
            "422": problem("`invalid-context`: the context violates the declared attributes (or sends `token`); "
                            "`invalid-subject-token`: the subject token failed verification (`reason` says why; "
                            "422 rather than 401, because the caller's credentials are not what failed); "
                            "`subject-token-not-configured`: no subject-token issuer is configured.")},
            body=decide_body)},
        "/v1/decide/batch": {"post": op("Decide many contexts in order (scope: decide)", {
            "200": ok("One result per request, in order.", "BatchResponse"), **_BODY_RESPONSES, **_AUDIT_RESPONSES},
            body="BatchRequest")},
        "/v1/policies": {"get": op("The loaded policies (scope: decide or admin)", {
            "200": ok("Every policy of the serving set.", "PolicyList")})},
        "/v1/policies/{name}": {"get": op("One loaded policy (scope: decide or admin)", {
            "200": ok("The policy.", "PolicySummary"), "404": problem("Unknown policy.")},
            parameters=name_param)},
        "/v1/reload": {"post": op("Reload the policy directory now (scope: admin)", {
            "200": ok("The set now being served.", "ReloadResult"),
            "422": problem("The new set failed to load (see `problems`); the last good set is still served.")})},
        "/healthz": {"get": op("Liveness", {"200": ok("The process is alive.", "Health")}, auth=False)},
        "/readyz": {"get": op("Readiness: 200 while a set is served; status degraded after a failed reload", {
            "200": ok("Ready or degraded (still serving the last good set).", "Ready"),
            "503": ok("Unavailable: the decision log fails and `decision_log.on_failure` is refuse.", "Ready")},
            auth=False)},
        "/metrics": {"get": op("Prometheus metrics", {
            "200": {"description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}, auth=metrics_auth)},
        "/v1/events": {"post": op("Report issuer events, batched and idempotent by id (scope: decide or admin)", {
            "200": ok("How many were new, how many were already counted, and the detectors that fired.",
                       "EventsAccepted"), **_BODY_RESPONSES,
            "503": problem("The state store did not answer; nothing was recorded (retry: idempotent).",
                            {"Retry-After": {"schema": {"type": "string"}}})}, body="EventBatch")},
        "/v1/security-events": {"post": op(
            "Push one Security Event Token (RFC 8417/8935; CAEP, RISC) from a configured transmitter "
            "(scope: decide or admin)", {
                "202": {"description": "Verified and applied."},
                "400": problem("Refused, nothing applied; RFC 8935 `err` and `description` in the body."),
                "422": problem("No transmitter is configured (`err`: access_denied)."),
                "415": problem("Content-Type is not application/secevent+jwt."),
                "503": problem("The state store did not answer; nothing applied (the transmitter may retry).")},
            requestBody={"required": True, "content": {"application/secevent+jwt": {"schema": {"type": "string"}}}})},
        "/v1/actions": {"get": op("Automatic actions of detectors and security events, with evidence (scope: admin)", {
            "200": ok("The actions, newest first.", "ActionList"),
            "400": problem("Unknown or bad query parameter."),
            "503": problem("The state store did not answer.")},
            parameters=[{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                        for n in ("subject", "client")]
            + [{"name": "active", "in": "query", "required": False, "schema": {"enum": ["true", "false"]}}])},
        "/v1/actions/{id}": {"delete": op("Undo an automatic action now (scope: admin)", {
            "200": ok("The action, with undone_at and undone_by.", "Action"),
            "404": problem("No such action."), "503": problem("The state store did not answer.")},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/openapi.json": {"get": op("This document", {
            "200": {"description": "OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}, auth=False)},
        **state_openapi.paths(op, _BODY_RESPONSES),
    }
    # A caller over its rate (state.callers) is refused before its body is read.
    for route in ("/v1/decide", "/v1/decide/batch"):
        paths[route]["post"]["responses"]["429"] = state_openapi.RATE_LIMITED
    schemas.update(state_openapi.SCHEMAS)
    decision = schemas["Decision"]
    schemas["Decision"] = {**decision, "properties": {**decision["properties"], **state_openapi.DECISION_PROPERTIES}}
    ready = schemas["Ready"]
    schemas["Ready"] = {**ready, "properties": {**ready["properties"], "state": state_openapi.READY_STATE}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ttlpolicy decision service", "version": __version__,
                 "description": "Adaptive access- and refresh-token lifetimes. Errors are RFC 9457 problems "
                                "(application/problem+json). Request bodies are limited to "
                                f"{settings.limits.max_body_bytes} bytes."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
