"""Reading a decision context given on the command line (``decide``, ``eval``, ``heatmap``).

A context that cannot be read or parsed is one located problem: ``ctx.json:3:14:
error[context-json]: Expecting ',' delimiter`` with the line and a caret, like a policy error.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Iterable

from ..errors import Location, Problem

STDIN = "<stdin>"


class ContextInputError(Exception):
    """The context cannot be used; ``problem`` says why, ``sources`` holds the text it points into."""

    def __init__(self, problem: Problem, sources: dict[str, str] | None = None):
        super().__init__(problem.message)
        self.problem, self.sources = problem, sources or {}


def read_context(name: str, *, empty: str | None = None, require_object: bool = False) -> Any:
    """The JSON value in file ``name`` (``-``: stdin). ``empty``: the text to use when the input is
    empty or stdin is a terminal (``eval`` starts from ``{}``); ``require_object``: refuse anything
    but a JSON object here (``decide`` leaves that to the policy, which says which attribute)."""
    where = STDIN if name == "-" else name
    try:
        if name == "-":
            raw = empty if empty is not None and sys.stdin.isatty() else sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as stream:
                raw = stream.read()
    except OSError as exc:
        raise ContextInputError(Problem("io-error", f"cannot read context {name}: {exc.strerror or exc}")) from None
    except UnicodeDecodeError as exc:
        raise ContextInputError(Problem("io-error", f"cannot read context {name}: not UTF-8 ({exc.reason})")) from None
    if not raw and empty is not None:
        raw = empty
    try:
        context = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ContextInputError(Problem("context-json", f"context is not valid JSON: {exc.msg}",
                                        Location(where, exc.lineno, exc.colno)), {where: raw}) from None
    if require_object and not isinstance(context, dict):
        raise ContextInputError(Problem("context-type", f"the context must be a JSON object, not {_kind(context)}",
                                        path="context"))
    return context


def in_context(problems: Iterable[Problem]) -> list[Problem]:
    """Context problems at their path in the context (``context.user.risk``), as the CLI shows them."""
    return [dataclasses.replace(p, path=f"context.{p.path}" if p.path not in ("", "context") else "context")
            for p in problems]


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
