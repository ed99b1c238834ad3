"""CI formats of ``ttlpolicy lint``: GitHub workflow commands and SARIF 2.1.0.

Both render the same :class:`~ttlpolicy.errors.Problem` list as the text and JSON formats,
so a problem has one code, one message and one location everywhere.

>>> from ttlpolicy.errors import Location, Problem
>>> print(github([Problem("cel-syntax", "unexpected ')'", Location("p.yaml", 3, 9))], {}), end="")
::error file=p.yaml,line=3,col=9,title=cel-syntax::unexpected ')'
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any, Mapping
from urllib.parse import quote

from .. import __version__
from ..errors import Problem, sorted_problems

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def _escape_data(text: str) -> str:
    # Workflow commands end at a newline; GitHub decodes these escapes in the message.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(problems: list[Problem], sources: Mapping[str, Any]) -> str:
    """One ``::error``/``::warning`` workflow command per problem, annotated on the PR diff."""
    lines = []
    for problem in sorted_problems(problems):
        props = []
        loc = problem.location
        if loc is not None and loc.file:
            props.append(f"file={_escape_property(PurePath(loc.file).as_posix())}")
            if loc.line:
                props.append(f"line={loc.line}")
                if loc.column:
                    props.append(f"col={loc.column}")
        props.append(f"title={_escape_property(problem.code)}")
        level = {"error": "error", "warning": "warning"}.get(problem.severity, "notice")
        lines.append(f"::{level} {','.join(props)}::{_escape_data(problem.message)}")
    return "".join(line + "\n" for line in lines)


def sarif(problems: list[Problem], sources: Mapping[str, Any]) -> str:
    """A SARIF 2.1.0 log with one rule per problem code (for GitHub code scanning and others)."""
    problems = sorted_problems(problems)
    codes = sorted({p.code for p in problems})
    index = {code: i for i, code in enumerate(codes)}
    rules = [{"id": code, "name": code, "shortDescription": {"text": code.replace("-", " ")},
              "defaultConfiguration": {"level": _level(next(p for p in problems if p.code == code))}}
             for code in codes]
    results = [_result(p, index[p.code]) for p in problems]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ttlpolicy", "version": __version__, "semanticVersion": __version__,
                                "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


def _level(problem: Problem) -> str:
    return {"error": "error", "warning": "warning"}.get(problem.severity, "note")


def _result(problem: Problem, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {"ruleId": problem.code, "ruleIndex": rule_index, "level": _level(problem),
                              "message": {"text": problem.message}}
    loc = problem.location
    if loc is not None and loc.file:
        physical: dict[str, Any] = {"artifactLocation": {"uri": quote(PurePath(loc.file).as_posix())}}
        if loc.line:
            physical["region"] = {"startLine": loc.line, "startColumn": max(loc.column, 1)}
        location: dict[str, Any] = {"physicalLocation": physical}
        if problem.path:
            location["logicalLocations"] = [{"fullyQualifiedName": problem.path, "kind": "member"}]
        result["locations"] = [location]
    return result


FORMATS = {"github": github, "sarif": sarif}
