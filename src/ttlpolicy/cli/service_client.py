"""A small client for the service's state endpoints, shared by ``revoke``, ``revocations`` and
``emergency``: these commands act on a running service (so every change is authorised, audited
and seen by every replica), not on the store directly.

``--url`` (default ``$TTLPOLICY_URL`` or ``http://127.0.0.1:8080``) and ``--api-key`` (default
``$TTLPOLICY_API_KEY``; a key with the ``revoke`` or ``admin`` scope).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from ..errors import Location, Problem
from .output import report, write_json


class ServiceError(Exception):
    """The service answered with a problem (``status`` >= 400) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, body: Any):
        super().__init__(str(body))
        self.status, self.body = status, body


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("TTLPOLICY_URL", "http://127.0.0.1:8080"),
                        help="the service (default: $TTLPOLICY_URL or http://127.0.0.1:8080)")
    parser.add_argument("--api-key", default=os.environ.get("TTLPOLICY_API_KEY"),
                        help="API key with the revoke or admin scope (default: $TTLPOLICY_API_KEY)")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text (default, for people) or json (the API's answer)")


def call(args: argparse.Namespace, method: str, path: str, body: Any = None,
         query: dict[str, str | None] | None = None) -> Any:
    url = args.url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    headers = {"accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if args.api_key:
        headers["x-api-key"] = args.api_key
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the URL is the operator's
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {"status": exc.code, "detail": raw.decode(errors="replace")[:500]}
        raise ServiceError(exc.code, problem) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(0, {"detail": f"cannot reach {args.url}: {reason}"}) from None


def report_problem(args: argparse.Namespace, exc: ServiceError) -> int:
    """Report what the service answered (or that it could not be reached): exit 2 when unreachable
    or unauthorised, else 1."""
    report(service_problems(exc))
    return 2 if exc.status in (0, 401, 403) else 1


def service_problems(exc: ServiceError) -> list[Problem]:
    """The service's RFC 9457 problem as CLI problems: the problem itself under its own code (one of
    HTTP_PROBLEMS: ``unauthorized``, ``invalid-emergency`` ...), then each offending field at its
    path (``scope:1:9`` inside a CEL scope); ``service-unreachable`` when there was no answer."""
    body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {"detail": str(exc.body)}
    detail = str(body.get("detail") or body.get("title") or f"HTTP {exc.status}")
    if exc.status == 0:
        return [Problem("service-unreachable", detail)]
    problems = [Problem(str(body.get("code") or "http-error"), detail)]
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        where = str(error.get("path") or "body")
        location = Location(where, int(error["line"]), int(error.get("column", 0))) if "line" in error else None
        problems.append(Problem(str(error.get("code") or "invalid-field"), str(error.get("message", "")), location,
                                path=where))
    return problems


def show_entries(args: argparse.Namespace, name: str, entries: list[dict[str, Any]],
                 line: Callable[[dict[str, Any]], str]) -> int:
    """A listing (``revocations``, ``emergencies``): ``{name: entries}`` as JSON, else a line each."""
    if args.format == "json":
        write_json({name: entries})
    elif not entries:
        print(f"no {name}")
    else:
        for entry in entries:
            print(line(entry))
    return 0
