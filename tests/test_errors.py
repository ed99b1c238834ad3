"""Every error code, at its exact line and column, as golden text and as JSON.

Golden files live in tests/golden/errors/: ``X.yaml`` (or a directory ``X/``) and the
rendered problems in ``X.txt``. Regenerate after an intended change with
``TTLPOLICY_UPDATE_GOLDEN=1 pytest tests/test_errors.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ttlpolicy import PolicyError, load_sources
from ttlpolicy.errors import CODES, HTTP_PROBLEMS, codes_table, http_problems_table

GOLDEN = Path(__file__).parent / "golden" / "errors"
INPUTS = sorted(p for p in GOLDEN.iterdir() if p.suffix == ".yaml" or p.is_dir())
# Codes that need inputs a golden text file cannot hold; each is tested where named.
ELSEWHERE = {
    "io-error": "test_load.py", "no-policies": "test_load.py", "file-too-large": "test_load.py",
    "file-encoding": "test_load.py", "yaml-too-many-nodes": "test_load.py", "yaml-key": "below",
    "condition-never-true": "test_analysis.py", "condition-always-true": "test_analysis.py",
    "effect-never-applies": "test_analysis.py", "loosening-rule": "test_analysis.py",
    "allow-unused": "test_analysis.py", "cel-too-deep": "test_cel_depth.py",
    "no-tests": "test_testing.py", "test-file": "test_testing.py",
    "set-changing": "test_server_reload.py", "manifest-mismatch": "test_server_reload.py",
    **{code: "test_bundle.py" for code in ("manifest-invalid", "signature-missing", "signature-invalid",
                                            "set-tests-failed", "bundle-invalid", "bundle-fetch-failed",
                                            "bundle-rollback")},
    # the fields of HTTP requests: test_api_problem_codes_are_registered_and_documented (below) finds
    # each in the code that answers with it; the tests of each endpoint send them
    **{code: "test_server_*.py" for code in ("invalid-type", "missing-field", "unknown-field", "invalid-field",
                                              "too-long", "too-many-items", "out-of-range", "duplicate-id",
                                              "unknown-policy")},
    **{code: "test_heatmap.py" for code in ("unknown-attribute", "values-required", "invalid-value",
                                             "compute-time-exceeded")},
    # the command line's own problems: a command line for each in test_cli_problems.py
    **{code: "test_cli_problems.py" for code in ("usage", "policy-load-failed", "unknown-rule", "file-exists",
                                                  "fmt-changes-meaning", "replay-record", "invalid-key",
                                                  "state-url", "missing-dependency", "invalid-settings",
                                                  "insecure-bind", "service-unreachable")},
    "report-skipped-line": "test_report.py", "git-error": "test_cli_teaching.py",
    "auth-disabled": "test_server_process.py",
}
CONTEXT_CODES = {code for code in CODES if code.startswith("context-")}  # tests/cases and test_context.py


def _problems(path: Path) -> PolicyError:
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    sources = {str(f.relative_to(GOLDEN)): f.read_bytes() for f in files}
    with pytest.raises(PolicyError) as info:
        load_sources(sources)
    return info.value


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_golden_text(path: Path) -> None:
    rendered = _problems(path).render() + "\n"
    golden = path.with_suffix(".txt") if path.suffix else path.parent / f"{path.name}.txt"
    if os.environ.get("TTLPOLICY_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_every_code_is_covered() -> None:
    emitted = {p.code for path in INPUTS for p in _problems(path).problems}
    assert emitted <= set(CODES), emitted - set(CODES)
    assert set(CODES) - emitted - set(ELSEWHERE) - CONTEXT_CODES == set()


def test_complex_mapping_key() -> None:
    error = _load_error("apiVersion: ttlpolicy/v1\n? [a, b]\n: 1\n")
    assert [(p.code, p.location.line, p.location.column) for p in error.problems] == [("yaml-key", 2, 3)]


def test_json_rendering_is_stable() -> None:
    error = _problems(GOLDEN / "cel.yaml")
    data = json.loads(json.dumps(error.to_dict()))
    first = data["problems"][0]
    assert first == {
        "code": "cel-enum-value", "severity": "error", "path": "rules.0.when",
        "message": "\"manged\" is not a value of device.trust (allowed: managed, compliant, known, unmanaged); "
                   "did you mean 'managed'?",
        "location": {"file": "cel.yaml", "line": 10, "column": 27},
    }


def test_problems_are_sorted_by_location() -> None:
    problems = _problems(GOLDEN / "semantic.yaml").problems
    keys = [(p.location.file, p.location.line, p.location.column) for p in problems]
    assert keys == sorted(keys)


def _load_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_sources({"inline.yaml": text})
    return info.value


def test_docs_list_every_code() -> None:
    """docs/errors.md's table is generated from the registry (TTLPOLICY_UPDATE_GOLDEN=1 rewrites it)."""
    path = Path(__file__).parent.parent / "docs" / "errors.md"
    docs = path.read_text()
    start = docs.index("| code |")
    end = docs.index("\n\n", start) + 1 if "\n\n" in docs[start:] else len(docs)
    if os.environ.get("TTLPOLICY_UPDATE_GOLDEN"):
        docs = docs[:start] + codes_table() + docs[end:]
        path.write_text(docs)
    assert docs[start:end] == codes_table()
    assert [line.split("`")[1] for line in docs.splitlines() if line.startswith("| `")] == list(CODES)


def test_docs_list_every_http_problem() -> None:
    """docs/errors.md's HTTP problems table is generated from HTTP_PROBLEMS (TTLPOLICY_UPDATE_GOLDEN=1 rewrites it)."""
    path = Path(__file__).parent.parent / "docs" / "errors.md"
    docs = path.read_text()
    start = docs.index("| status | code |")
    end = docs.index("\n\n", start) + 1 if "\n\n" in docs[start:] else len(docs)
    if os.environ.get("TTLPOLICY_UPDATE_GOLDEN"):
        docs = docs[:start] + http_problems_table() + docs[end:]
        path.write_text(docs)
    assert docs[start:end] == http_problems_table()


SOURCE = Path(__file__).parent.parent / "src" / "ttlpolicy"
# Where a problem code is written in the code: problem("code", ...), problem_body("code", ...),
# Problem.field(path, "code", ...), Problem("code", ...), a "code": "..." entry, and the codes that
# the request model and the auth module choose from their own tables.
_CODE_SITES = (re.compile(r'\bproblem(?:_body)?\(\s*"([a-z0-9-]+)"'),
               re.compile(r'Problem\.field\([^,()]+(?:\([^()]*\))?[^,()]*,\s*"([a-z0-9-]+)"'),
               re.compile(r'\bProblem\(\s*"([a-z0-9-]+)"'),
               re.compile(r'"code":\s*"([a-z0-9-]+)"'),
               re.compile(r'\bcode = "([a-z0-9-]+)" if [^\n]* else "([a-z0-9-]+)"'))


def test_api_problem_codes_are_registered_and_documented() -> None:
    """Every code the service answers with, or lists in a problem's ``errors``, is in the registry
    (HTTP_PROBLEMS for a problem, CODES for a field) and so in docs/errors.md's generated tables."""
    found: dict[str, set[str]] = {}
    for module in [*sorted((SOURCE / "server").glob("*.py")), SOURCE / "heatmap.py", SOURCE / "activity" / "events.py",
                   SOURCE / "state" / "emergency.py", SOURCE / "state" / "revocation.py"]:
        text = module.read_text()
        for pattern in _CODE_SITES:
            for match in pattern.findall(text):
                for code in (match,) if isinstance(match, str) else match:
                    found.setdefault(code, set()).add(module.name)
    from ttlpolicy.server.request_model import _MESSAGES  # pydantic's error types -> our codes

    for code, _ in _MESSAGES.values():
        found.setdefault(code, set()).add("request_model.py")
    for expected in ("invalid-field", "unknown-field", "too-many-items", "invalid-request", "invalid-subject-token",
                     "duplicate-id", "context-forbidden-attribute", "unauthorized", "insufficient-scope"):
        assert expected in found, f"{expected} not found: the patterns no longer see where codes are written"
    unregistered = {code: where for code, where in found.items() if code not in HTTP_PROBLEMS and code not in CODES}
    assert not unregistered, f"problem codes not in ttlpolicy.errors: {unregistered}"
    docs = (Path(__file__).parent.parent / "docs" / "errors.md").read_text()
    assert all(f"`{code}`" in docs for code in found)


def test_every_problem_body_is_built_from_the_registry() -> None:
    from ttlpolicy.errors import Problem
    from ttlpolicy.server.problems import problem_body

    body = problem_body("invalid-request", "now: bad", errors=[Problem.field("now", "invalid-field", "bad")])
    assert body == {"type": "https://ttlpolicy.dev/problems/invalid-request", "title": HTTP_PROBLEMS["invalid-request"][1],
                    "status": 400, "detail": "now: bad", "code": "invalid-request",
                    "errors": [{"path": "now", "code": "invalid-field", "message": "bad"}]}
    with pytest.raises(KeyError):
        problem_body("no-such-problem", "x")


def test_the_exception_message_leads_with_an_error_not_a_warning() -> None:
    head = "apiVersion: ttlpolicy/v1\nname: {}\ndefaults: {{access_ttl: 1h, refresh_ttl: 1d}}\nrules:\n"
    loosening = "default: true\n" + head.format("a") + "  - {name: a, when: user.mfa, access_ttl: {multiply: 2}}\n"
    broken = head.format("b") + "  - {name: b, when: user.mfa}\n"
    with pytest.raises(PolicyError) as info:
        load_sources({"a.yaml": loosening, "b.yaml": broken})
    error = info.value
    assert [p.code for p in error.problems] == ["loosening-rule", "rule-no-effect"]  # sorted by file
    assert [p.code for p in error.errors] == ["rule-no-effect"]
    assert str(error).startswith("b.yaml:5:") and "rule-no-effect" in str(error)
    assert error.problems[0].location is not None and error.problems[0].location.file == "a.yaml"
