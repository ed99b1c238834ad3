"""``ttlpolicy compile``: the stages' summary and ``--show POLICY``'s generated program."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttlpolicy import load_policies
from ttlpolicy.cli.main import main
from ttlpolicy.compile import STAGES

POLICIES = Path(__file__).parent.parent / "policies"


def test_show_prints_the_generated_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--policies", str(POLICIES), "--show", "workforce"]) == 0
    out = capsys.readouterr().out
    program = load_policies(POLICIES).get("workforce").program
    assert program is not None and out == program.source
    assert out.count("# rule ") == 18  # one comment per rule, with its file and line
    assert "# rule unmanaged-device at " + str(POLICIES / "workforce.yaml") + ":" in out


def test_summary_lists_every_stage_and_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--policies", str(POLICIES), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in summary["stages"]] == [s.name for s in STAGES]
    assert {p["name"]: p["closures"] for p in summary["policies"]} == {"machine": 0, "workforce": 0}


def test_errors_and_unknown_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--policies", str(POLICIES), "--show", "nope"]) == 2
    assert "no compiled policy named 'nope'" in capsys.readouterr().err
    (tmp_path / "p.yaml").write_text("apiVersion: ttlpolicy/v1\nname: p\nrules:\n  - {name: r, when: 'user.nope', "
                                     "deny: x}\n")
    assert main(["compile", "--policies", str(tmp_path)]) == 1
    assert "p.yaml:4:" in capsys.readouterr().err
    assert main(["compile", "--policies", str(tmp_path / "missing")]) == 2


def test_json_lists_the_problems_instead_of_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: ttlpolicy/v1\nname: p\nrules:\n  - {name: r, when: 'user.nope', "
                                     "deny: x}\n")
    assert main(["compile", "--policies", str(tmp_path), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert err == "" and summary["errors"] == len(summary["problems"]) >= 1
    assert ("cel-unknown-attribute", 4) in [(p["code"], p["location"]["line"]) for p in summary["problems"]]
    assert main(["compile", "--policies", str(tmp_path), "--show", "nope", "--format", "json"]) == 1
    out, err = capsys.readouterr()
    problems = json.loads(out)["problems"]
    assert err == "" and problems[-1]["code"] == "unknown-policy" and len(problems) == summary["errors"] + 1
