"""The CLI's own messages are problems of the registry, rendered once (cli/output.py).

Every ``fail(...)`` names a code of ``ttlpolicy.errors.CODES``; the text is lint's
(``error[code]: message``, located when there is a place to point at); ``--format json`` turns
the same problems into ``{"ok": false, "problems": [...]}`` on stdout. The table below is the CLI's
codes as data: a command line, and the code it must answer with.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from ttlpolicy.cli.main import main
from ttlpolicy.cli.service_client import ServiceError, service_problems
from ttlpolicy.errors import CODES, HTTP_PROBLEMS

ROOT = Path(__file__).parent.parent
POLICIES = ROOT / "policies"
BROKEN = ROOT / "tests" / "golden" / "errors" / "cel.yaml"
CLI = ROOT / "src" / "ttlpolicy" / "cli"


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "{}") -> tuple[int, str, str]:
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)  # a context on stdin where a command reads one
    try:
        code = main(list(argv))
    finally:
        sys.stdin = saved
    out, err = capsys.readouterr()
    return code, out, err


def problems_of(out: str) -> list[dict[str, Any]]:
    data = json.loads(out)
    assert data["ok"] is False
    return list(data["problems"])


# -- every call site names a registered code ----------------------------------------------------

_CALL = re.compile(r"\b(fail|warn)\(")
_CODED_CALL = re.compile(r'\b(?:fail|warn)\(\s*"([a-z0-9-]+)"')
_PROBLEM = re.compile(r'\bProblem\(\s*"([a-z0-9-]+)"')


def test_every_fail_call_in_the_cli_passes_a_registered_code() -> None:
    sites = 0
    for module in sorted(CLI.glob("*.py")):
        text = module.read_text()
        calls = [m for m in _CALL.finditer(text) if not text[:m.start()].endswith("def ")]
        coded = _CODED_CALL.findall(text)
        assert len(coded) == len(calls), f"{module.name}: a fail()/warn() without a code literal first"
        for code in coded + _PROBLEM.findall(text):
            assert code in CODES, f"{module.name}: {code!r} is not in ttlpolicy.errors.CODES"
        sites += len(coded)
    assert sites > 60  # the pattern still sees the calls (65 when this was written)


def test_no_command_writes_its_own_error_text() -> None:
    """Only output.py renders problems: no hand-made ``ttlpolicy: error`` or ``error[...]`` lines."""
    for module in sorted(CLI.glob("*.py")):
        if module.name == "output.py":
            continue
        text = module.read_text()
        assert "ttlpolicy: error" not in text and not re.search(r'f".*error\[\{', text), module.name


# -- each CLI code, from a command line that answers with it ------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.json").write_text('{"user": {\n  "mfa": true\n  "risk": 1}}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "latin1.json").write_bytes('{"tier": "finanzämter"}'.encode("latin-1"))  # a traceback once
    (tmp_path / "garbage.pem").write_text("not a key")
    (tmp_path / "bundle.tar.gz").write_bytes(b"x")
    (tmp_path / "replay.jsonl").write_text('{"context": {}}\n')
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "base.yaml").write_text("# init never overwrites me\n")
    return tmp_path


CASES = [
    ("usage", ["diff", "--max-scenarios", "0"], 2),
    ("usage", ["revoke", "all", "everyone", "--reason", "r"], 2),
    ("usage", ["decide", "--policies", str(POLICIES), "--now", "yesterday"], 2),
    ("io-error", ["decide", "--policies", str(POLICIES), "--context", "missing.json"], 2),
    ("io-error", ["eval", "true", "--policies", str(POLICIES), "--context", "latin1.json"], 2),
    ("io-error", ["heatmap", "--policies", str(POLICIES), "--x", "tier", "--y", "device.trust", "--context",
                  "latin1.json"], 2),
    ("context-json", ["decide", "--policies", str(POLICIES), "--context", "broken.json"], 2),
    ("context-type", ["eval", "true", "--policies", str(POLICIES), "--context", "list.json"], 2),
    ("policy-load-failed", ["decide", "--policies", str(BROKEN)], 2),
    ("unknown-policy", ["decide", "--policies", str(POLICIES), "--policy", "nope"], 2),
    ("unknown-rule", ["eval", "--rule", "nope", "--policies", str(POLICIES)], 2),
    ("no-policies", ["compile", "--policies", "."], 2),
    ("file-exists", ["init", "."], 2),
    ("replay-record", ["diff", str(POLICIES), str(POLICIES), "--replay", "replay.jsonl"], 2),
    ("invalid-key", ["bundle", "sign", "bundle.tar.gz", "--key", "garbage.pem"], 2),
    ("state-url", ["decide", "--policies", str(POLICIES), "--state", "memcached://x"], 2),
    ("invalid-value", ["heatmap", "--policies", str(POLICIES), "--x", "time.hour", "--y", "user.risk",
                       "--y-values", "a"], 2),
    ("invalid-settings", ["serve", "--config", "missing.yaml"], 2),
    ("insecure-bind", ["serve", "--policies", str(POLICIES), "--host", "0.0.0.0"], 2),
]


@pytest.mark.parametrize("code, argv, exit_code", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_cli_code_as_text_and_as_json(files: Path, capsys: pytest.CaptureFixture[str], code: str,
                                           argv: list[str], exit_code: int) -> None:
    status, out, err = run(capsys, *argv)
    assert status == exit_code and re.search(rf"(^|\n)\S+: error\[{code}\]: ", err), err
    if _takes_json(argv):
        status, out, err = run(capsys, *argv, "--format", "json")
        assert status == exit_code and err == ""
        assert code in [p["code"] for p in problems_of(out)]


def _takes_json(argv: list[str]) -> bool:
    """Whether the command ``argv`` runs has ``--format json``."""
    from ttlpolicy.cli.main import build_parser, subcommands

    command = subcommands(build_parser())[argv[0]]
    if argv[0] == "bundle":
        command = subcommands(command)[argv[1]]
    return any("--format" in action.option_strings and "json" in (action.choices or ())
               for action in command._actions)


def test_service_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    status, _, err = run(capsys, "emergency", "list", "--url", url)
    assert status == 2 and err.startswith(f"ttlpolicy: error[service-unreachable]: cannot reach {url}")
    status, out, err = run(capsys, "emergency", "list", "--url", url, "--format", "json")
    assert status == 2 and err == "" and [p["code"] for p in problems_of(out)] == ["service-unreachable"]


def test_a_service_refusal_keeps_its_code_and_points_at_each_field() -> None:
    body = {"type": "https://ttlpolicy.dev/problems/invalid-emergency", "title": "Emergency request is not valid",
            "status": 422, "code": "invalid-emergency", "detail": "1 problem(s); no emergency was started",
            "errors": [{"path": "scope", "code": "unknown-tier", "message": "no tier 'finanse'", "line": 1,
                        "column": 9},
                       {"path": "ends_at", "code": "out-of-range", "message": "is in the past"}]}
    problems = service_problems(ServiceError(422, body))
    assert [p.to_dict() for p in problems] == [
        {"code": "invalid-emergency", "severity": "error", "message": "1 problem(s); no emergency was started"},
        {"code": "unknown-tier", "severity": "error", "message": "no tier 'finanse'", "path": "scope",
         "location": {"file": "scope", "line": 1, "column": 9}},
        {"code": "out-of-range", "severity": "error", "message": "is in the past", "path": "ends_at"},
    ]
    assert all(p.code in HTTP_PROBLEMS or p.code in CODES for p in problems)
    # a proxy's HTML page instead of a problem: the generic code, never a traceback
    [problem] = service_problems(ServiceError(502, {"status": 502, "detail": "<html>Bad gateway</html>"}))
    assert (problem.code, problem.message) == ("http-error", "<html>Bad gateway</html>")


# -- the rendering ------------------------------------------------------------------------------

def test_a_malformed_context_points_at_its_line_and_column(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "decide", "--policies", str(POLICIES), "--context", "broken.json")
    assert status == 2 and out == ""
    assert err == ("broken.json:3:3: error[context-json]: context is not valid JSON: Expecting ',' delimiter\n"
                   '    "risk": 1}}\n'
                   "    ^\n")
    status, out, err = run(capsys, "decide", "--policies", str(POLICIES), "--context", "broken.json",
                           "--format", "json")
    assert status == 2 and err == ""
    assert json.loads(out) == {"ok": False, "problems": [{
        "code": "context-json", "severity": "error", "message": "context is not valid JSON: Expecting ',' delimiter",
        "location": {"file": "broken.json", "line": 3, "column": 3}}]}


def test_a_policy_that_does_not_load_lists_its_problems_first(files: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    status, out, err = run(capsys, "decide", "--policies", str(BROKEN), "--format", "json")
    codes = [p["code"] for p in problems_of(out)]
    assert status == 2 and err == "" and codes[-1] == "policy-load-failed" and "cel-enum-value" in codes[:-1]
    status, _, err = run(capsys, "decide", "--policies", str(BROKEN))
    lines = err.splitlines()
    assert "error[cel-enum-value]" in err and re.fullmatch(r"\d+ errors?, \d+ warnings?", lines[-2])
    assert lines[-1] == f"ttlpolicy: error[policy-load-failed]: cannot load policies from {BROKEN}"


def test_decide_problems_are_json_only_when_asked_for(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """decide answers JSON by default; its problems stay text for people unless --format json is given."""
    status, out, err = run(capsys, "decide", "--policies", str(POLICIES), "--policy", "nope")
    assert status == 2 and out == "" and err.startswith("ttlpolicy: error[unknown-policy]: unknown policy 'nope'")


def test_context_problems_at_their_path(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    risky = '{"user": {"risk": 7}}'
    status, out, _ = run(capsys, "decide", "--policies", str(POLICIES), "--format", "text", stdin=risky)
    assert status == 1 and out.startswith("context.user.risk: error[context-value]: ")
    status, out, err = run(capsys, "eval", "true", "--policies", str(POLICIES), "--format", "json", stdin=risky)
    assert status == 1 and err == ""
    assert [(p["code"], p["path"]) for p in problems_of(out)] == [("context-value", "context.user.risk")]


def test_argparse_usage_errors_carry_the_usage_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["lint", "--format", "yaml", "--format", "json"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("usage: ttlpolicy lint")
    assert "\nttlpolicy: error[usage]: argument --format: invalid choice: 'yaml'" in err
    assert run(capsys, "help", "lnt")[2].startswith("ttlpolicy: error[usage]: no command 'lnt'")


def test_fmt_reports_every_file_it_cannot_format(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ttlpolicy import formatting

    (tmp_path / "a.yaml").write_text("a: [1,\n")
    (tmp_path / "b.yaml").write_text("b:    1\n")
    (tmp_path / "c.yaml").write_bytes(b"c: \xff\n")
    # pretend that layout changes meaning, to see the refusal (ruamel and PyYAML agree on real files)
    monkeypatch.setattr(formatting, "_meaning", lambda text: text)
    status, out, err = run(capsys, "fmt", str(tmp_path))
    assert status == 2 and out == ""
    assert [line.split(": ")[1] for line in err.splitlines() if ": error[" in line] == [
        "error[yaml-syntax]", "error[fmt-changes-meaning]", "error[file-encoding]"]
    assert (tmp_path / "b.yaml").read_text() == "b:    1\n"  # left as it is


def test_missing_dependency_for_png(files: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ttlpolicy.cli import heatmap

    def no_cairo(svg: str) -> bytes:
        raise RuntimeError("PNG output needs cairosvg")

    monkeypatch.setattr(heatmap, "svg_to_png", no_cairo)
    status, out, err = run(capsys, "heatmap", "--policies", str(POLICIES), "--x", "tier", "--y", "device.trust",
                           "--format", "png")
    assert status == 2 and out == "" and err == "ttlpolicy: error[missing-dependency]: PNG output needs cairosvg\n"
