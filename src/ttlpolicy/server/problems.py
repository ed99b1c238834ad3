"""RFC 9457 problem details: one function builds every error response the service sends.

Every problem has a stable ``type`` URI and ``code`` slug that clients may match on; ``title``
and ``detail`` are for people. Context problems list every offending field in ``errors``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import orjson
from starlette.responses import Response

from ..errors import Problem



class Refusal(Exception):
    """Raised inside a handler to answer with ``response`` (always a problem)."""

    def __init__(self, response: Response):
        self.response = response


PROBLEM_BASE = "https://ttlpolicy.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# code → (status, title). The titles never change between occurrences (RFC 9457 §3.1.3).
PROBLEMS: Mapping[str, tuple[int, str]] = {
    "invalid-json": (400, "Request body is not valid JSON"),
    "invalid-request": (400, "Request body does not have the expected shape"),
    "unauthorized": (401, "Missing or invalid credentials"),
    "insufficient-scope": (403, "Credentials lack the required scope"),
    "not-found": (404, "No such resource"),
    "unknown-policy": (404, "Unknown policy"),
    "method-not-allowed": (405, "Method not allowed"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "invalid-context": (422, "Context violates the declared attributes"),
    "invalid-subject-token": (422, "Subject token failed verification"),
    "subject-token-not-configured": (422, "Subject tokens are not accepted by this service"),
    "policy-load-failed": (422, "Policy set failed to load"),
    "invalid-revocation": (422, "Revocation request is not valid"),
    "invalid-emergency": (422, "Emergency request is not valid"),
    "rate-limited": (429, "Too many requests"),
    "state-unavailable": (503, "State store unavailable"),
    "decision-log-unavailable": (503, "Decision log unavailable"),
    "request-timeout": (408, "Request not received in time"),
    "headers-too-large": (431, "Request header fields too large"),
    "too-many-connections": (503, "Too many open connections"),
    "invalid-grid": (422, "The heat-map cannot be drawn"),
    "grid-too-large": (422, "The heat-map has too many cells"),
    "compute-time-exceeded": (422, "The computation took too long"),
    "invalid-source": (422, "The policy version cannot be read"),
    "text-too-large": (413, "Policy text too large"),
    "internal-error": (500, "Internal server error"),
}


def problem_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem object for ``code`` (also used inside batch results)."""
    status, title = PROBLEMS[code]
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status,
                            "detail": detail, "code": code}
    body.update(extra)
    return body


def problem(code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """An ``application/problem+json`` response for ``code``."""
    body = problem_body(code, detail, **extra)
    return Response(orjson.dumps(body), status_code=body["status"], headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def context_errors(problems: Iterable[Problem]) -> list[dict[str, str]]:
    """``[{path, code, message}]`` for every problem of a refused context."""
    return [{"path": p.path or "context", "code": p.code, "message": p.message} for p in problems]
