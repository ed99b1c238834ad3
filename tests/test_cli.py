"""The lint, decide and schema subcommands: output formats and exit codes (0 / 1 / 2)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttlpolicy.cli.main import main

ROOT = Path(__file__).parent.parent
POLICIES = ROOT / "policies"
CONTEXTS = ROOT / "examples" / "contexts"
NOW = "2026-11-27T23:30:00+01:00"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_lint_bundled_policies_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "lint", str(POLICIES))
    assert code == 0
    assert "0 errors" in out and "ok: policy workforce" in out


def test_lint_errors_exit_1_with_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    golden = ROOT / "tests" / "golden" / "errors" / "cel.yaml"
    code, out, _ = run(capsys, "lint", str(golden))
    assert code == 1
    assert f"{golden}:10:27: error[cel-enum-value]" in out
    code, out, _ = run(capsys, "lint", "--format", "json", str(golden))
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["problems"][0]["location"] == {"file": str(golden), "line": 10, "column": 27}


def test_lint_missing_path_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "lint", str(tmp_path / "nope"))
    assert code == 2 and "io-error" in out


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["lint", "--format", "xml"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_decide_json_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    from ttlpolicy import load_policies

    context = CONTEXTS / "finance-unmanaged-laptop-night.json"
    code, out, _ = run(capsys, "decide", "--policies", str(POLICIES), "--context", str(context), "--now", NOW)
    assert code == 0
    expected = load_policies(POLICIES).decide(json.loads(context.read_text()), now=NOW).to_dict()
    assert json.loads(out) == expected
    assert expected["tier"] == "finance" and expected["allow"] is True


def test_decide_text_explains_every_number(capsys: pytest.CaptureFixture[str]) -> None:
    context = CONTEXTS / "finance-unmanaged-laptop-night.json"
    code, out, _ = run(capsys, "decide", "--policies", str(POLICIES), "--context", str(context), "--now", NOW,
                       "--format", "text", "--explain")
    assert code == 0
    assert out.startswith("policy workforce (sha256:")
    assert "ALLOW  access 3m" in out
    assert "access_ttl   base          15m" in out and "tier finance" in out
    assert "(rule government-unmanaged: no match)" in out


def test_decide_reads_stdin_and_reports_context_problems(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"user": {"risk": 7, "mfa": "yes"}, "colour": "red"}'))
    code, out, _ = run(capsys, "decide", "--policies", str(POLICIES), "--now", NOW)
    assert code == 1
    refused = json.loads(out)
    assert (refused["ok"], refused["error"]) == (False, "invalid-context")
    assert sorted(p["path"] for p in refused["problems"]) == ["colour", "user.mfa", "user.risk"]


@pytest.mark.parametrize("args, message", [
    (["--context", "/nonexistent.json"], "cannot read context"),
    (["--now", "yesterday"], "--now"),
    (["--policy", "nope"], "unknown policy 'nope'"),
])
def test_decide_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                    args: list[str], message: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    code, _, err = run(capsys, "decide", "--policies", str(POLICIES), *args)
    assert code == 2 and message in err


def test_decide_malformed_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"user": '))
    code, _, err = run(capsys, "decide", "--policies", str(POLICIES))
    assert code == 2 and err.startswith("<stdin>:1:10: error[context-json]: context is not valid JSON")
    assert err.endswith('  {"user": \n           ^\n')  # the line, and a caret at the column


def test_decide_with_broken_policies(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    code, _, err = run(capsys, "decide", "--policies", str(ROOT / "tests" / "golden" / "errors" / "cel.yaml"))
    assert code == 2 and "error[cel-enum-value]" in err


def test_every_example_context_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    for context in sorted(CONTEXTS.glob("*.json")):
        policy = ["--policy", "machine"] if context.name.startswith("machine") else []
        code, out, err = run(capsys, "decide", "--policies", str(POLICIES), "--context", str(context),
                             "--now", NOW, *policy)
        assert code == 0, (context.name, out, err)
        assert json.loads(out)["errors"] == [], context.name


def test_schema_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert json.loads(out) == json.loads((ROOT / "schema" / "policy.schema.json").read_text())


def test_console_script_runs() -> None:
    """The installed entry point, end to end, once."""
    result = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", "lint", str(POLICIES), "--format", "json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_lint_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    loose = tmp_path / "loose.yaml"
    loose.write_text("apiVersion: ttlpolicy/v1\nname: loose\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\n"
                     "rules:\n  - {name: mfa, when: 'user.mfa', access_ttl: {multiply: 2}}\n")
    code, out, _ = run(capsys, "lint", str(loose), "--strict")
    assert code == 1 and "warning[loosening-rule]" in out
    code, out, _ = run(capsys, "lint", str(loose), "--strict", "--format", "json")
    assert code == 1 and json.loads(out)["ok"] is False
    # the bundled policies acknowledge their loosening rules, so they pass the strict gate
    code, out, _ = run(capsys, "lint", str(POLICIES), "--strict", "--format", "json")
    assert code == 0 and {p["severity"] for p in json.loads(out)["problems"]} == {"note"}
    tight = tmp_path / "tight.yaml"
    tight.write_text("apiVersion: ttlpolicy/v1\nname: tight\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\n"
                     "rules:\n  - {name: mfa, when: '!user.mfa', access_ttl: {cap: 10m}}\n")
    assert run(capsys, "lint", str(tight), "--strict")[0] == 0
