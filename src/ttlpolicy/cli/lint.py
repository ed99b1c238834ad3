"""``ttlpolicy lint [PATH...]``: load, validate and type-check policies; report every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import PolicyError, load_policies
from ..policyset import POLICY_SUFFIXES
from ..errors import Problem, render_text
from . import lint_formats
from .output import colourise, fail, missing_policies_hint, plural, write_json

# Machine formats register here (github and sarif live in their own modules).
FORMATS: dict[str, Callable[[list[Problem], dict[str, Any]], str]] = {}
FORMATS.update(lint_formats.FORMATS)


EXAMPLES = (
    'ttlpolicy lint                                  # every policy in policies/',
    'ttlpolicy lint policies/workforce.yaml --strict # one file (its bases are found beside it); warnings fail too',
    'ttlpolicy lint --format github                  # annotations on the changed lines of a pull request',
)


def register(sub: Any) -> None:
    parser = sub.add_parser("lint", help="validate and type-check policy files",
                            description="Validate policies against the schema, type-check their CEL and run the "
                                        "semantic checks. Exit 0 clean (warnings allowed unless --strict), "
                                        "1 errors found, 2 usage or I/O error.")
    parser.add_argument("paths", nargs="*", default=["policies"], metavar="PATH",
                        help="policy directories or files (default: policies/)")
    parser.add_argument("--format", choices=["text", "json", *FORMATS], default="text",
                        help="text for people (default), json, github (workflow annotations), sarif (code scanning)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) on warnings too, e.g. loosening rules that need a reviewer's sign-off; "
                             "a rule acknowledges an intended warning with `allow: [{code, reason}]`")
    parser.set_defaults(run=run)


def with_bases(paths: list[str]) -> list[str]:
    """``paths`` plus, for each policy *file*, the files beside it that define the bases it extends.

    ``ttlpolicy lint policies/workforce.yaml`` then checks workforce.yaml against the baseline
    it extends instead of reporting an unknown base.
    """
    result = list(paths)
    for path in map(Path, paths):
        if not path.is_file():
            continue
        wanted = list(_extends(_peek(path)))
        if not wanted:
            continue  # no bases to find: its siblings need not be read
        by_name = {}
        for sibling in sorted(path.parent.iterdir()):
            if sibling.suffix in POLICY_SUFFIXES and sibling.is_file():
                data = _peek(sibling, want_name=True)
                if isinstance(data.get("name"), str):
                    by_name[data["name"]] = sibling
        while wanted:
            base = by_name.pop(wanted.pop(), None)
            if base is not None and str(base) not in result and base.resolve() != path.resolve():
                result.append(str(base))
                wanted += _extends(_peek(base))
    return result


def _peek(path: Path, want_name: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or {} (the real load reports what is wrong with it).

    libyaml's loader where PyYAML has it: the pure-Python one took longer than the whole load of
    a 1,000-rule policy, only to find its name and bases."""
    try:
        text = path.read_text(encoding="utf-8")
        if "extends" not in text and not want_name:
            return {}  # no key `extends`: nothing to peek at (reading 1,000 rules to learn that took 0.1 s)
        data = yaml.load(text, Loader=_PEEK_LOADER)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


_PEEK_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _extends(data: dict[str, Any]) -> list[str]:
    extends = data.get("extends") or []
    extends = [extends] if isinstance(extends, str) else extends
    return [name for name in extends if isinstance(name, str)] if isinstance(extends, list) else []


def run(args: argparse.Namespace) -> int:
    try:
        policies = load_policies(*with_bases(args.paths))
        problems, sources, summary = list(policies.warnings), policies.sources, [p.summary() for p in policies]
    except PolicyError as exc:
        problems, sources, summary = exc.problems, exc.sources, []
    io_only = problems and all(p.code in ("io-error", "no-policies") for p in problems)
    # Notes (warnings a rule acknowledges with a reason) are shown but never fail, not even --strict.
    errors = [p for p in problems if p.severity == "error" or (args.strict and p.severity == "warning")]
    if args.format == "json":
        write_json({"ok": not errors, "problems": [p.to_dict() for p in problems], "policies": summary})
    elif args.format in FORMATS:
        sys.stdout.write(FORMATS[args.format](problems, sources))
    else:
        if problems:
            print(colourise(render_text(problems, sources)))
        for policy in summary:
            print(colourise(f"ok: policy {policy['name']} ({plural(policy['rules'], 'rule')}, {policy['digest'][:19]})"))
    if io_only:
        if args.format != "json":  # the JSON already lists the problem; the hint is for people
            for path in args.paths:
                hint = missing_policies_hint(path, how="name the policy directory (ttlpolicy lint DIR)")
                if hint:
                    fail("io-error", f"cannot lint {path}{hint}")
        return 2
    return 1 if errors else 0
