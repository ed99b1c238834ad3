"""``ttlpolicy diff``: known changes between small policies are found, classified and grouped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttlpolicy import load_policies
from ttlpolicy.analysis import ABSENT
from ttlpolicy.cli.main import main
from ttlpolicy.diffing import build_grid, diff_policies

HEAD = """\
apiVersion: ttlpolicy/v1
name: p
defaults: {access_ttl: 1h, refresh_ttl: 1d}
limits:
  access_ttl: {max: 12h}
zones:
  office: [10.0.0.0/8]
attributes:
  user.level:
    type: int
    min: 0
    max: 10
    default: 0
rules:
"""

RULES = """\
  - name: managed
    when: device.trust == "managed"
    access_ttl: {multiply: 1.5}
  - name: risky
    when: user.risk > 0.5
    access_ttl: {cap: 10m}
  - name: outside
    when: location.zone == "none" && user.level >= 5
    deny: high levels only from the office
"""


def policy_dir(root: Path, name: str, rules: str = RULES) -> Path:
    path = root / name
    path.mkdir()
    (path / "p.yaml").write_text(HEAD + rules)
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["diff", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_grid_has_boundaries_enums_zones_and_absence(tmp_path: Path) -> None:
    policy = load_policies(policy_dir(tmp_path, "a")).get("p")
    grid = build_grid(policy, policy)
    dims = grid.dimensions
    assert dims["device.trust"] == ["managed", "compliant", "known", "unmanaged"]
    assert dims["user.risk"] == [0.0, 0.49, 0.5, 0.51, 1.0]
    assert dims["user.level"] == [0, 4, 5, 6, 10]
    # both edges of the zone, one address inside, just outside both ends, and one outside all
    assert dims["location.ip"] == ["9.255.255.255", "10.0.0.0", "10.0.0.1", "10.255.255.255", "11.0.0.0",
                                   "203.0.113.7", ABSENT]
    assert grid.size == 4 * 5 * 5 * 7
    assert len(list(grid.scenarios(10_000))) == grid.size
    sampled = list(grid.scenarios(50, seed=1))
    assert len(sampled) == 50 and sampled == list(grid.scenarios(50, seed=1))  # reproducible


def test_pure_tightening_reports_no_loosening(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.replace("cap: 10m", "cap: 5m").replace("multiply: 1.5", "multiply: 1.2"))
    code, data = run_json(capsys, str(base), str(head), "--fail-on", "loosen")
    assert code == 0
    assert data["changed"] and not data["loosening"]
    assert {g["kind"] for g in data["groups"]} == {"access shorter"}


def test_factor_raised_for_one_device_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.replace("multiply: 1.5", "multiply: 2"))
    code, data = run_json(capsys, str(base), str(head), "--fail-on", "loosen")
    assert code == 1 and data["loosening"]
    [group] = data["groups"]
    assert group["kind"] == "access longer" and group["rules"] == ["~managed"]
    assert group["when"]["device.trust"] == "managed"
    assert group["when"]["user.risk"] == [0.0, 0.49, 0.5]  # above 0.5 the 10m cap hides the factor
    assert group["example"]["context"]["device"] == {"trust": "managed"}
    assert group["max_change_seconds"] == 1800
    # 3 risk values × 5 levels × 7 IPs, minus the denied: level ≥ 5 outside the office (3 × 3 × 4)
    assert group["count"] == 3 * 5 * 7 - 3 * 3 * 4


def test_deny_removed_is_deny_to_allow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.split("  - name: outside")[0])
    code, data = run_json(capsys, str(base), str(head), "--fail-on", "loosen")
    assert code == 1
    [group] = data["groups"]
    assert group["kind"] == "deny→allow" and group["rules"] == ["-outside"]
    assert group["when"]["user.level"] == [5, 6, 10]
    assert group["when"]["location.ip"] == ["9.255.255.255", "11.0.0.0", "203.0.113.7", "(absent)"]
    main(["diff", str(base), str(head)])
    out = capsys.readouterr().out
    assert "[LOOSENS] p: deny→allow in 240 scenarios" in out and "before: DENY" in out


def test_renamed_rule_is_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.replace("name: managed", "name: managed-device")
                      .replace("name: risky", "name: risky-user"))
    code, data = run_json(capsys, str(base), str(head), "--fail-on", "any")
    assert code == 0
    assert data["groups"] == [] and not data["changed"]
    assert data["policies"][0]["scenarios"] == 700


def test_markdown_has_a_table_and_details(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.replace("multiply: 1.5", "multiply: 2"))
    assert main(["diff", str(base), str(head), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 🔓 | p | access longer | 69 | up to 30m | `~managed` |" in out
    assert "<details><summary>p: access longer (69)</summary>" in out and "```json" in out


def test_replay_of_a_decision_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    head = policy_dir(tmp_path, "b", RULES.replace("multiply: 1.5", "multiply: 2"))
    log = tmp_path / "decisions.jsonl"
    records = [{"time": "2025-01-08T12:00:00Z", "context": {"device": {"trust": "managed"}}, "policy": {"name": "p"}},
               {"time": "2025-01-08T12:00:00Z", "context": {"device": {"trust": "known"}}}]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    code, data = run_json(capsys, str(base), str(head), "--replay", str(log), "--max-scenarios", "1")
    assert code == 0
    assert data["policies"][0]["replayed"] == 2
    [group] = [g for g in data["groups"] if g["example"]["source"].startswith(str(log))]
    assert group["example"]["source"] == f"{log}:1" and group["kind"] == "access longer"
    log.write_text('{"context": {}}\n')
    assert main(["diff", str(base), str(head), "--replay", str(log)]) == 2
    assert f"{log}:1:1: error[replay-record]: not a decision log record" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = policy_dir(tmp_path, "a")
    assert main(["diff", str(base)]) == 2
    assert main(["diff", str(base), str(tmp_path / "missing")]) == 2
    assert "cannot load policies" in capsys.readouterr().err


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_git_revision_against_the_working_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.name", "Test")
    _git(repo, "config", "user.email", "test@example.com")
    policies = policy_dir(repo, "policies")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    (policies / "p.yaml").write_text(HEAD + RULES.replace("cap: 10m", "cap: 20m"))
    _git(repo, "commit", "-q", "-am", "two")
    (policies / "p.yaml").write_text(HEAD + RULES.replace("cap: 10m", "cap: 30m"))  # uncommitted
    code, data = run_json(capsys, "--git", "HEAD~1", str(policies), "--fail-on", "loosen")
    assert code == 1
    assert {g["kind"] for g in data["groups"]} == {"access longer"}
    assert data["groups"][0]["max_change_seconds"] == 1200  # 10m at HEAD~1, 30m in the working tree
    code, data = run_json(capsys, "--git", "HEAD", str(policies))
    assert data["groups"][0]["max_change_seconds"] == 600
    assert main(["diff", "--git", "no-such-rev", str(policies)]) == 2
    assert "no-such-rev" in capsys.readouterr().err
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status.strip() == "M policies/p.yaml"  # the working tree and the index are untouched


def test_bundled_policies_against_themselves_in_a_subprocess() -> None:
    root = Path(__file__).resolve().parents[1] / "policies"
    done = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", "diff", str(root), str(root),
                           "--fail-on", "any", "--max-scenarios", "200"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no decision changes" in done.stdout


def test_diff_api_groups_largest_first(tmp_path: Path) -> None:
    base = load_policies(policy_dir(tmp_path, "a"))
    head = load_policies(policy_dir(tmp_path, "b", RULES.replace("multiply: 1.5", "multiply: 3")
                                    .replace("cap: 10m", "cap: 5m")))
    report = diff_policies(base, head)
    kinds = [(g.kind, g.rules) for g in report.groups]
    # loosening first; the cap change is split by whether the redefined `managed` also matched
    assert kinds[0] == ("access longer", ("~managed",))
    assert set(kinds[1:]) == {("access shorter", ("~managed", "~risky")), ("access shorter", ("~risky",))}
    assert report.groups[0].magnitude == 5400 and report.groups[1].magnitude == 300
