"""``ttlpolicy compile``: run the compiler's stages and show what they produced.

``--show POLICY`` prints the policy's generated program (the Python function every decision
runs, with the file and line of each rule); without it, each policy's summary and the time each
stage took.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..compile import STAGES, compile_sources
from ..errors import Problem, ProblemCollector, render_text
from ..load import read_source
from ..policyset import POLICY_SUFFIXES
from .output import fail, report, write_json


EXAMPLES = (
    "ttlpolicy compile                               # every stage over policies/, with its timing",
    "ttlpolicy compile --show workforce              # the Python the workforce policy compiles to",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("compile", help="compile policies; --show prints a policy's generated program",
                            description="Run the compiler's stages over a policy directory. Exit 0 when every "
                                        "policy compiled, 1 with errors (listed on stderr), 2 for usage or I/O "
                                        "errors.")
    parser.add_argument("--policies", default="policies", metavar="DIR", help="policy directory (default: policies/)")
    parser.add_argument("--show", metavar="POLICY", help="print the generated program of this policy")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text for people (default) or json (each stage's timing and problems)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.policies)
    files = sorted(p for p in root.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file()) if root.is_dir() else (
        [root] if root.is_file() else [])
    if not files:
        return fail("no-policies", f"no policy files in {args.policies}")
    sources: dict[str, bytes | str] = {}
    problems = []
    for file in files:
        collector = ProblemCollector(str(file))
        text = read_source(file, collector)
        problems += collector.problems
        if text is not None:
            sources[str(file)] = text
    compilation = compile_sources(sources, problems=problems)
    errors = list(dict.fromkeys(p for p in compilation.problems if p.severity == "error"))
    as_json = args.format == "json"
    if errors and not as_json:  # the JSON answer lists them itself
        print(render_text(errors, compilation.texts), file=sys.stderr)
    if args.show is not None:
        policy = compilation.generate.get(args.show)
        if policy is None or policy.program is None:
            known = ", ".join(sorted(compilation.generate)) or "none"
            return report([Problem("unknown-policy", f"no compiled policy named {args.show!r} (compiled: {known})")],
                          1 if errors else 2, compilation.texts, listed=errors if as_json else ())
        if as_json:
            write_json({"policy": policy.name, "digest": policy.digest, "source": policy.program.source,
                        "fallbacks": [{"rule": rule, "reason": reason} for rule, reason in policy.program.fallbacks],
                        "problems": [p.to_dict() for p in errors]})
        else:
            sys.stdout.write(policy.program.source)
        return 1 if errors else 0
    summary: dict[str, Any] = {
        "stages": [{"name": s.name, "does": s.does, "seconds": round(compilation.seconds.get(s.name, 0.0), 4)}
                   for s in STAGES],
        "policies": [{"name": p.name, "rules": len(p.rules), "digest": p.digest,
                      "closures": len(p.program.fallbacks) if p.program else 0}
                     for p in compilation.generate.values()],
        "errors": len(errors),
        "problems": [p.to_dict() for p in errors],
    }
    if as_json:
        write_json(summary)
    else:
        for stage in summary["stages"]:
            print(f"{stage['name']:<10} {stage['seconds'] * 1000:8.1f} ms  {stage['does']}")
        for policy in summary["policies"]:
            print(f"{policy['name']}: {policy['rules']} rules, {policy['closures']} conditions called as closures, "
                  f"{policy['digest']}")
    return 1 if errors else 0
