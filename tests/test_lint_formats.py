"""``ttlpolicy lint --format github|sarif``: exact positions, escaping, and a schema-valid SARIF log."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ttlpolicy.cli.lint_formats import github, sarif
from ttlpolicy.cli.main import main
from ttlpolicy.errors import Location, Problem

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())

BAD = """\
apiVersion: ttlpolicy/v1
name: x
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - name: a
    when: device.trust == "manged"
    access_ttl: {cap: 5m}
"""
# A second policy that loads, so that lint reports its warning next to the other's error.
WARN = BAD.replace("name: x", "name: y\ndefault: true").replace('"manged"', '"managed"').replace(
    "cap: 5m", "multiply: 2")


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "warn.yaml").write_text(WARN)
    return tmp_path


def test_github_lines_and_columns_are_exact(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(bad), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"::error file={bad / 'bad.yaml'},line=6,col=27,title=cel-enum-value::\"manged\" is not a value of device.trust "
        "(allowed: managed, compliant, known, unmanaged); did you mean 'managed'?",
        f"::warning file={bad / 'warn.yaml'},line=8,col=28,title=loosening-rule::rule 'a' multiplies access_ttl by 2: tokens "
        "it matches live longer",
    ]


def test_github_escapes_newlines_percent_and_property_separators() -> None:
    problem = Problem("c", "50% of\nthe text", Location("dir,a:b/p.yaml", 3, 4), "warning")
    assert github([problem], {}) == "::warning file=dir%2Ca%3Ab/p.yaml,line=3,col=4,title=c::50%25 of%0Athe text\n"
    whole_file = Problem("io-error", "no such file", Location("p.yaml"))
    assert github([whole_file], {}) == "::error file=p.yaml,title=io-error::no such file\n"


def test_sarif_is_valid_and_located(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(bad), "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["cel-enum-value", "loosening-rule"]
    error, warning = run["results"]
    assert error["ruleId"] == "cel-enum-value" and error["level"] == "error"
    assert rules[error["ruleIndex"]]["id"] == error["ruleId"]
    region = error["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 6, "startColumn": 27}
    assert warning["level"] == "warning" and warning["ruleId"] == "loosening-rule"
    assert warning["locations"][0]["physicalLocation"]["region"] == {"startLine": 8, "startColumn": 28}


def test_sarif_without_problems_and_without_positions_is_valid() -> None:
    empty = json.loads(sarif([], {}))
    jsonschema.Draft4Validator(SCHEMA).validate(empty)
    assert empty["runs"][0]["results"] == []
    log = json.loads(sarif([Problem("io-error", "gone", Location("a dir/p.yaml"))], {}))
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    physical = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert physical == {"artifactLocation": {"uri": "a%20dir/p.yaml"}}


def test_the_schema_rejects_what_it_should() -> None:
    # Guard against a vacuous schema: a result without a message is not SARIF.
    log = json.loads(sarif([Problem("c", "m", Location("p.yaml", 1, 1))], {}))
    del log["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(log)
