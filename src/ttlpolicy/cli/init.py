"""``ttlpolicy init [DIR]``: scaffold a policy set that lints, tests and serves as it is.

The files come from ``ttlpolicy/scaffold/`` inside the package (so ``init`` works from an
installed wheel): an abstract base, a default policy, its tests with full rule coverage, a
sample context, the JSON Schema for editors, a pre-commit configuration and a GitHub Actions
workflow. Nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .output import fail

EXAMPLES = (
    "ttlpolicy init                                  # in the current directory",
    "ttlpolicy init my-policies && cd my-policies && ttlpolicy lint && ttlpolicy test",
)

# template in ttlpolicy/scaffold/ → where it goes in the new project
FILES = {
    "base.yaml": "policies/base.yaml",
    "default.yaml": "policies/default.yaml",
    "tests-default.yaml": "policies/tests/default.yaml",
    "office-laptop.json": "contexts/office-laptop.json",
    "pre-commit-config.yaml": ".pre-commit-config.yaml",
    "github-workflow.yml": ".github/workflows/ttlpolicy.yml",
}
SCHEMA = "schema/policy.schema.json"  # written from the package's schema, for `# yaml-language-server`


def register(sub: Any) -> None:
    parser = sub.add_parser("init", help="start a policy set: policies, tests, CI, pre-commit",
                            description="Create a working policy set in DIR (default: the current directory): an "
                                        "abstract base, a default policy, tests that cover every rule, a sample "
                                        "context, the JSON Schema for editors, a .pre-commit-config.yaml and a "
                                        "GitHub Actions workflow. Existing files are never overwritten (exit 2).")
    parser.add_argument("directory", nargs="?", default=".", metavar="DIR",
                        help="where to create the files (created if missing; default: .)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..validate import policy_schema
    from .output import write_json

    root = Path(args.directory)
    targets = [*FILES.values(), SCHEMA]
    existing = [name for name in targets if (root / name).exists()]
    if existing:
        return fail("file-exists", f"{root} already has {', '.join(existing)}; nothing was written (init never overwrites)")
    templates = resources.files("ttlpolicy") / "scaffold"
    for template, target in FILES.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((templates / template).read_text(encoding="utf-8"), encoding="utf-8")
    (root / SCHEMA).parent.mkdir(parents=True, exist_ok=True)
    with open(root / SCHEMA, "w", encoding="utf-8") as stream:
        write_json(policy_schema(), stream)
    where = "" if args.directory == "." else f"cd {args.directory}\n  "
    print(f"created a policy set in {root}:\n" + "".join(f"  {name}\n" for name in targets) +
          f"next:\n  {where}ttlpolicy lint && ttlpolicy test          # both pass as they are\n"
          "  ttlpolicy decide --context contexts/office-laptop.json --format text\n"
          "  ttlpolicy serve                               # http://127.0.0.1:8080/v1/decide\n"
          "  git init && pre-commit install                # lint and test before every commit",
          file=sys.stdout)
    return 0
