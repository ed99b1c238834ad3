"""benchmarks/MUTATION.md names the code each row was run on, and ``mutation.py --stale`` finds
the rows whose modules have changed since: a survivor count is only worth what its code is."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutation  # noqa: E402


def _project(tmp_path: Path) -> Path:
    """A copy of what mutation.py reads: itself, the sources and pyproject.toml."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy2(ROOT / "benchmarks" / "mutation.py", tmp_path / "benchmarks")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_digest_changes_with_any_module_of_the_group_and_only_then(tmp_path: Path) -> None:
    project = _project(tmp_path)
    group = mutation.GROUPS["refresh"]
    before = mutation.code_digest(project, group)
    assert before == mutation.code_digest(ROOT, group) and len(before) == 12
    (project / "src" / "ttlpolicy" / "decision.py").write_text("# not in the group\n")
    assert mutation.code_digest(project, group) == before
    tighten = project / "src" / "ttlpolicy" / "state" / "tighten.py"
    tighten.write_text(tighten.read_text() + "# one more line\n")
    assert mutation.code_digest(project, group) != before


def test_stale_lists_each_row_whose_code_changed_or_that_never_ran(tmp_path: Path) -> None:
    project = _project(tmp_path)
    fresh = {name: mutation.code_digest(project, group) for name, group in mutation.GROUPS.items()}
    rows = [f"| {name} | m | {'0123456789ab' if name == 'diffing' else code} | 1 | 1 | 0 | 0 | 0 | 0 | 0.1 | today |"
            for name, code in fresh.items() if name != "emergency"]
    (project / "benchmarks" / "MUTATION.md").write_text("\n".join(
        ["# Mutation testing results", "", "| group | modules | code | mutants |", "|---|", *rows]) + "\n")
    command = [sys.executable, str(project / "benchmarks" / "mutation.py"), "--stale"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"diffing: run on code 0123456789ab, its modules are now {fresh['diffing']}",
                                        "emergency: not run yet"]
    rows.append(f"| emergency | m | {fresh['emergency']} | 1 | 1 | 0 | 0 | 0 | 0 | 0.1 | today |")
    rows = [row.replace("0123456789ab", fresh["diffing"]) for row in rows]
    (project / "benchmarks" / "MUTATION.md").write_text("\n".join(["| group | modules | code |", *rows]) + "\n")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "every row" in done.stdout


def test_a_row_written_before_the_code_column_reads_as_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "MUTATION.md"
    report.write_text("| evaluate | evaluate.py | 770 | 766 | 0 | 4 | 0 | 0 | 2.3 | then |\n")
    monkeypatch.setattr(mutation, "REPORT", report)
    assert mutation._previous_rows()["evaluate"].split("|")[3].strip() == "unknown"
    assert f"evaluate: run on code unknown, its modules are now {mutation.code_digest(ROOT, mutation.GROUPS['evaluate'])}" \
        in mutation.stale_rows()
