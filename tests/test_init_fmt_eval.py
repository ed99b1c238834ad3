"""`init` → `lint` → `test` → `decide`; `fmt` keeps meaning and comments; `eval` shows type, value, reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from ttlpolicy import load_policies
from ttlpolicy.cli.main import main
from ttlpolicy.formatting import FormatError, format_yaml

REPO = Path(__file__).resolve().parents[1]
SCAFFOLD = REPO / "src" / "ttlpolicy" / "scaffold"
FORMATTED = sorted([*REPO.glob("policies/**/*.yaml"), *SCAFFOLD.glob("*.yaml"), *REPO.glob("tests/cases/*.yaml"),
                    *REPO.glob("examples/**/*.yaml")])


def test_init_gives_a_set_that_lints_tests_decides_and_is_formatted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "mine"]) == 0
    assert "ttlpolicy lint && ttlpolicy test" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "mine")
    for name in ("policies/base.yaml", "policies/default.yaml", "policies/tests/default.yaml",
                 ".pre-commit-config.yaml", ".github/workflows/ttlpolicy.yml", "schema/policy.schema.json"):
        assert Path(name).is_file(), name
    assert main(["lint", "--strict"]) == 0
    assert main(["test", "policies", "--min-coverage", "100"]) == 0
    assert "5 passed, 0 failed" in capsys.readouterr().out
    assert main(["decide", "--context", "contexts/office-laptop.json", "--now", "2025-01-08T13:00:00+01:00"]) == 0
    assert json.loads(capsys.readouterr().out)["access_ttl"] == 3600
    assert main(["fmt", "--check"]) == 0
    hooks = yaml.safe_load(Path(".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    assert [h["id"] for h in hooks] == ["ttlpolicy-lint", "ttlpolicy-test"]
    capsys.readouterr()
    assert main(["init", "."]) == 2  # never overwrites
    assert "nothing was written" in capsys.readouterr().err


def test_init_workflow_is_the_documented_one() -> None:
    assert (SCAFFOLD / "github-workflow.yml").read_text() == (REPO / "examples/ci/ttlpolicy.yml").read_text(), \
        "`ttlpolicy init` ships the documented workflow: cp examples/ci/ttlpolicy.yml " \
        "src/ttlpolicy/scaffold/github-workflow.yml"


def _comments(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        match = re.search(r"(?:^|\s)(#.*)$", line)
        if match and line.count('"') % 2 == 0 and line.count("'") % 2 == 0:
            found.append(match.group(1).strip())
    return found


@pytest.mark.parametrize("path", FORMATTED, ids=[str(p.relative_to(REPO)) for p in FORMATTED])
def test_fmt_is_idempotent_and_keeps_meaning_and_comments(path: Path) -> None:
    original = path.read_text()
    once = format_yaml(original)
    assert format_yaml(once) == once
    assert yaml.safe_load(once) == yaml.safe_load(original)
    assert _comments(once) == _comments(original)


def test_fmt_keeps_every_policy_digest(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    messy = tmp_path / "policies" / "workforce.yaml"
    text = messy.read_text().replace("    when: ", "    when:      ").replace("  - name: unmanaged-device\n",
                                                                        "  - name:   unmanaged-device   \n")
    text = text.replace("rules:\n", "rules:   # the rules\n", 1)
    messy.write_text(text)
    before = {p.name: p.digest for p in load_policies(tmp_path / "policies")}
    for file in (tmp_path / "policies").rglob("*.yaml"):
        file.write_text(format_yaml(file.read_text()))
    assert {p.name: p.digest for p in load_policies(tmp_path / "policies")} == before
    formatted = messy.read_text()
    assert "rules:   # the rules" in formatted and "    when: device.trust" in formatted and "   \n" not in formatted


def test_fmt_check_diff_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "p.yaml"
    messy = "# keep me\nname:   x\nrules:\n- name: a    # and me\n  when: 'true'\n"
    file.write_text(messy)
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    assert f"{file}: not formatted" in capsys.readouterr().out and file.read_text() == messy
    assert main(["fmt", "--diff", str(file)]) == 0
    assert "+  - name: a  # and me" in capsys.readouterr().out and file.read_text() == messy
    assert main(["fmt", str(file)]) == 0
    assert file.read_text() == "# keep me\nname: x\nrules:\n  - name: a  # and me\n    when: 'true'\n"
    assert main(["fmt", "--check", str(file)]) == 0
    file.write_text("a: [1,\n")
    assert main(["fmt", str(file)]) == 2
    assert re.search(r"p\.yaml:\d+:\d+: error\[yaml-syntax\]: not valid YAML", capsys.readouterr().err)
    with pytest.raises(FormatError):
        format_yaml("a: [1,\n")


@pytest.fixture
def bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def test_eval_an_expression(bundled: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", 'device.trust == "unmanaged" && user.risk < 0.5', "--context",
                 "examples/contexts/finance-unmanaged-laptop-night.json", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["type"], result["value"], result["error"]) == ("bool", True, None)
    assert set(result["reads"]) == {"device.trust", "user.risk"} and result["reads"]["device.trust"] == "unmanaged"


def test_eval_a_rule_at_an_instant(bundled: None, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = "examples/contexts/managed-laptop-office-mfa.json"
    assert main(["eval", "--rule", "off-hours", "--context", ctx, "--now", "2025-03-08T12:00:00+01:00"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rule off-hours (policy workforce): matches\n") and "value: true" in out
    assert re.search(r"time\.weekday\s+\"sat\"", out) and "effects:" in out
    assert main(["eval", "--rule", "off-hours", "--context", ctx, "--now", "2025-03-04T10:00:00+01:00"]) == 0
    assert "does not match" in capsys.readouterr().out
    assert main(["eval", "--rule", "of-hours", "--context", ctx]) == 2
    assert "no rule 'of-hours' — did you mean 'off-hours'?" in capsys.readouterr().err


def test_eval_refuses_what_a_policy_would(bundled: None, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert main(["eval", 'device.trust == "manged"', "--context", str(empty)]) == 1
    assert "<expression>:1:17: error[cel-enum-value]" in capsys.readouterr().err
    assert main(["eval", "device.trust ==", "--context", str(empty), "--format", "json"]) == 1
    [problem] = json.loads(capsys.readouterr().out)["problems"]  # --format json: the problem as JSON too
    assert problem["code"] == "cel-syntax" and problem["location"]["file"] == "<expression>"
    ctx = tmp_path / "ctx.json"
    ctx.write_text('{"device": {"trust": "sometimes"}}')
    assert main(["eval", "true", "--context", str(ctx)]) == 1
    assert "context.device.trust: error[context-value]" in capsys.readouterr().err
    assert main(["eval"]) == 2
