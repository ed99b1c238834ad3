"""The playground API's part of the OpenAPI document (added when ``ui.enabled``).

Shapes and bounds come from the same settings the handlers in :mod:`.ui` enforce, so the
document says exactly which requests are accepted and what each refusal looks like.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .openapi_parts import ok, problem, ref


def playground_paths(settings: Settings, document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(paths, schemas)`` of the playground API, secured like the document's other routes."""
    limits = settings.ui
    security = document["paths"]["/v1/policies"]["get"]["security"]
    auth = {"401": problem("Missing or invalid credentials."),
            "403": problem("The credentials lack the required scope.")}
    if "401" in document["paths"]["/v1/policies"]["get"]["responses"]:  # keep the documented challenge header
        auth = {k: document["paths"]["/v1/policies"]["get"]["responses"][k] for k in ("401", "403")}
    body_errors = {"400": problem("Not JSON, or not the expected shape (`errors` lists each field)."),
                   "413": problem("`body-too-large`, or `text-too-large`: more policy text than "
                                   f"ui.max_text_bytes ({limits.max_text_bytes} bytes, all files together)."),
                   "415": problem("Content-Type is not application/json.")}
    slow = problem(f"`compute-time-exceeded`: longer than ui.max_seconds ({limits.max_seconds:g}s); "
                    "`policy-load-failed`: the version does not load (`problems` lists each at its line); "
                    "`invalid-source`: a git revision that cannot be read; `invalid-context`: the fixed context or "
                    "the context violates the declared attributes; `invalid-grid`: an axis the policy cannot draw "
                    f"(`errors`); `grid-too-large`: more than ui.max_cells ({limits.max_cells}) cells.")

    def op(summary: str, success: dict[str, Any], body: str | None, extra: dict[str, Any] | None = None
           ) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "security": security,
                               "responses": {"200": success, **auth, **(extra or {})}, "tags": ["playground"]}
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
            out["responses"].update(body_errors)
        return out

    unknown = {"404": problem("Unknown policy.")}
    paths = {
        "/v1/playground/policies": {"get": op(
            "The served set for the playground: files, attributes, rules with lines, git revisions (scope: decide "
            "or admin)", ok("The served set.", "PlaygroundSet"), None)},
        "/v1/playground/lint": {"post": op(
            "Lint a version of the policy set; 200 with `ok: false` and the problems when it does not load",
            ok("Every problem, at its file, line and column, with its code.", "LintResult"), "LintRequest",
            {"422": slow})},
        "/v1/playground/decide": {"post": op(
            "One explained decision by a version of the set (nothing is served, logged or counted)",
            ok("The decision with every rule's outcome.", "PlaygroundDecision"), "PlaygroundDecideRequest",
            {**unknown, "422": slow})},
        "/v1/playground/grid": {"post": op(
            "A heat-map: decide every combination of two attributes, the rest fixed",
            ok("Axes, colour scales and every cell's decision.", "Grid"), "GridRequest", {**unknown, "422": slow})},
        "/v1/playground/diff": {"post": op(
            "A change map of two versions over two attributes, and the groups of `ttlpolicy diff`",
            ok("The change map and the diff report.", "GridDiff"), "GridDiffRequest", {**unknown, "422": slow})},
    }
    files = {"type": "object", "minProperties": 1, "maxProperties": 32,
             "propertyNames": {"pattern": r"\.ya?ml$", "maxLength": 256}, "additionalProperties": {"type": "string"}}
    version: dict[str, Any] = {
        "description": "A version of the policy set: {} is the served one; `files` replaces or adds files of the "
                       "served set (`overlay: false`: only these files); `git` reads the policy directory at a "
                       "revision.",
        "type": "object", "additionalProperties": False,
        "properties": {
            "files": files,
            "overlay": {"type": "boolean", "default": True},
            "git": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9._/~^@{}-]{0,99}$"},
        },
    }
    axis = {"oneOf": [{"type": "string", "description": "an attribute with a fixed set of values, e.g. time.hour"},
                      {"type": "object", "required": ["attribute"], "additionalProperties": False,
                       "properties": {"attribute": {"type": "string"},
                                      "values": {"type": "array", "minItems": 1,
                                                 "items": {"type": ["string", "number", "boolean"]}}}}]}
    grid_fields = {"policy": {"type": "string"}, "x": axis, "y": axis,
                   "fixed": {"type": "object", "description": "the context every cell shares"},
                   "now": {"type": "string", "format": "date-time",
                           "description": "the instant before time axes move it (default: Wednesday 2025-01-08 "
                                          "12:30 in the policy's time zone)"}}
    problem_list = {"type": "array", "items": ref("PolicyProblem")}
    decision = dict(document["components"]["schemas"]["Decision"])
    decision["required"] = [k for k in decision.get("required", []) if k not in ("decision_id", "policy_set")]
    decision["description"] = ("A decision as POST /v1/decide gives it, but a what-if: no decision_id, not logged, "
                               "not counted.")
    schemas = {
        "PlaygroundDecision": decision,
        "PlaygroundVersion": version,
        "LintRequest": {"type": "object", "required": ["files"], "additionalProperties": False,
                        "properties": {"files": files, "overlay": {"type": "boolean"}}},
        "LintResult": {"type": "object", "required": ["ok", "problems", "policies"],
                       "properties": {"ok": {"type": "boolean"}, "problems": problem_list,
                                      "digest": {"type": ["string", "null"]},
                                      "policies": {"type": "array", "items": ref("PlaygroundPolicy")}}},
        "PlaygroundDecideRequest": {
            "type": "object", "required": ["context"], "additionalProperties": False,
            "properties": {"version": ref("PlaygroundVersion"), "policy": {"type": "string"},
                           "context": {"type": "object"}, "now": {"type": "string", "format": "date-time"}}},
        "GridRequest": {"type": "object", "required": ["x", "y"], "additionalProperties": False,
                        "properties": {"version": ref("PlaygroundVersion"), **grid_fields}},
        "GridDiffRequest": {"type": "object", "required": ["x", "y"], "additionalProperties": False,
                            "properties": {"base": ref("PlaygroundVersion"), "head": ref("PlaygroundVersion"),
                                           **grid_fields}},
        "GridAxis": {"type": "object", "required": ["attribute", "values", "labels"],
                     "properties": {"attribute": {"type": "string"}, "values": {"type": "array"},
                                    "labels": {"type": "array", "items": {"type": "string"}}}},
        "Grid": {"type": "object", "required": ["policy", "x", "y", "legend", "cells", "seconds"],
                 "properties": {
                     "policy": {"type": "object"}, "x": ref("GridAxis"), "y": ref("GridAxis"),
                     "legend": {"type": "object", "description": "per lifetime: low, high, gradient stops and "
                                                                 "ticks labelled in durations"},
                     "cells": {"type": "array", "maxItems": limits.max_cells, "items": {
                         "type": "object", "required": ["x", "y", "context", "now", "colors"],
                         "properties": {"x": {"type": "integer"}, "y": {"type": "integer"},
                                        "context": {"type": "object"}, "now": {"type": "string"},
                                        "decision": ref("PlaygroundDecision"),
                                        "refused": {"type": "array", "items": ref("FieldError")},
                                        "colors": {"type": "object"}}}},
                     "seconds": {"type": "number"}}},
        "GridDiff": {"type": "object", "required": ["map", "report", "base_digest", "head_digest"],
                     "properties": {"map": {"type": "object", "required": ["x", "y", "cells", "changed", "legend"],
                                            "description": "cells carry base and head outcomes, the kinds of "
                                                           "change and a colour per lifetime"},
                                    "report": {"type": "object",
                                               "description": "as `ttlpolicy diff --format json`"},
                                    "base_digest": {"type": "string"}, "head_digest": {"type": "string"}}},
        "PlaygroundPolicy": {"type": "object", "required": ["name", "attributes", "dimensions", "rules"],
                             "properties": {"name": {"type": "string"}, "attributes": {"type": "array"},
                                            "dimensions": {"type": "array", "items": {"type": "string"}},
                                            "rules": {"type": "array"}}},
        "PlaygroundSet": {"type": "object", "required": ["digest", "default", "policies", "files", "git", "limits"],
                          "properties": {"digest": {"type": "string"}, "default": {"type": "string"},
                                         "policies": {"type": "array", "items": ref("PlaygroundPolicy")},
                                         "files": {"type": "array"}, "git": {"type": "array"},
                                         "limits": {"type": "object"}}},
    }
    return paths, schemas
