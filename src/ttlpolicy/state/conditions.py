"""CEL conditions of the state layer (emergency scopes, rate-limit conditions and keys).

They are written in the policy's own typed CEL and checked against the policy's declared
attributes exactly as rule conditions are, with the same parser, type checker and native
compiler; only the place an error is reported differs (an API field or a policy line).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..cel.parse import CelIssue, CelSyntaxError, parse
from ..cel.typecheck import check
from ..model import Attribute

Program = Callable[[Mapping[str, Any]], Any]


def compile_condition(text: str, attributes: Mapping[str, Attribute], expect: str = "bool",
                      ) -> tuple[Program | None, list[CelIssue]]:
    """``(program, [])`` or ``(None, issues)``; issue lines and columns are within ``text``.

    ``expect``: ``bool`` for a condition, ``key`` for a rate-limit key part (a string, int or
    bool value: a double would split one caller across keys by rounding)."""
    from ..cel.native import UnsupportedExpression, compile_expression

    try:
        tree = parse(text)
    except CelSyntaxError as exc:
        return None, [exc.issue]
    result = check(tree, attributes)
    issues = list(result.issues)
    kind = result.type.kind
    if not issues and expect == "bool" and kind not in ("bool", "dyn"):
        issues.append(CelIssue("cel-not-boolean", f"a condition must be bool, but this is {result.type}", 1, 1))
    if not issues and expect == "key" and kind not in ("string", "int", "uint", "bool", "dyn"):
        issues.append(CelIssue("cel-type-mismatch",
                               f"a key must be a string, an int or a bool, but this is {result.type}", 1, 1))
    if issues:
        return None, issues
    try:
        return compile_expression(tree), []
    except UnsupportedExpression as exc:
        return None, [CelIssue("cel-unsupported", exc.message, exc.line, exc.column)]


def holds(program: Program, activation: Mapping[str, Any]) -> bool | None:
    """True/False, or None when the condition cannot be evaluated (the caller fails safe)."""
    try:
        result = program(activation)
    except Exception:  # noqa: BLE001 - any failure of a condition is an evaluation error (fail safe)
        return None
    return result if isinstance(result, bool) else None
