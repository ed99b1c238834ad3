"""Every bound docs/policy-language.md states is enforced: this test reads the "Bounds" table
and, for each row, loads a policy just beyond the bound (refused with the row's code, at the
offending value's line) and, where the bound is a number, one exactly at it (accepted).

A row without a case below fails the test, so a newly documented bound needs its proof, and
a bound the code stops enforcing fails here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

from ttlpolicy import PolicyError, load_sources
from ttlpolicy.durations import format_duration, parse_duration
from ttlpolicy.errors import CODES
from ttlpolicy.load import MAX_FILE_BYTES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy-language.md"
HEAD = "apiVersion: ttlpolicy/v1\nname: p\n"
BASE = "defaults: {access_ttl: 1h, refresh_ttl: 1d}\n"
MARK = "  # <- here"


def documented_bounds() -> list[tuple[str, str, str]]:
    """(setting, bound, code) for every row of the Bounds table."""
    text = DOCS.read_text()
    section = text[text.index("\n## Bounds\n"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    out = []
    for row in rows:
        setting, bound, code = (cell.strip() for cell in row.strip("|").split("|"))
        out.append((setting, bound, code.strip("`")))
    return out


def literal(bound: str) -> str:
    """The first `quoted` value of a bound: `5m`, `64`, `36500d`."""
    found = re.search(r"`([^`]+)`", bound)
    assert found, bound
    return found.group(1)


# Each case: (setting, value) -> policy text with the offending value on the line marked MARK.
# ``value`` is the documented bound for numeric bounds, nudged by the test to each side.
Case = Callable[[str], str]


def _grace(value: str) -> str:
    return (HEAD + BASE + "rules:\n  - name: r\n    when: user.mfa\n"
            f"    refresh: {{reuse_grace: {value}}}{MARK}\n")


def _duration(value: str) -> str:
    return HEAD + f"defaults:\n  access_ttl: {value}{MARK}\n  refresh_ttl: {value}\n"


def _factor(value: str) -> str:
    return HEAD + BASE + f"rules:\n  - name: r\n    when: user.mfa\n    access_ttl: {{multiply: {value}}}{MARK}\n"


def _name(value: str) -> str:
    return HEAD.replace("name: p", f"name: {value}{MARK}") + BASE


def _allowed_value(value: str) -> str:
    return HEAD + BASE + f"attributes:\n  user.badge:\n    type: string\n    values:\n      - {value}{MARK}\n"


def _literal(value: str) -> str:
    return HEAD + BASE + f"rules:\n  - name: r\n    when: size(user.groups) < {value}{MARK}\n    deny: x\n"


NUMERIC: dict[str, tuple[Case, Callable[[str], tuple[str, str]]]] = {
    # setting -> (policy builder, bound -> (just beyond, at))
    "every duration": (_duration, lambda b: (f"{parse_duration(b) + 1}", b)),
    "`refresh.reuse_grace` (in `defaults` and in rules)": (
        _grace, lambda b: (format_duration(parse_duration(b) + 1), b)),
    "`multiply` as a number, and an expression factor's `min` and `max`": (
        _factor, lambda b: (str(float(b) - 0.5), b)),
    "policy and rule `name`": (_name, lambda b: ("a" * (int(b) + 1), "a" * int(b))),
    "each of an attribute's `values`": (_allowed_value, lambda b: ("a" * (int(b) + 1), "a" * int(b))),
    "an integer literal in a condition": (_literal, lambda b: (str(int(b) + 1), b)),
}

RELATIONAL: dict[str, str] = {
    # setting -> a policy beyond the bound, the offending value on the marked line
    "an expression factor's `max`": HEAD + BASE + "rules:\n  - name: r\n    when: user.mfa\n"
                                    "    access_ttl:\n      multiply: {expr: '1.0 - user.risk', min: 0.5,\n"
                                    f"                 max: 0.4}}{MARK}\n",
    "`limits.*.min`": HEAD + BASE + f"limits:\n  access_ttl:\n    min: 2h{MARK}\n    max: 1h\n",
    "a tier's `access_ttl` and `refresh_ttl`": HEAD + BASE + f"tiers:\n  fin:\n    access_ttl: 2h{MARK}\n"
                                               "    max_access_ttl: 1h\n",
    "a tier's `max_access_ttl` and `max_refresh_ttl`": HEAD + BASE + "limits: {access_ttl: {max: 1h}}\n"
                                                       f"tiers:\n  fin:\n    max_access_ttl: 2h{MARK}\n",
    "a rule's `floor`": HEAD + BASE + "rules:\n  - name: r\n    when: user.mfa\n    access_ttl:\n"
                        f"      cap: 10m\n      floor: 20m{MARK}\n",
    "an attribute's `min`": HEAD + BASE + f"attributes:\n  user.level:\n    type: int\n    min: 5{MARK}\n    max: 1\n",
    "an attribute's `default`": HEAD + BASE + "attributes:\n  user.level:\n    type: int\n    min: 0\n    max: 5\n"
                                f"    default: 9{MARK}\n",
    "a number a condition compares an attribute with": HEAD + BASE + "rules:\n  - name: r\n"
                                                       f"    when: time.hour > 23{MARK}\n    deny: x\n",
    "the nesting of a condition (and of every other CEL text: rate-limit keys, emergency scopes, test and invariant "
    "conditions)": HEAD + BASE + "rules:\n  - name: r\n    when: '" + "(" * 30 + "user.mfa" + ")" * 30
                   + f"'{MARK}\n    deny: x\n",
}


def _refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_sources({"p.yaml": text})
    return info.value


def _marked_line(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.endswith(MARK))


ROWS = documented_bounds()


def test_the_table_is_there_and_names_real_codes() -> None:
    assert len(ROWS) >= 10
    for setting, bound, code in ROWS:
        assert code in CODES, (setting, code)


@pytest.mark.parametrize("setting, bound, code", ROWS, ids=[r[0][:40] for r in ROWS])
def test_each_documented_bound_is_enforced(setting: str, bound: str, code: str) -> None:
    if setting == "a policy file":
        limit = int(literal(bound))
        assert limit == MAX_FILE_BYTES
        padding = "#" * (limit + 1 - len(HEAD + BASE))
        with pytest.raises(PolicyError) as info:
            load_sources({"p.yaml": (HEAD + BASE + padding).encode()})
        assert [p.code for p in info.value.problems] == [code]
        load_sources({"p.yaml": (HEAD + BASE + "#" * (limit - len(HEAD + BASE) - 1) + "\n").encode()})
        return
    if setting in NUMERIC:
        build, sides = NUMERIC[setting]
        beyond, at = sides(literal(bound))
        text = build(beyond)
        error = _refused(text)
        found = [(p.code, p.location.line if p.location else 0) for p in error.errors]
        assert (code, _marked_line(text)) in found, found
        load_sources({"p.yaml": build(at)})  # exactly at the bound: accepted
        return
    assert setting in RELATIONAL, f"documented bound without a test case: {setting!r}"
    text = RELATIONAL[setting]
    error = _refused(text)
    found = [(p.code, p.location.line if p.location else 0) for p in error.errors]
    assert (code, _marked_line(text)) in found, found
