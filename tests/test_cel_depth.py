"""Expressions nested too deeply for the stages after parsing are refused at parse time, with
their own code at their line and column, never a RecursionError (a traceback in lint, a 500 in
the service); expressions up to the limit go through every stage."""

from __future__ import annotations

import random

import lark
import pytest

from ttlpolicy import PolicyError, load_sources
from ttlpolicy.cel import parse as cel_parse
from ttlpolicy.cel.parse import MAX_TREE_DEPTH, CelSyntaxError, parse

HEAD = """\
apiVersion: ttlpolicy/v1
name: p
defaults: {access_ttl: 1h, refresh_ttl: 1d}
rules:
  - name: deep
    when: '%s'
    access_ttl: {cap: 5m}
"""

TOO_DEEP = {
    "parentheses": "(" * 100 + "user.mfa" + ")" * 100,
    "a chain of ||": " || ".join(["user.mfa"] * 5000),
    "negations": "!" * 5000 + "user.mfa",
    "nested lists": "user.mfa in " + "[" * 60 + "true" + "]" * 60,
    "nested calls": "size(string(" * 40 + "user.id" + "))" * 40 + " > 1",
}


@pytest.mark.parametrize("text", TOO_DEEP.values(), ids=TOO_DEEP.keys())
def test_a_too_deep_condition_is_an_error_at_its_line(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_sources({"p.yaml": HEAD % text})
    [problem] = info.value.errors
    assert problem.code == "cel-too-deep" and problem.location is not None
    assert problem.location.line == 6 and "split the condition" in problem.message


DEEP_BUT_ALLOWED = {
    "20 nested parentheses": "(" * 20 + "user.mfa" + ")" * 20,
    "a chain of 200 ||": " || ".join(['user.id == "u%d"' % i for i in range(200)]),
}


@pytest.mark.parametrize("text", DEEP_BUT_ALLOWED.values(), ids=DEEP_BUT_ALLOWED.keys())
def test_deep_conditions_below_the_limit_load_decide_and_explain(text: str) -> None:
    policies = load_sources({"p.yaml": HEAD % text})
    context = {"user": {"mfa": True, "id": "u199"}}
    decision = policies.decide(context, now="2026-12-01T12:00:00Z", explain=True)
    assert decision.access_ttl == 300 and not decision.errors
    assert policies.decide({"user": {"mfa": False, "id": "x"}}, now="2026-12-01T12:00:00Z").access_ttl == 3600


def _depth(tree: lark.Tree) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, lark.Tree))
    return deepest


def _expression(rng: random.Random, budget: int) -> str:
    """A random expression of the grammar's nesting shapes (brackets, operators, members, macros)."""
    if budget <= 0:
        return rng.choice(["user.risk", "1", "true", '"a"', "user.groups", "[1, 2]"])
    inner = _expression(rng, budget - rng.randint(1, 3))
    other = _expression(rng, min(2, budget - 2))  # deep along one branch: size stays linear
    return rng.choice([
        f"({inner})", f"!{inner}", f"-{inner}", f"{inner} || {other}", f"{inner} && {other}",
        f"{inner} + {other}", f"{inner} * {other}", f"{inner} < {other}", f"{inner} == {other}",
        f"[{inner}, {other}]", f"{{{inner}: {other}}}", f"{inner}.size()", f"size({inner})",
        f"{inner}[{other}]", f"{inner} ? {other} : {inner}", f"{inner} in {other}", f"user.groups.exists(g, {inner})",
        f"{inner}.b", f"int({inner})",
    ])


def test_the_cheap_bound_never_skips_a_tree_deeper_than_it_says() -> None:
    """parse() walks the tree only when the text has enough nesting characters to reach the limit;
    that shortcut is right only if every tree is at most LEVELS_PER_CHARACTER levels per such character."""
    rng = random.Random(20261201)
    for _ in range(400):
        text = _expression(rng, rng.randint(0, 60))
        try:
            tree = parse(text)
        except CelSyntaxError:
            continue
        bound = cel_parse._LEVELS_PER_CHARACTER * (1 + sum(map(text.count, cel_parse._NESTING)))
        assert _depth(tree) <= bound, text
    assert MAX_TREE_DEPTH < 1000  # far below Python's recursion limit, for the stages after parsing
