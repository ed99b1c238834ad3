"""The pieces every part of the OpenAPI document is written with: a schema reference, a JSON
response, a problem response (the service's, the state endpoints' and the playground's)."""

from __future__ import annotations

from typing import Any

SCHEMAS = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/problem+json": {"schema": ref("Problem")}}}
    if headers:
        out["headers"] = headers
    return out


def ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}
