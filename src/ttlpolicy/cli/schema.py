"""``ttlpolicy schema``: print the policy JSON Schema, for editors and other tools."""

from __future__ import annotations

import argparse
from typing import Any

from ..validate import policy_schema
from .output import write_json


EXAMPLES = (
    "ttlpolicy schema > policy.schema.json           # for an editor's YAML language server",
    "ttlpolicy schema | jq '.properties | keys'      # the top-level keys a policy may have",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("schema", help="print the policy JSON Schema (draft 2020-12)",
                            description="Print the JSON Schema that policy files are validated against.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    write_json(policy_schema())
    return 0
