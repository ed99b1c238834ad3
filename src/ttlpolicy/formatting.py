"""Canonical layout for policy and test files, keeping every comment (``ttlpolicy fmt``).

ruamel.yaml's round-trip mode is used because it keeps comments, quoting, block scalars and
key order, where PyYAML (our loader) drops comments. What is made canonical is the layout:
2-space mappings, lists indented under their key (``- `` at +2), one space after ``:`` and
``#``-comments kept where they were, no trailing spaces, one final newline. Keys are never
reordered, so a diff of a formatted file shows only layout. A file is rewritten only if the
formatted text means exactly the same data (checked by loading both with the safe loader).
"""

from __future__ import annotations

import io
from typing import Any

import yaml


class FormatError(ValueError):
    """The text cannot be formatted: not YAML (``yaml-syntax``), or formatting would change its
    meaning (``fmt-changes-meaning``); ``code`` is the problem code of ttlpolicy.errors.CODES."""

    def __init__(self, message: str, line: int = 1, column: int = 1, code: str = "yaml-syntax"):
        super().__init__(message)
        self.message, self.line, self.column, self.code = message, line, column, code


def format_yaml(text: str) -> str:
    """``text`` in canonical layout, comments kept; raises :class:`FormatError`.

    >>> format_yaml("a:   1\\nlist:\\n- x   # note\\n")
    'a: 1\\nlist:\\n  - x   # note\\n'
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 4096  # never re-wrap a long line (a CEL condition stays as written)
    try:
        data = rt.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FormatError(f"not valid YAML: {exc.problem or exc.context}",
                          (mark.line + 1) if mark else 1, (mark.column + 1) if mark else 1) from None
    except YAMLError as exc:
        raise FormatError(f"not valid YAML: {exc}") from None
    if data is None:
        return text
    out = io.StringIO()
    rt.dump(data, out)
    formatted = "\n".join(line.rstrip() for line in out.getvalue().split("\n")).rstrip("\n") + "\n"
    if _meaning(formatted) != _meaning(text):
        raise FormatError("formatting would change what the file means; left as it is", code="fmt-changes-meaning")
    return formatted


def _meaning(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(f"not valid YAML: {exc}") from None
