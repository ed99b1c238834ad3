"""The decide request, written once: :class:`DecideRequest` is both the validator every decide
request (single or inside a batch) passes and the source of the OpenAPI document's
``DecideRequest`` schema.

pydantic-core validates it in about a microsecond (strict: no coercion, unknown fields refused);
its errors become :class:`~ttlpolicy.errors.Problem` objects with the codes of
:data:`~ttlpolicy.errors.CODES` (``missing-field``, ``unknown-field``, ``invalid-field``,
``too-long``, ``invalid-type``) and messages that never echo a value (``subject_token`` is a
credential).

What the schema cannot say is checked after it, by the same validator: ``now`` must be an
instant in [1970, 9000) UTC that Python's calendar accepts (the schema says ``format:
date-time``, which JSON Schema validators need not assert).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Union

from pydantic import ConfigDict, Field, PlainValidator, StringConstraints, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails
from typing_extensions import NotRequired, TypedDict

from ..errors import Problem
from ..policyset import resolve_now
from .config import MAX_SUBJECT_TOKEN


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 timestamp (string)")
    return resolve_now(value)


class DecideRequest(TypedDict):
    """``POST /v1/decide`` (and each item of ``POST /v1/decide/batch``)."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    context: Annotated[dict[str, Any], Field(description="The request's risk context (declared attributes).")]
    policy: NotRequired[Annotated[str, Field(description="Policy name; default: the set's default policy.")]]
    now: NotRequired[Annotated[datetime, PlainValidator(_instant), WithJsonSchema(
        {"type": "string", "format": "date-time",
         "description": "Decision instant (RFC 3339, between 1970 and 9000 UTC); default: the current time."})]]
    explain: NotRequired[Annotated[bool, Field(description="Include every rule's outcome in `rules`.")]]
    subject_token: NotRequired[Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUBJECT_TOKEN), Field(
        description="The user's current JWT (access, ID or refresh token). Verified against "
                    "`subject_tokens.issuers` at the current time (never at `now`); its claims become the "
                    "context's `token` namespace, which the context itself may not carry. An invalid token is a "
                    "422 `invalid-subject-token` problem (not a 401: the caller's own credentials are fine).")]]


_ADAPTER: TypeAdapter[DecideRequest] = TypeAdapter(DecideRequest)
_MESSAGES = {  # pydantic's error type -> (our code, the message); the value itself is never quoted
    "missing": ("missing-field", "required"),
    "extra_forbidden": ("unknown-field", "unknown field"),
    "dict_type": ("invalid-field", "expected an object"),
    "string_type": ("invalid-field", "expected a string"),
    "bool_type": ("invalid-field", "expected a boolean (true or false)"),
    "string_too_short": ("invalid-field", "expected a non-empty string"),
}


def decide_request_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`DecideRequest`, as the OpenAPI document publishes it."""
    schema = _ADAPTER.json_schema()
    schema.pop("title", None)
    for spec in schema["properties"].values():
        spec.pop("title", None)
    return schema


def validate_decide_request(body: Any) -> Union[DecideRequest, list[Problem]]:
    """The request, validated (``now`` parsed to an aware datetime), or every problem found."""
    try:
        return _ADAPTER.validate_python(body)
    except ValidationError as exc:
        return [_problem(error) for error in exc.errors(include_url=False, include_input=False)]


def _problem(error: ErrorDetails) -> Problem:
    path = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if not path:
        return Problem("invalid-type", "a decide request is a JSON object", path="")
    if kind == "string_too_long":
        return Problem("too-long", f"longer than {error.get('ctx', {}).get('max_length')} characters", path=path)
    if kind == "value_error":
        return Problem("invalid-field", str(error.get("ctx", {}).get("error", error["msg"])), path=path)
    code, message = _MESSAGES.get(kind, ("invalid-field", error["msg"]))
    return Problem(code, message, path=path)
