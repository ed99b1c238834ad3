#!/usr/bin/env python3
"""Mutation testing of the decision path with mutmut, one module group at a time.

    python benchmarks/mutation.py                    # every group, writes benchmarks/MUTATION.md
    python benchmarks/mutation.py evaluate diffing   # only these groups (the table keeps the others)
    python benchmarks/mutation.py --list             # the groups, their modules and test selections
    python benchmarks/mutation.py --check combination  # CI: fail if a mutant survives unexplained
    python benchmarks/mutation.py --from-last-run    # rewrite the report from the last results
    python benchmarks/mutation.py --stale            # which rows were run on code that has changed since

mutmut mutates every function of the modules it is given (``<`` to ``<=``, ``min`` to ``max``,
a constant to another, a dropped argument ...) and runs, for each mutant, the tests that cover
that function; a mutant no test notices *survived*. Each group below pairs modules with a small,
fast test selection that exercises them: mutmut runs a surviving mutant's whole selection, so a
selection with slow property tests would cost minutes per survivor. ``[tool.mutmut]`` in
pyproject.toml holds what every group shares; this script runs each group in a copy of the
project under build/mutation/GROUP/ with that group's ``only_mutate`` and test selection, so
runs never touch the working tree and a group's results can be read (``mutmut show NAME``) there.

A survivor that no test can kill, because the mutated program behaves the same (an equivalent
mutant), is listed with a one-line reason in tests/mutation/equivalent.txt; the table counts it
as equivalent, not survived. See docs/mutation.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.txt"
REPORT = ROOT / "benchmarks" / "MUTATION.md"
COPIED = ("src", "tests", "policies", "examples", "schema", "docs", "pyproject.toml")


@dataclass(frozen=True)
class Group:
    name: str
    modules: tuple[str, ...]   # paths under src/ttlpolicy/
    tests: tuple[str, ...]     # pytest selection: paths, node ids and options (--deselect ...)
    functions: tuple[str, ...] = ()  # mutmut name patterns; empty: every function of the modules


_EVALUATE_TESTS = ("tests/test_cases.py", "tests/test_strictest_wins.py", "tests/test_bounds.py",
                   "tests/test_testing.py", "tests/test_evaluate.py")

GROUPS: dict[str, Group] = {g.name: g for g in (
    # The fast subset CI runs (tests/test_mutation_combination.py): the rules that combine the
    # effects of matching rules into the two lifetimes and the refresh settings.
    Group("combination", ("evaluate.py",), ("tests/test_evaluate.py", "tests/test_strictest_wins.py"),
          tuple(f"ttlpolicy.evaluate.x_{name}__mutmut_*" for name in (
              "_combine", "combine", "bound_idle", "bound_session", "apply_limits", "deny", "seconds",
              "_limit", "dynamic_factor", "_apply_full", "_apply_tightening", "_apply_restrictions",
              "session_end_of"))),
    Group("evaluate", ("evaluate.py",), _EVALUATE_TESTS),
    Group("program", ("program.py",), _EVALUATE_TESTS + ("tests/test_compile.py", "tests/test_program.py")),
    Group("decision", ("decision.py",), ("tests/test_evaluate.py", "tests/test_cases.py", "tests/test_decision.py",
                                         "tests/test_fastpath.py")),
    # generate.py runs when a policy is compiled: only tests that compile inside the test (not at
    # import, before mutmut forks) can notice its mutants
    Group("generate", ("generate.py",), ("tests/test_generate.py", "tests/test_generate_validation.py",
                                         "tests/test_cases.py", "tests/test_evaluate.py",
                                         "--deselect",
                                         "tests/test_generate.py::test_generated_equals_closures_equals_cel_python")),
    Group("context", ("context.py", "vocabulary.py"), ("tests/test_context.py", "tests/test_cases.py",
                                                        "tests/test_public_api.py", "tests/test_server_openapi.py")),
    Group("diffing", ("diffing.py",), ("tests/test_diff_fields.py", "tests/test_diff.py", "--deselect",
                                       "tests/test_diff.py::test_bundled_policies_against_themselves_in_a_subprocess")),
    Group("cel", ("cel/native.py", "cel/codegen.py"),
          ("tests/test_cel_native.py", "tests/test_cel_conformance.py", "tests/test_cel_codegen.py", "--deselect",
           "tests/test_cel_codegen.py::test_generated_condition_equals_its_closure")),
    Group("cel-functions", ("cel/native_functions.py",),
          ("tests/test_cel_native.py", "tests/test_cel_conformance.py")),
    # the chain's own tests, the example issuer that runs it over HTTP and the chain on the state
    # store (the token property tests are left out: hundreds of hypothesis examples per survivor)
    Group("refresh", ("tokens/refresh.py", "state/tighten.py"),
          ("tests/test_tokens.py", "tests/test_tighten.py",
           "tests/test_state_emergency.py::test_no_ceiling_ever_lengthens_any_decision",
           "tests/test_issuer_example.py", "--deselect", "tests/test_issuer_example.py::test_runs_as_a_real_server",
           "tests/test_state_revocation.py::test_the_refresh_chain_runs_on_the_state_store")),
    # how long a written duration is, which policy decides and at what instant, and the string
    # literals conditions compare with (load_policies runs inside these tests, not at import)
    Group("durations", ("durations.py", "policyset.py", "cel/literals.py"),
          ("tests/test_durations.py", "tests/test_policyset.py", "tests/test_load.py", "tests/test_schema.py",
           "tests/test_cel_conformance.py", "--deselect",
           "tests/test_load.py::test_billion_laughs_is_refused_quickly_and_small")),
    # emergency ceilings and the CEL scopes of the state layer (the two property tests are left
    # out: hypothesis examples per survivor; the focused tests state the same rules)
    Group("emergency", ("state/emergency.py", "state/conditions.py"),
          ("tests/test_state_emergency.py", "tests/test_tighten.py", "--deselect",
           "tests/test_state_emergency.py::test_no_ceiling_ever_lengthens_any_decision", "--deselect",
           "tests/test_state_emergency.py::test_no_emergency_ever_lengthens_any_decision")),
    # the state layer at run time: the step after the policy (rate-limit outcomes, emergencies,
    # the degraded-store ceiling), the store's health and the counting of hits (the two property
    # tests are left out: hypothesis examples per survivor; the focused tests state the same rules)
    Group("degraded", ("state/runtime.py",),
          ("tests/test_state_runtime.py", "tests/test_state_ratelimit.py", "tests/test_state_emergency.py",
           "tests/test_state_work.py", "tests/test_activity_recording.py", "tests/test_state_revocation.py",
           "tests/test_tighten.py", "--deselect",
           "tests/test_state_emergency.py::test_no_ceiling_ever_lengthens_any_decision", "--deselect",
           "tests/test_state_emergency.py::test_no_emergency_ever_lengthens_any_decision", "--deselect",
           # reads benchmarks/contexts.py, which the group's copy does not have; it holds ratelimit.py
           "tests/test_state_ratelimit.py::test_a_key_read_as_sent_is_the_key_the_activation_gives")),
    # rate limits in the policy language: windows, keys (one per address however written), the
    # outcomes that tighten, and their errors at their line (the redis-backed runs are left out:
    # the same rules on the embedded store; every test compiles its policy inside the test; the
    # test over generated contexts needs benchmarks/, which the copy does not hold)
    Group("ratelimit", ("state/ratelimit.py",),
          ("tests/test_state_ratelimit.py", "tests/test_errors.py", "tests/test_state_work.py",
           "tests/test_activity_recording.py", "tests/test_policyset.py", "-k", "not redis", "--deselect",
           "tests/test_state_ratelimit.py::test_a_key_read_as_sent_is_the_key_the_activation_gives")),
)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: all of {', '.join(GROUPS)})")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a mutant survives that equivalent.txt does not explain (no report)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep build/mutation/GROUP from the last run (mutmut re-tests only changed code)")
    parser.add_argument("--from-last-run", action="store_true",
                        help="do not run mutmut: read the results of the last run in build/mutation/GROUP")
    parser.add_argument("--stale", action="store_true",
                        help="list the groups whose row was run on code that has changed since; exit 1 if any")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    args = parser.parse_args(argv)
    if args.list:
        for group in GROUPS.values():
            print(f"{group.name}: {', '.join(group.modules)}\n    tests: {' '.join(group.tests)}")
        return 0
    if args.stale:
        found = stale_rows()
        print("\n".join(found) or f"every row of {REPORT.relative_to(ROOT)} is a run of today's code")
        return 1 if found else 0
    unknown = [name for name in args.groups if name not in GROUPS]
    if unknown:
        parser.error(f"unknown group {', '.join(unknown)}; the groups are {', '.join(GROUPS)}")
    names = args.groups or [name for name in GROUPS if name != "combination"]
    equivalent = read_equivalent(EQUIVALENT)
    rows: dict[str, Row] = {}
    for name in names:
        group = GROUPS[name]
        timing = WORK / name / "run.json"  # when the run finished and how long it took, for --from-last-run
        run: dict[str, Any]
        if args.from_last_run:
            if not (WORK / name / "mutants").is_dir():
                parser.error(f"no results of group {name} in {(WORK / name).relative_to(ROOT)}: run it first")
            statuses = read_statuses(WORK / name)
            run = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0, "finished": "unknown"}
        else:
            started = time.monotonic()
            statuses = run_group(group, args.max_children, args.reuse)
            run = {"seconds": time.monotonic() - started,
                   "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
            timing.write_text(json.dumps(run) + "\n")
        rows[name] = tally(group, statuses, equivalent, run["seconds"], run["finished"])
        rows[name].code = code_digest(WORK / name, group)  # the copy the run mutated
        print(rows[name].summary(), flush=True)
    unexplained = [m for row in rows.values() for m in row.unexplained]
    if args.check:
        for mutant in unexplained:
            print(f"SURVIVED (not in tests/mutation/equivalent.txt): {mutant}")
        return 1 if unexplained else 0
    write_report(rows, equivalent)
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


def code_digest(root: Path, group: Group) -> str:
    """The first 12 hex digits of SHA-256 over the group's modules under ``root``: a row of the
    report names the code it was run on, and ``--stale`` finds rows whose code has changed."""
    digest = hashlib.sha256()
    for module in group.modules:
        digest.update(module.encode() + b"\0" + (root / "src" / "ttlpolicy" / module).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def stale_rows() -> list[str]:
    """Why each group's row in the report is not a run of today's code (empty: all are)."""
    recorded = {name: line.strip("|").split("|")[2].strip() for name, line in _previous_rows().items()} \
        if REPORT.exists() else {}
    found = []
    for name, group in GROUPS.items():
        code = code_digest(ROOT, group)
        if name not in recorded:
            found.append(f"{name}: not run yet")
        elif recorded[name] != code:
            found.append(f"{name}: run on code {recorded[name]}, its modules are now {code}")
    return found


def run_group(group: Group, max_children: int, reuse: bool) -> dict[str, str]:
    """Run mutmut for one group in its own copy of the project; mutant name -> status."""
    workdir = WORK / group.name
    if workdir.exists() and not reuse:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source, target = ROOT / name, workdir / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis"))
        else:
            shutil.copy2(source, target)
    (workdir / "pyproject.toml").write_text(group_pyproject(group))
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *group.functions]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(command, cwd=workdir, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed for group {group.name} (exit {done.returncode}); see its output above")
    return read_statuses(workdir)


def group_pyproject(group: Group) -> str:
    """The project's pyproject.toml with ``[tool.mutmut]`` narrowed to one group."""
    text = (ROOT / "pyproject.toml").read_text()
    shared = tomllib.loads(text)["tool"]["mutmut"]
    settings = {**shared,
                "only_mutate": [f"src/ttlpolicy/{module}" for module in group.modules],
                "pytest_add_cli_args_test_selection": [t for t in group.tests
                                                       if not t.startswith("tests/") or (ROOT / t.split("::")[0]).exists()]}
    before, _, rest = text.partition("[tool.mutmut]")
    after = rest[rest.index("\n["):] if "\n[" in rest else ""
    lines = ["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return before + "\n".join(lines) + "\n" + after


def read_statuses(workdir: Path) -> dict[str, str]:
    """Every mutant's status, from the ``.meta`` files mutmut writes next to each mutated module."""
    from mutmut.stats import status_by_exit_code  # mutmut's own mapping of exit codes to statuses

    statuses: dict[str, str] = {}
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        for mutant, exit_code in json.loads(meta.read_text())["exit_code_by_key"].items():
            statuses[mutant] = status_by_exit_code[exit_code]
    return statuses


def read_equivalent(path: Path) -> dict[str, str]:
    """``mutant-name  reason`` lines (``#`` comments); every entry must give a reason."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path.relative_to(ROOT)}:{number}: {name} has no reason")
        entries[name] = reason.strip()
    return entries


@dataclass
class Row:
    group: Group
    killed: int
    survived: int
    equivalent: int
    timeout: int
    no_tests: int
    other: int
    seconds: float
    finished: str
    unexplained: list[str]
    stale: list[str]  # equivalent.txt entries of this group that were killed (the reason no longer holds)
    not_checked: int = 0  # the run was stopped before mutmut tried these
    code: str = "unknown"  # code_digest() of the modules the run mutated


    @property
    def total(self) -> int:
        return (self.killed + self.survived + self.equivalent + self.timeout + self.no_tests + self.other
                + self.not_checked)

    def summary(self) -> str:
        return (f"{self.group.name}: {self.total} mutants, {self.killed} killed, {self.survived} survived, "
                f"{self.equivalent} equivalent, {self.timeout} timeout, {self.no_tests} without tests "
                f"({self.seconds / 60:.1f} min)")


def tally(group: Group, statuses: dict[str, str], equivalent: dict[str, str], seconds: float, finished: str) -> Row:
    patterns = [re.compile(p.replace(".", r"\.").replace("*", ".*")) for p in group.functions]
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "no tests": 0, "other": 0,
              "not checked": 0}
    unexplained, stale = [], []
    for mutant, status in sorted(statuses.items()):
        if patterns and not any(p.fullmatch(mutant) for p in patterns):
            continue
        if status in ("survived", "no tests") and mutant in equivalent:
            status = "equivalent"
        elif status in ("survived", "no tests", "suspicious", "segfault"):
            unexplained.append(mutant)
        elif status in ("killed", "caught by type check") and mutant in equivalent:
            stale.append(mutant)
        key = status if status in counts else ("killed" if status == "caught by type check" else "other")
        counts[key] += 1
    return Row(group, counts["killed"], counts["survived"], counts["equivalent"], counts["timeout"],
               counts["no tests"], counts["other"], seconds, finished, unexplained, stale, counts["not checked"])


def write_report(rows: dict[str, Row], equivalent: dict[str, str]) -> None:
    """benchmarks/MUTATION.md: this run's rows, and the rows of groups not run this time kept as they were."""
    kept = _previous_rows() if REPORT.exists() else {}
    machine = f"{platform.node() or 'unknown host'}, {platform.machine()}, {os.cpu_count()} CPUs, " \
              f"Python {platform.python_version()}, mutmut {_mutmut_version()}"
    lines = ["# Mutation testing results", "",
             "Written by `make mutation` (benchmarks/mutation.py); how to read it: docs/mutation.md.", "",
             "| group | modules | code | mutants | killed | survived | equivalent | timeout | no tests | minutes | run |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in GROUPS:
        if name in rows:
            row = rows[name]
            partial = f" (stopped: {row.not_checked} not tried)" if row.not_checked else ""
            lines.append(f"| {name} | {', '.join(row.group.modules)}{partial} | {row.code} | {row.total} | {row.killed} | {row.survived} | "
                         f"{row.equivalent} | {row.timeout} | {row.no_tests} | {row.seconds / 60:.1f} | "
                         f"{row.finished} on {machine} |")
        elif name in kept:
            lines.append(kept[name])
    missing = [name for name in GROUPS if name not in rows and name not in kept]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    lines += ["", "Equivalent mutants are listed with their reasons in tests/mutation/equivalent.txt "
              f"({len(equivalent)} entries).", ""]
    survivors: dict[str, list[str]] = {}  # function -> the numbers of its unexplained survivors
    run_modules = {f"ttlpolicy.{module.removesuffix('.py').replace('/', '.')}"
                   for row in rows.values() for module in row.group.modules}
    for function, numbers in (_previous_survivors() if REPORT.exists() else {}).items():
        if re.split(r"\.x[_ǁ]", function, maxsplit=1)[0] not in run_modules:  # a group not run: keep its list
            survivors[function] = numbers
    for row in rows.values():
        for mutant in row.unexplained:
            function, _, number = mutant.rpartition("__mutmut_")
            survivors.setdefault(function, []).append(number)
    if survivors:
        lines += ["## Survivors without a recorded reason, by function", "",
                  "`mutmut show FUNCTION__mutmut_N` in build/mutation/GROUP/ prints one.", ""]
        lines += [f"- `{function}`: {len(numbers)} ({', '.join(sorted(numbers, key=int))})"
                  for function, numbers in sorted(survivors.items())] + [""]
    stale = [m for row in rows.values() for m in row.stale]
    if stale:
        lines += ["## equivalent.txt entries now killed (remove them)", ""] + [f"- `{m}`" for m in stale] + [""]
    REPORT.write_text("\n".join(lines))


def _previous_rows() -> dict[str, str]:
    rows = {}
    for line in REPORT.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in GROUPS:
            if len(cells) == 10:  # a row written before the code column
                line = "| " + " | ".join(cells[:2] + ["unknown"] + cells[2:]) + " |"
            rows[cells[0]] = line
    return rows


def _previous_survivors() -> dict[str, list[str]]:
    """The survivor lists of the last report (``- `FUNCTION`: COUNT (N, N, ...)``), function -> numbers."""
    found = re.findall(r"^- `([^`]+)`: \d+ \(([\d, ]+)\)$", REPORT.read_text(), flags=re.MULTILINE)
    return {function: numbers.split(", ") for function, numbers in found}


def _mutmut_version() -> str:
    from importlib import metadata

    return metadata.version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
