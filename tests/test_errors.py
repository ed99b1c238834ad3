"""Every error code, at its exact line and column, as golden text and as JSON.

Golden files live in tests/golden/errors/: ``X.yaml`` (or a directory ``X/``) and the
rendered problems in ``X.txt``. Regenerate after an intended change with
``TTLPOLICY_UPDATE_GOLDEN=1 pytest tests/test_errors.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ttlpolicy import PolicyError, load_sources
from ttlpolicy.errors import CODES, codes_table

GOLDEN = Path(__file__).parent / "golden" / "errors"
INPUTS = sorted(p for p in GOLDEN.iterdir() if p.suffix == ".yaml" or p.is_dir())
# Codes that need inputs a golden text file cannot hold; each is tested where named.
ELSEWHERE = {
    "io-error": "test_load.py", "no-policies": "test_load.py", "file-too-large": "test_load.py",
    "file-encoding": "test_load.py", "yaml-too-many-nodes": "test_load.py", "yaml-key": "below",
    "condition-never-true": "test_analysis.py", "condition-always-true": "test_analysis.py",
    "effect-never-applies": "test_analysis.py", "loosening-rule": "test_analysis.py",
    "allow-unused": "test_analysis.py",
    "no-tests": "test_testing.py", "test-file": "test_testing.py",
    "set-changing": "test_server_reload.py", "manifest-mismatch": "test_server_reload.py",
    **{code: "test_bundle.py" for code in ("manifest-invalid", "signature-missing", "signature-invalid",
                                            "set-tests-failed", "bundle-invalid", "bundle-fetch-failed",
                                            "bundle-rollback")},
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
