"""The CLI says what to do next: directories found, errors with suggestions, hints, colour, progress."""

from __future__ import annotations

import io
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from ttlpolicy.cli.diff import describe_times
from ttlpolicy.cli.main import main
from ttlpolicy.cli.output import colourise, plural

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_test_given_the_policy_directory_runs_its_tests(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "policies"]) == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-2:] == ["34 passed, 0 failed", "invariants: 10 proved, 0 not proved"]


def test_run_selects_cases_by_substring_or_glob(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--run", "UNMANAGED", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == 2 and "2 passed, 0 failed" in out
    assert main(["test", "--run", "*saturday*", "-v"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    assert main(["test", "--run", "no such case"]) == 2
    assert "no case name matches --run 'no such case'" in capsys.readouterr().err


def test_test_file_errors_read_like_lint_with_suggestions(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = project / "policies" / "tests" / "bad.yaml"
    bad.write_text("polcy: workforce\ncases:\n  - name: x\n    expect: {acces_ttl: 1h, refresh: {rotaton: true},"
                   " allow: maybe}\n  - nme: y\n    expect: {}\n")
    assert main(["test"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:1:1: error[test-file]: polcy: unknown key 'polcy' — did you mean 'policy'?" in err
    assert "bad.yaml:4:14: error[test-file]: cases.0.expect.acces_ttl: unknown key 'acces_ttl' — did you mean " \
           "'access_ttl'?" in err
    assert "unknown key 'rotaton' — did you mean 'rotation'?" in err
    assert "cases.0.expect.allow: expected true or false, got 'maybe'" in err
    assert "cases.1.name: missing required key 'name'" in err
    assert "pydantic" not in err and "Input should be" not in err


def test_test_watch_reruns_on_change(project: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "ttlpolicy.cli.main", "test", "--watch"], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    seen: list[str] = []

    def wait_for(text: str, poke: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=2)
            except queue.Empty:
                if poke is not None:  # the watcher starts just after it says so: change the file again
                    poke()
                continue
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in {''.join(seen)}")

    try:
        wait_for("34 passed, 0 failed")
        wait_for("watching")
        tests = project / "policies" / "tests" / "workforce.yaml"
        broken = tests.read_text().replace("access_ttl: 1h30m", "access_ttl: 1h31m", 1)
        tests.write_text(broken)
        wait_for("33 passed, 1 failed", poke=lambda: tests.write_text(broken))
    finally:
        process.terminate()
        process.wait(10)


def test_lint_one_file_finds_the_base_it_extends(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "policies/workforce.yaml"]) == 0
    out = capsys.readouterr().out
    assert "unknown-base" not in out and "ok: policy workforce (18 rules" in out


def test_decide_on_a_terminal_without_context_says_how(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["decide"]) == 2
    assert "no context: pass --context FILE" in capsys.readouterr().err


def test_missing_policies_suggests_where_to_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["lint"]) == 2
    assert "ttlpolicy init" in capsys.readouterr().err
    assert main(["test"]) == 2
    assert "ttlpolicy test DIR" in capsys.readouterr().err


def test_decide_missing_policies_names_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    assert main(["decide"]) == 2
    err = capsys.readouterr().err
    assert "there is no 'policies' here" in err and "pass --policies DIR" in err


def test_bad_git_revision_says_which_and_why(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(REPO)
    assert main(["diff", "--git", "no-such-branch", "policies"]) == 2
    err = capsys.readouterr().err
    assert "error[git-error]: --git no-such-branch: no commit named 'no-such-branch'" in err and "git fetch" in err


def test_counts_and_hour_ranges() -> None:
    assert (plural(1, "rule"), plural(2, "rule"), plural(0, "rule")) == ("1 rule", "2 rules", "0 rules")
    night = [f"{day} {hour:02d}:30" for day in ("mon", "tue", "wed", "thu", "fri")
             for hour in [*range(0, 7), 22, 23]]
    weekend = [f"{day} {hour:02d}:30" for day in ("sat", "sun") for hour in range(24)]
    assert describe_times(night + weekend) == "mon–fri hours 0–6, 22–23; sat–sun all day"
    assert describe_times(["mon 05:30", "wed 05:30"]) == "mon, wed hours 5"
    assert describe_times(["2025-01-01"]) == ""


def test_lint_says_one_rule_not_one_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\nlimits: {access_ttl: "
                                     "{max: 2h}, refresh_ttl: {max: 2d}}\nrules:\n  - name: r\n    when: 'true'\n"
                                     "    access_ttl: {cap: 30m}\n")
    main(["lint", str(tmp_path / "p.yaml")])
    assert "(1 rule," in capsys.readouterr().out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    text = "p.yaml:1:1: error[x]: bad\nFAIL a case\n2 passed, 1 failed"
    coloured = colourise(text, _Tty())
    assert "\033[1;31merror\033[0m[x]" in coloured and "\033[1;31mFAIL\033[0m" in coloured
    assert colourise(text, io.StringIO()) == text
    monkeypatch.setenv("NO_COLOR", "1")
    assert colourise(text, _Tty()) == text
