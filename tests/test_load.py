"""Bad files are clear errors, never tracebacks, in bounded time and memory."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from ttlpolicy import PolicyError, load_policies, load_sources

VALID = """\
apiVersion: ttlpolicy/v1
name: ok
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - name: r
    when: user.mfa
    access_ttl: {multiply: 2}
"""

BILLION_LAUGHS = """\
apiVersion: ttlpolicy/v1
name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def codes(source: bytes | str, name: str = "p.yaml") -> list[tuple[str, int, int]]:
    with pytest.raises(PolicyError) as info:
        load_sources({name: source})
    return [(p.code, p.location.line if p.location else 0, p.location.column if p.location else 0)
            for p in info.value.problems]


def test_valid_file_loads() -> None:
    assert load_sources({"ok.yaml": VALID}).names == ["ok"]


@pytest.mark.parametrize("source, expected", [
    ("", [("not-a-mapping", 1, 1)]),
    ("# only a comment\n", [("not-a-mapping", 1, 1)]),
    ("- a\n- b\n", [("not-a-mapping", 1, 1)]),
    ("just text\n", [("not-a-mapping", 1, 1)]),
    ("name: [unclosed\n", [("yaml-syntax", 2, 1)]),
    ("a: 1\n  b: 2\n", [("yaml-syntax", 2, 4)]),
    ("a: 1\n---\nb: 2\n", [("yaml-syntax", 2, 1)]),
    ("name: x\nname: y\n", [("yaml-duplicate-key", 2, 1)]),
    ("!!python/object:os.system {}\n", [("yaml-tag", 1, 1)]),
    ("name: !!binary aGVsbG8=\n", [("yaml-tag", 1, 7)]),
    ("name: 2026-01-01\n", [("yaml-tag", 1, 7)]),
])
def test_malformed_yaml(source: str, expected: list[tuple[str, int, int]]) -> None:
    assert codes(source) == expected


def test_duplicate_keys_nested_are_located() -> None:
    source = VALID.replace("    when: user.mfa\n", "    when: user.mfa\n    when: user.mfa\n")
    assert codes(source) == [("yaml-duplicate-key", 7, 5)]


def test_billion_laughs_is_refused_quickly_and_small() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    found = codes(BILLION_LAUGHS)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found[0][0] == "yaml-too-many-nodes"
    # Not a speed test: an unbounded expansion would take hours and gigabytes; the node budget
    # stops it in well under a second (generous bound for a loaded shared machine).
    assert elapsed < 60 and peak < 200 * 2**20


def test_ten_megabyte_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (10 * 2**20) + b"\n")
    with pytest.raises(PolicyError) as info:
        load_policies(big)
    assert [p.code for p in info.value.problems] == ["file-too-large"]
    assert "10,485,764 bytes" in info.value.problems[0].message


@pytest.mark.parametrize("blob", [bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xfe\xfa garbage"])
def test_binary_garbage(blob: bytes) -> None:
    assert codes(blob)[0][0] == "file-encoding"


def test_control_characters_are_a_yaml_error() -> None:
    assert codes("name: a\x07b\n")[0][0] == "yaml-syntax"


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path / "nope")
    assert [p.code for p in info.value.problems] == ["io-error"]
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert [p.code for p in info.value.problems] == ["no-policies"]


def test_yaml_merge_keys_and_anchors_still_work() -> None:
    source = VALID + """\
  - name: s
    when: user.risk > 0.5
    access_ttl: &short {cap: 5m}
    refresh_ttl: *short
"""
    policies = load_sources({"ok.yaml": source})
    assert policies.decide({"user": {"risk": 0.6}}).refresh_ttl == 300


def test_subdirectories_are_not_policies(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(VALID)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "cases.yaml").write_text("not: a policy\n")
    assert load_policies(tmp_path).names == ["ok"]
