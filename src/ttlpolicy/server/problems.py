"""RFC 9457 problem details: one function builds every error response the service sends.

Every problem has a stable ``type`` URI and ``code`` slug (registered, with its status and
title, in :data:`ttlpolicy.errors.HTTP_PROBLEMS`) that clients may match on; ``title`` and
``detail`` are for people. ``errors`` lists every offending field as a
:class:`~ttlpolicy.errors.Problem` with a code of :data:`ttlpolicy.errors.CODES`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import orjson
from starlette.responses import Response

from ..errors import HTTP_PROBLEMS, Problem



class Refusal(Exception):
    """Raised inside a handler to answer with ``response`` (always a problem)."""

    def __init__(self, response: Response):
        self.response = response


PROBLEM_BASE = "https://ttlpolicy.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

def problem_body(code: str, detail: str, errors: Iterable[Problem] | None = None, status: int | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The problem object for ``code``, a code of :data:`~ttlpolicy.errors.HTTP_PROBLEMS` (also
    used inside batch results); ``errors`` lists each offending field, rendered by
    :meth:`Problem.field_error`; ``status`` only for ``http-error``, whose status varies."""
    registered, title = HTTP_PROBLEMS[code]
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status or registered,
                            "detail": detail, "code": code}
    if errors is not None:
        body["errors"] = [e.field_error() for e in errors]
    body.update(extra)
    return body


def problem(code: str, detail: str, headers: Mapping[str, str] | None = None,
            errors: Iterable[Problem] | None = None, **extra: Any) -> Response:
    """An ``application/problem+json`` response for ``code``."""
    body = problem_body(code, detail, errors, **extra)
    return Response(orjson.dumps(body), status_code=body["status"], headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def context_errors(problems: Iterable[Problem]) -> list[Problem]:
    """Every problem of a refused context, located under ``context`` when it has no path."""
    return [p if p.path else Problem.field("context", p.code, p.message) for p in problems]
