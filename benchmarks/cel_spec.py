#!/usr/bin/env python3
"""Run cel-spec's own conformance tests on ttlpolicy's CEL and write benchmarks/CEL-SPEC.md.

    python benchmarks/cel_spec.py PATH-TO-CEL-SPEC      # a checkout (or a bare clone) of google/cel-spec
    python benchmarks/cel_spec.py PATH --list-failures  # also print every case that is not a pass

The repository's tests (tests/test_cel_conformance.py) are written from the language definition;
this is the check from outside: cel-spec's ``tests/simple/testdata/*.textproto`` files, read as
they are (nothing of them is kept in this repository), each expression compiled by the native
backend and run twice -- on its closures and as generated code. Cases that bind variables of a
plain type run with those bindings; cases that need protocol buffer messages, a container or
type declarations only are left out and counted.

A case ends as one of:

- **pass** -- the value the spec expects (compared with CEL's equality), or an error where it
  expects one;
- **refused** -- the expression is not part of the policy language (``dyn()``, ``type()``,
  messages, extensions ...): lint refuses it with a reason, so no policy can contain it;
- **error, spec has a value** -- an error where the spec has a value: stricter than CEL;
- **value, spec has an error** -- the dangerous direction for a security policy (a condition
  that should fail, and so tighten, returns something); the goal is 0;
- **wrong value** -- a value other than the spec's;
- **crash** -- anything but a CEL error escaped.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from celpy.celparser import CELParser  # noqa: E402

from ttlpolicy.cel.native import CELEvalError, UnsupportedExpression, compile_expression  # noqa: E402
from ttlpolicy.cel.native_functions import eq  # noqa: E402

REPORT = ROOT / "benchmarks" / "CEL-SPEC.md"
TESTDATA = "tests/simple/testdata"
OUTCOMES = ("pass", "refused", "error, spec has a value", "value, spec has an error", "wrong value", "crash")


# ------------------------------------------------------------------------- protobuf text format


class TextFormatError(ValueError):
    pass


_TOKEN = re.compile(r"""
    \s+ | \#[^\n]*                                   # space, comments
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fFuU]?(?![\w.]))
  | (?P<name>-?[A-Za-z_][\w.]*|\[[\w./]+\])          # field names, enum values, inf/-inf/nan, [ext]
  | (?P<punct>[{}<>\[\]:,;])
""", re.VERBOSE)

_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
            "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}


def unescape(body: str) -> bytes:
    """The bytes a text-format string literal (without its quotes) stands for."""
    out = bytearray()
    raw = body.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] != 0x5C:
            out.append(raw[i])
            i += 1
            continue
        c = chr(raw[i + 1])
        if c in "01234567":
            j = i + 1
            while j < len(raw) and j < i + 4 and chr(raw[j]) in "01234567":
                j += 1
            out.append(int(raw[i + 1:j], 8))
        elif c in "xX":
            j = i + 2
            while j < len(raw) and j < i + 4 and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 2:j], 16))
        elif c in "uU":
            j = i + 2 + (4 if c == "u" else 8)
            out += chr(int(raw[i + 2:j], 16)).encode("utf-8", "surrogatepass")
        elif c in _ESCAPES:
            out += _ESCAPES[c]
            j = i + 2
        else:
            raise TextFormatError(f"unknown escape \\{c}")
        i = j
    return bytes(out)


Message = dict[str, list[Any]]  # field name -> its values in order (a message, a string, bytes or a number)


def parse_text_format(text: str) -> Message:
    """A protobuf text-format document as nested dicts, without the message's schema: every field
    may repeat, strings stay bytes (``text`` reads one as UTF-8) and scalars stay their token."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise TextFormatError(f"line {line}: cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup:
            tokens.append((m.lastgroup, m.group(m.lastgroup)))
    at = 0

    def message(closing: str | None) -> Message:
        nonlocal at
        fields: Message = {}
        while True:
            if at == len(tokens):
                if closing is not None:
                    raise TextFormatError(f"missing {closing!r}")
                return fields
            kind, value = tokens[at]
            if closing is not None and value == closing:
                at += 1
                return fields
            if kind != "name":
                raise TextFormatError(f"expected a field name, found {value!r}")
            at += 1
            if tokens[at][1] == ":":
                at += 1
            fields.setdefault(value, []).extend(values())
            if at < len(tokens) and tokens[at][1] in (",", ";"):
                at += 1

    def values() -> list[Any]:
        nonlocal at
        kind, value = tokens[at]
        if value == "[":  # a repeated field's short form
            at += 1
            items: list[Any] = []
            while tokens[at][1] != "]":
                items.extend(values())
                if tokens[at][1] == ",":
                    at += 1
            at += 1
            return items
        if value in ("{", "<"):
            at += 1
            return [message("}" if value == "{" else ">")]
        if kind == "string":  # adjacent literals are one string
            data = b""
            while at < len(tokens) and tokens[at][0] == "string":
                data += unescape(tokens[at][1][1:-1])
                at += 1
            return [data]
        if kind in ("number", "name"):
            at += 1
            return [value]
        raise TextFormatError(f"unexpected {value!r}")

    return message(None)


def text(value: bytes) -> str:
    return value.decode("utf-8")


# ------------------------------------------------------------------------------ cel.expr.Value


class NotComparable(Exception):
    """A value the plain Python world of this check cannot hold (a message, a type, an enum)."""


def _integer(token: str) -> int:
    token = token.rstrip("uU")
    return int(token, 16) if token.lower().lstrip("-").startswith("0x") else int(token)


def _double(token: str) -> float:
    """A double's token: ``-0`` keeps its sign, ``inf``/``-Infinity``/``nan`` are names here."""
    return float(token if token.lower().lstrip("-") in ("inf", "infinity", "nan") else token.rstrip("fF"))


def to_python(value: Message) -> Any:
    """A ``cel.expr.Value`` as the native backend returns it (uint as int, bytes as bytes)."""
    if len(value) != 1:
        raise NotComparable("an empty value")
    (name, (item,)), = value.items()
    if name in ("int64_value", "uint64_value"):
        return _integer(item)
    if name == "double_value":
        return _double(item)
    if name == "bool_value":
        return item == "true"
    if name == "string_value":
        return text(item)
    if name == "bytes_value":
        return item
    if name == "null_value":
        return None
    if name == "list_value":
        return [to_python(v) for v in item.get("values", [])]
    if name == "map_value":
        return {_key(to_python(e["key"][0])): to_python(e["value"][0]) for e in item.get("entries", [])}
    raise NotComparable(name)


def _key(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise NotComparable("a map key that is not a scalar")
    return key


def same(ours: Any, spec: Any) -> bool:
    """CEL equality, and the same kind: 1 and 1.0 are equal in CEL but a different answer here."""
    if isinstance(spec, float) and isinstance(ours, float) and math.isnan(spec):
        return math.isnan(ours)
    if type(spec) is not type(ours) and not (isinstance(spec, int) and isinstance(ours, int)
                                              and not isinstance(ours, bool)):
        return False
    if isinstance(spec, list):
        return len(spec) == len(ours) and all(same(o, s) for o, s in zip(ours, spec))
    if isinstance(spec, dict):
        return spec.keys() == ours.keys() and all(same(ours[k], spec[k]) for k in spec)
    return bool(eq(ours, spec)) and (not isinstance(spec, float) or math.copysign(1, spec) == math.copysign(1, ours))


# ----------------------------------------------------------------------------------- the run


@dataclass
class Case:
    file: str
    section: str
    name: str
    expr: str
    bindings: dict[str, Any]
    expects_error: bool
    expected: Any = None
    comparable: bool = True


@dataclass
class Result:
    case: Case
    generated: bool
    outcome: str
    detail: str = ""


# Fields of a SimpleTest this check cannot honour: the case is left out (and counted).
_LEFT_OUT = {"container": "a container", "disable_macros": "macros disabled", "check_only": "type checking only",
             "unknown": "unknown values", "any_unknowns": "unknown values", "typed_result": "a typed result",
             "disable_check": None, "type_env": None, "description": None, "name": None, "expr": None,
             "bindings": None, "value": None, "eval_error": None, "any_eval_errors": None}


def cases_of(file: str, document: Message) -> tuple[list[Case], Counter[str]]:
    cases: list[Case] = []
    left_out: Counter[str] = Counter()
    for section in document.get("section", []):
        for test in section.get("test", []):
            reason = next((_LEFT_OUT.get(f, f"the field {f}") for f in test if _LEFT_OUT.get(f, f) is not None), None)
            bindings: dict[str, Any] = {}
            try:
                for entry in test.get("bindings", []):
                    bindings[text(entry["key"][0])] = to_python(entry["value"][0]["value"][0])
            except (NotComparable, KeyError):
                reason = reason or "a binding that is a message"
            if any("." in name for name in bindings):  # a policy's context is nested maps, not dotted names
                reason = reason or "a qualified name bound as one variable"
            if reason is not None:
                left_out[reason] += 1
                continue
            expects_error = "eval_error" in test or "any_eval_errors" in test
            case = Case(file, text(section["name"][0]), text(test["name"][0]), text(test["expr"][0]), bindings,
                        expects_error)
            if "value" in test:
                try:
                    case.expected = to_python(test["value"][0])
                except NotComparable:
                    case.comparable = False
            elif not expects_error:  # no expected value given: the spec's default is true
                case.expected = True
            cases.append(case)
    return cases, left_out


def run(case: Case, generated: bool) -> Result:
    try:
        tree = CELParser().parse(case.expr)
        program = compile_expression(tree, generated)
    except UnsupportedExpression as exc:
        return Result(case, generated, "refused", exc.message if hasattr(exc, "message") else str(exc))
    except Exception as exc:  # the parser's own errors: the spec's parse tests expect some
        if case.expects_error:
            return Result(case, generated, "pass", f"not parsed: {type(exc).__name__}")
        return Result(case, generated, "refused", f"not read by the policy language's parser ({type(exc).__name__})")
    try:
        value = program(case.bindings)
    except CELEvalError as exc:
        outcome = "pass" if case.expects_error else "error, spec has a value"
        return Result(case, generated, outcome, str(exc)[:160])
    except Exception as exc:  # noqa: BLE001 - that is what this check looks for
        return Result(case, generated, "crash", f"{type(exc).__name__}: {exc}"[:160])
    if case.expects_error:
        return Result(case, generated, "value, spec has an error", repr(value)[:160])
    if not case.comparable or same(value, case.expected):
        return Result(case, generated, "pass", "" if case.comparable else "value not compared")
    return Result(case, generated, "wrong value", f"{value!r} (spec: {case.expected!r})"[:200])


def read_files(spec: Path) -> dict[str, str]:
    """The testdata files of a cel-spec checkout, or of a bare clone's HEAD."""
    folder = spec / TESTDATA
    if folder.is_dir():
        return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.textproto"))}
    git = ["git", f"--git-dir={spec}"]
    names = subprocess.run(git + ["ls-tree", "--name-only", "HEAD", f"{TESTDATA}/"], check=True,
                           capture_output=True, text=True).stdout.split()
    return {Path(n).stem: subprocess.run(git + ["show", f"HEAD:{n}"], check=True, capture_output=True,
                                         text=True).stdout for n in names if n.endswith(".textproto")}


def revision(spec: Path) -> str:
    for git in (["git", "-C", str(spec)], ["git", f"--git-dir={spec}"]):
        done = subprocess.run(git + ["log", "-1", "--format=%h %cs"], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown revision"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="a checkout or bare clone of github.com/google/cel-spec")
    parser.add_argument("--list-failures", action="store_true", help="print every case that is not a pass")
    parser.add_argument("--no-report", action="store_true", help=f"do not write {REPORT.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    from machine import describe  # benchmarks/machine.py: the machine every result names

    machine = describe(("ttlpolicy", "cel-python"))

    results: list[Result] = []
    left_out: Counter[str] = Counter()
    for file, content in read_files(args.spec).items():
        cases, skipped = cases_of(file, parse_text_format(content))
        left_out.update(skipped)
        results += [run(case, generated) for case in cases for generated in (False, True)]

    by_file: dict[str, Counter[str]] = {}
    for r in results:
        by_file.setdefault(r.case.file, Counter())[r.outcome] += 1
    total = Counter(r.outcome for r in results)
    noteworthy = [r for r in results if r.outcome not in ("pass", "refused")]

    lines = [
        "# cel-spec's conformance tests on ttlpolicy's CEL",
        "",
        f"Written by `benchmarks/cel_spec.py` (how to read it: its docstring and "
        f"[docs/policy-language.md](../docs/policy-language.md#cel-in-ttlpolicy)) on "
        f"{machine['date']}; cel-spec {revision(args.spec)}; {machine['python']}, {machine['packages']}.",
        "",
        "Each case runs twice: on the native backend's closures and as generated code.",
        "",
        "| file | " + " | ".join(OUTCOMES) + " |",
        "|---|" + "---:|" * len(OUTCOMES),
    ]
    for file, counts in sorted(by_file.items()):
        lines.append(f"| {file} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    lines.append("| **all** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |")
    lines += ["", f"Left out (cases, not runs): {sum(left_out.values())} — "
              + ", ".join(f"{reason} {n}" for reason, n in left_out.most_common()) + "."]
    lines += ["", "## Refused: not part of the policy language (runs)", ""]
    lines += _refusals(results)
    lines += ["", "## Every run that is neither a pass nor refused", ""]
    lines += [f"- {r.outcome}: `{r.case.file}/{r.case.section}/{r.case.name}`"
              f"{' (generated)' if r.generated else ''}: `{r.case.expr}` → {r.detail}" for r in noteworthy] or ["None."]
    report = "\n".join(lines) + "\n"
    if not args.no_report:
        REPORT.write_text(report, encoding="utf-8")
    print("\n".join(lines[6:6 + len(by_file) + 3]))
    if args.list_failures:
        print("\n".join(lines[lines.index("## Every run that is neither a pass nor refused"):]))
    return 1 if total["value, spec has an error"] or total["crash"] else 0


def _refusals(results: list[Result]) -> list[str]:
    """The reasons of the refusals, each once with its number of runs; unsupported functions and
    methods as one line each, naming them."""
    reasons: Counter[str] = Counter()
    names: dict[str, Counter[str]] = {"function": Counter(), "method": Counter()}
    for r in results:
        if r.outcome != "refused":
            continue
        reason = re.sub(r"\s*\(line \d+, column \d+\)", "", r.detail)
        unsupported = re.fullmatch(r"unsupported (function|method) '([^']*)'", reason)
        if unsupported:
            names[unsupported[1]][unsupported[2]] += 1
        else:
            reasons[reason.split(": ")[0] if len(reason) > 100 else reason] += 1  # the reason, without its why
    lines = [f"- {n} × {reason}" for reason, n in reasons.most_common()]
    for what, counted in names.items():
        if counted:
            lines.append(f"- {sum(counted.values())} × unsupported {what}s: "
                         + ", ".join(f"`{name}`" for name in sorted(counted)))
    return lines


if __name__ == "__main__":
    sys.exit(main())
