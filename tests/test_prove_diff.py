"""``diff --prove``: every loosening/tightening/refactor pair of the diff tests, decided by the
solver alone (no grid), in the right direction, with a replayed counterexample for each
loosening; and the prover against brute force on random policies and one-step changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_diff_fields import HEAD, PAIRS, REFACTORS, RULES, ZONE_RULE
from test_diff_property import CONTEXTS, NOW, loadable, looser, mutations, rules
from ttlpolicy import load_sources
from ttlpolicy.cli.main import main
from ttlpolicy.diffing import DECISION_FIELDS, change_kinds, decide_outcome
from ttlpolicy.prove.diff import PolicyProof, prove_diff


def proof(base_rules: str, head_rules: str, base_head: str = HEAD, head_head: str = HEAD) -> PolicyProof:
    base = load_sources({"p.yaml": base_head + base_rules})
    head = load_sources({"p.yaml": head_head + head_rules})
    [result] = prove_diff(base, head, grid_scenarios=0, timeout=20)
    return result


def field_of(kind: str) -> str:
    return next(k for k, f in DECISION_FIELDS.items() if f.labels[0] == kind)


def statuses(result: PolicyProof) -> dict[str, str]:
    return {f.field: f.status for f in result.fields}


@pytest.mark.parametrize("name, base, head, kind", PAIRS, ids=[p[0] for p in PAIRS])
def test_each_loosening_pair_is_refuted_with_a_counterexample_that_replays(name: str, base: str, head: str,
                                                                          kind: str) -> None:
    result = proof(base, head)
    key = field_of(kind)
    found = next(f for f in result.fields if f.field == key)
    assert found.status == "loosens" and found.how == "smt", statuses(result)
    assert result.loosens and result.decided
    ce = found.counterexample
    assert ce is not None
    b, h = (load_sources({"p.yaml": HEAD + rules}).get("p") for rules in (base, head))
    kinds = [k for k, _ in change_kinds(decide_outcome(b, ce.context, ce.now), decide_outcome(h, ce.context, ce.now))]
    assert kind in kinds  # replayed through both real evaluators


@pytest.mark.parametrize("name, base, head, kind", PAIRS, ids=[p[0] for p in PAIRS])
def test_each_reverse_pair_is_proved_never_to_loosen(name: str, base: str, head: str, kind: str) -> None:
    result = proof(head, base)
    assert result.decided and not result.loosens, statuses(result)
    assert statuses(result)[field_of(kind)] == "never loosens"  # it tightens: not equivalent


@pytest.mark.parametrize("name", sorted(REFACTORS))
def test_refactors_are_proved_equivalent(name: str) -> None:
    result = proof(RULES, REFACTORS[name])
    assert result.equivalent and not result.loosens, statuses(result)
    # a reorder or ISO durations mean the same policy (the same digest); the others need the solver
    hows = {f.how for f in result.fields}
    assert hows == {"digest"} if name in ("iso-durations", "reorder") else "smt" in hows


def test_zones_widened_and_narrowed() -> None:
    wide = HEAD.replace("10.0.0.0/24", "10.0.0.0/23")
    widened = proof(ZONE_RULE, ZONE_RULE, HEAD, wide)
    access = next(f for f in widened.fields if f.field == "access_ttl")
    assert access.status == "loosens" and access.counterexample is not None
    assert access.counterexample.context["location"]["ip"].startswith("10.0.1.")  # only the /23 holds it
    narrowed = proof(ZONE_RULE, ZONE_RULE, wide, HEAD)
    assert narrowed.decided and not narrowed.loosens


def test_identical_policies_are_equivalent_by_digest() -> None:
    result = proof(RULES, RULES)
    assert result.equivalent and {f.how for f in result.fields} == {"digest"}


def test_an_unsupported_construct_is_unknown_at_its_location() -> None:
    rule = '  - {name: r, when: "user.groups.exists(g, g.startsWith(\\"adm\\"))", access_ttl: {cap: 10m}}\n'
    result = proof(rule, rule.replace("10m", "20m"))
    assert not result.decided
    unknown = [f for f in result.fields if f.status == "unknown"]
    assert unknown and all(f.location is not None for f in unknown)
    location = unknown[0].location
    assert location is not None and (location.file, location.line) == ("p.yaml", HEAD.count("\n") + 1)
    assert location.column > 20 and "exists" in unknown[0].reason


def test_cli_prove_decides_the_gate_and_says_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, base, head, _ = PAIRS[1]
    for name, rules in (("base", base), ("head", head)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p.yaml").write_text(HEAD + rules)
    code = main(["diff", "--prove", str(tmp_path / "base"), str(tmp_path / "head"), "--fail-on", "loosen",
                 "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["loosening"] and out["loosening_decided_by"] == {"p": "proof"}
    access = next(f for f in out["proof"][0]["fields"] if f["field"] == "access_ttl")
    assert access["status"] == "loosens" and access["counterexample"]["head"]["access_ttl"] > \
        access["counterexample"]["base"]["access_ttl"]
    code = main(["diff", "--prove", str(tmp_path / "head"), str(tmp_path / "base"), "--fail-on", "loosen"])
    text = capsys.readouterr().out
    assert code == 0 and "never loosens (proved)" in text and "--fail-on loosen decided by: p: proof" in text


def test_the_prover_finds_every_loosening_brute_force_finds_and_never_proves_a_false_claim() -> None:
    seen = {"decided": 0, "loosens": 0, "examples": 0}

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        base_rules = data.draw(rules, "base")
        head_rules = data.draw(mutations(base_rules), "head")
        base, head = loadable(base_rules), loadable(head_rules)
        if base is None or head is None:
            return
        witness = next((c for c in CONTEXTS if looser(base.decide(c, now=NOW), head.decide(c, now=NOW))), None)
        [result] = prove_diff(base, head, grid_scenarios=0, timeout=5)
        if witness is not None:
            # Brute force found a looser context: the prover must not claim "never loosens".
            assert result.loosens or not result.decided, (witness, base_rules, head_rules, statuses(result))
        if result.decided and not result.loosens:
            assert witness is None
        for f in result.fields:
            if f.status == "loosens" and f.field != "context":
                ce = f.counterexample
                assert ce is not None
                kinds = {k for k, _ in change_kinds(decide_outcome(base.get("p"), ce.context, ce.now),
                                                    decide_outcome(head.get("p"), ce.context, ce.now))}
                assert DECISION_FIELDS[f.field].labels[0] in kinds
        seen["examples"] += 1
        seen["decided"] += result.decided
        seen["loosens"] += result.loosens

    check()
    # Not a vacuous pass: most changes are decided, and some of them loosen.
    assert seen["decided"] >= 0.8 * seen["examples"] and seen["loosens"] >= 2, seen


def test_the_proof_benchmark_runs() -> None:
    """benchmarks/prove.py cannot rot: its smallest size runs (no time is asserted)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import prove as proof_benchmark  # benchmarks/prove.py

    rows = proof_benchmark.run((10,), 1, bundled_policies=False)
    assert len(rows) == 4 and all(row.startswith("| synthetic, 10 rules | ") for row in rows)
    assert "proved" in rows[2]  # the global limit holds whatever the rules do


def test_a_widened_declaration_no_rule_reads_is_a_context_accepted() -> None:
    narrow = HEAD + "attributes:\n  client.tenant: {type: string, values: [a, b]}\n"
    wide = HEAD + "attributes:\n  client.tenant: {type: string, values: [a, b, c]}\n"
    rule = "  - {name: r, when: user.mfa, access_ttl: {cap: 30m}}\n"
    widened = proof(rule, rule, narrow.replace("rules:\n", "") + "rules:\n", wide.replace("rules:\n", "") + "rules:\n")
    context = next(f for f in widened.fields if f.field == "context")
    assert context.status == "loosens" and context.counterexample is not None
    assert context.counterexample.context["client"]["tenant"] == "c"
    narrowed = proof(rule, rule, wide.replace("rules:\n", "") + "rules:\n", narrow.replace("rules:\n", "") + "rules:\n")
    assert narrowed.decided and not narrowed.loosens
    assert statuses(narrowed)["context"] == "never loosens"


def test_a_constant_beyond_the_solvers_alphabet_is_unknown_not_a_proof() -> None:
    rule = '  - {name: r, when: "client.id == \'\\U00030000\'", access_ttl: {cap: 10m}}\n'
    result = proof(rule, rule.replace("10m", "20m"))
    unknown = next(f for f in result.fields if f.field == "access_ttl")
    assert unknown.status == "unknown" and "U+2FFFF" in unknown.reason and unknown.location is not None
