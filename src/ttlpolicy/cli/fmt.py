"""``ttlpolicy fmt [PATH...] [--check]``: lay out policy and test files canonically, comments kept."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from ..errors import Location, Problem
from .output import fail, report

EXAMPLES = (
    "ttlpolicy fmt                                   # rewrite policies/ (and policies/tests/) in place",
    "ttlpolicy fmt --check                           # in CI: exit 1 and list the files that need it",
    "ttlpolicy fmt policies/workforce.yaml --diff    # show what would change, write nothing",
)
SUFFIXES = (".yaml", ".yml")


def register(sub: Any) -> None:
    parser = sub.add_parser("fmt", help="format policy and test files canonically, keeping comments",
                            description="Rewrite YAML policy and test files in one canonical layout (indentation, "
                                        "spacing, final newline), keeping every comment, quote style and key order "
                                        "(like `opa fmt`). Exit 0, 1 with --check when a file needs formatting, 2 "
                                        "for usage, I/O or YAML errors.")
    parser.add_argument("paths", nargs="*", default=["policies"], metavar="PATH",
                        help="files, or directories searched recursively for *.yaml (default: policies/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is not formatted")
    parser.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")
    parser.set_defaults(run=run)


def files_in(paths: list[str]) -> tuple[list[Path], list[str]]:
    found: list[Path] = []
    missing: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            missing.append(str(path))
    return found, missing


def run(args: argparse.Namespace) -> int:
    from ..formatting import FormatError, format_yaml

    files, missing = files_in(args.paths)
    if missing:
        return fail("io-error", f"no such file or directory: {', '.join(missing)}")
    changed: list[Path] = []
    problems: list[Problem] = []
    sources: dict[str, str] = {}
    for file in files:
        try:
            original = file.read_text(encoding="utf-8")
            formatted = format_yaml(original)
        except OSError as exc:
            problems.append(Problem("io-error", exc.strerror or str(exc), Location(str(file))))
            continue
        except UnicodeDecodeError as exc:
            problems.append(Problem("file-encoding", f"not UTF-8 ({exc.reason})", Location(str(file))))
            continue
        except FormatError as exc:
            problems.append(Problem(exc.code, exc.message, Location(str(file), exc.line, exc.column)))
            sources[str(file)] = original
            continue
        if formatted == original:
            continue
        changed.append(file)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(original.splitlines(True), formatted.splitlines(True),
                                                       f"{file} (as is)", f"{file} (formatted)"))
        elif args.check:
            print(f"{file}: not formatted (ttlpolicy fmt {file})")
        else:
            file.write_text(formatted, encoding="utf-8")
            print(f"formatted {file}")
    if problems:  # every file that could be formatted was; these could not (exit 2)
        return report(problems, 2, sources)
    if args.check and changed:
        return 1
    if not changed and not args.diff:
        print(f"{len(files)} file{'s' * (len(files) != 1)} already formatted")
    return 0
