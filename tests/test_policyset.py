"""Compile once, evaluate many: an immutable, thread-safe set with content digests."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import ttlpolicy.cel.parse
from ttlpolicy import PolicyError, UnknownPolicyError, load_policies, load_sources
from ttlpolicy.errors import Location
from ttlpolicy.policyset import resolve_now

ROOT = Path(__file__).parent.parent
CONTEXTS = [json.loads(p.read_text()) for p in sorted((ROOT / "examples" / "contexts").glob("*.json"))
            if not p.name.startswith("machine")]
NOWS = [f"2026-11-{day:02d}T{hour:02d}:15:00Z" for day in (23, 28) for hour in (3, 11, 21)]


def test_concurrent_decisions_equal_sequential_ones() -> None:
    policies = load_policies(ROOT / "policies")
    jobs = [(c, now) for c in CONTEXTS for now in NOWS] * 20
    expected = [policies.decide(c, now=now).to_dict() for c, now in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        actual = list(pool.map(lambda job: policies.decide(job[0], now=job[1]).to_dict(), jobs))
    assert actual == expected


def test_nothing_is_parsed_per_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = load_policies(ROOT / "policies")

    def refuse(text: str) -> None:
        raise AssertionError(f"parsed at decision time: {text}")

    monkeypatch.setattr(ttlpolicy.cel.parse, "parse", refuse)
    monkeypatch.setattr(ttlpolicy.compile, "parse", refuse)
    for context in CONTEXTS:
        policies.decide(context, now=NOWS[0])


def test_decisions_do_not_change_the_context() -> None:
    policies = load_policies(ROOT / "policies")
    for context in CONTEXTS:
        before = json.dumps(context, sort_keys=True)
        policies.decide(context, now=NOWS[0])
        assert json.dumps(context, sort_keys=True) == before


def test_digest_follows_meaning_not_layout() -> None:
    base = "apiVersion: ttlpolicy/v1\nname: p\ndefaults: {access_ttl: 1h, refresh_ttl: 1d}\nrules:\n"
    a = "  - {name: a, when: user.mfa, access_ttl: {multiply: 2}}\n"
    b = "  - {name: b, when: 'user.risk > 0.5', deny: risky}\n"
    digest = load_sources({"p.yaml": base + a + b}).get().digest
    assert load_sources({"p.yaml": "# a comment\n" + base + b + a}).get().digest == digest
    assert load_sources({"p.yaml": base + a.replace("2}", "3}") + b}).get().digest != digest
    assert digest.startswith("sha256:") and len(digest) == 71


def test_policy_selection_and_unknown_policy() -> None:
    policies = load_policies(ROOT / "policies")
    assert policies.names == ["machine", "workforce"] and policies.default == "workforce"
    assert [p.name for p in policies] == ["machine", "workforce"] and len(policies) == 2
    assert "machine" in policies and "baseline" not in policies
    assert policies.get().name == policies.decide({}, now=NOWS[0]).policy_name == "workforce"
    assert policies.decide({}, policy="machine", now=NOWS[0]).policy_name == "machine"
    message = "unknown policy 'baseline'; known policies: machine, workforce"
    with pytest.raises(UnknownPolicyError) as info:
        policies.decide({}, policy="baseline")  # abstract: not decidable
    assert str(info.value) == message
    with pytest.raises(UnknownPolicyError) as info:
        policies.get("baseline")
    assert str(info.value) == message


def test_the_set_digest_is_over_its_policies_names_and_digests() -> None:
    """docs/deployment.md: replicas serving the same set report the same digest; anyone can
    recompute it from the policies' own digests."""
    policies = load_policies(ROOT / "policies")
    lines = "\n".join(f"{p.name} {p.digest}" for p in policies)
    assert policies.digest == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def test_rules_are_listed_only_when_explained() -> None:
    policies = load_policies(ROOT / "policies")
    assert policies.decide(CONTEXTS[0], now=NOWS[0]).rules is None
    explained = policies.decide(CONTEXTS[0], now=NOWS[0], explain=True).rules
    assert explained is not None and sorted(r.rule for r in explained) == sorted(r.name for r in policies.get().rules)


def test_now_must_be_aware() -> None:
    from datetime import datetime

    policies = load_policies(ROOT / "policies")
    with pytest.raises(ValueError) as info:
        policies.decide({}, now=datetime(2026, 1, 1))
    assert str(info.value) == "now must be an aware datetime or RFC 3339 text with an offset"
    with pytest.raises(ValueError, match="offset"):
        policies.decide({}, now="2026-01-01T10:00:00")


def test_resolve_now_keeps_an_aware_instant_and_reads_text() -> None:
    aware = datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert resolve_now(aware) is aware
    assert resolve_now("2026-01-01T10:00:00+02:00") == aware
    before = datetime.now(timezone.utc)
    current = resolve_now(None)
    assert current.utcoffset() == timedelta(0) and before <= current <= datetime.now(timezone.utc)
    for wrong in (datetime(2026, 1, 1), 1767261600, 1767261600.0):
        with pytest.raises(ValueError, match="^now must be an aware datetime or RFC 3339 text with an offset$"):
            resolve_now(wrong)  # type: ignore[arg-type]


def test_a_decision_without_now_is_made_at_the_current_instant() -> None:
    policies = load_policies(ROOT / "policies")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    decision = policies.decide(CONTEXTS[0])
    assert decision.issued_at.utcoffset() == timedelta(0)
    assert before <= decision.issued_at <= datetime.now(timezone.utc)


VALID = "apiVersion: ttlpolicy/v1\nname: {name}\ndefaults: {{access_ttl: 1h, refresh_ttl: 1d}}\n"


def test_load_policies_reads_the_policies_directory_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert load_policies().digest == load_policies(ROOT / "policies").digest


def test_a_directory_contributes_its_yaml_and_yml_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID.format(name="a") + "default: true\n")
    (tmp_path / "b.yml").write_text(VALID.format(name="b"))
    (tmp_path / "notes.txt").write_text("not: a policy\n")
    (tmp_path / "README").write_text("not a policy either\n")
    (tmp_path / "old.yaml").mkdir()  # a directory, whatever its name
    policies = load_policies(tmp_path)
    assert policies.names == ["a", "b"]
    assert sorted(policies.sources) == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yml")]
    assert policies.sources[str(tmp_path / "b.yml")] == VALID.format(name="b")


def test_every_path_problem_is_reported_at_once_at_its_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_bytes(b"name: \xff\xfe\n")
    (tmp_path / "ok.yaml").write_text(VALID.format(name="ok"))
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path / "missing", tmp_path / "empty", tmp_path / "bad.yaml", tmp_path / "ok.yaml")
    found = {(p.code, p.location.file if p.location else None): p.message for p in info.value.problems}
    assert found == {("io-error", str(tmp_path / "missing")): "no such file or directory",
                     ("no-policies", str(tmp_path / "empty")): "directory holds no *.yaml policy files",
                     ("file-encoding", str(tmp_path / "bad.yaml")): "file is not UTF-8 text (byte 6)"}


def test_load_policies_compiles_with_the_backend_asked_for() -> None:
    rule = load_policies(ROOT / "policies", backend="reference").get().rules[0]
    assert rule.condition.__module__ == "ttlpolicy.cel.reference"
    assert load_policies(ROOT / "policies").get().rules[0].condition.__module__ != "ttlpolicy.cel.reference"


def test_nothing_to_load_is_an_error_at_the_input() -> None:
    with pytest.raises(PolicyError) as info:
        load_sources({})
    assert [(p.code, p.message, p.location) for p in info.value.problems] == \
        [("no-policies", "no policy files to load", Location("<input>"))]


LOOSENING = VALID + "rules:\n  - {{name: r, when: user.mfa, access_ttl: {{multiply: 2}}}}\n"


def test_warnings_are_kept_on_the_set_and_reported_with_the_errors_of_a_refused_one() -> None:
    policies = load_sources({"p.yaml": LOOSENING.format(name="p")})
    assert [(w.code, w.severity) for w in policies.warnings] == [("loosening-rule", "warning")]
    broken = VALID.format(name="q") + "rules:\n  - {name: s, when: user.colour, deny: x}\n"
    with pytest.raises(PolicyError) as info:
        load_sources({"p.yaml": LOOSENING.format(name="p") + "default: true\n", "q.yaml": broken})
    assert [(p.code, p.severity) for p in info.value.problems] == [("loosening-rule", "warning"),  # by file
                                                                   ("cel-unknown-attribute", "error")]
    assert "q.yaml:5:" in str(info.value) and "  - {name: s, when: user.colour" in info.value.render()


def test_rate_limits_are_kept_for_the_policies_that_decide() -> None:
    limit = "rate_limits:\n  - {name: per-ip, key: ip, rate: 4 per 10m, on_exceed: {access_ttl: 5m}}\n"
    base = VALID.format(name="base") + "abstract: true\n" + limit
    policies = load_sources({"base.yaml": base, "a.yaml": "apiVersion: ttlpolicy/v1\nname: a\ndefault: true\n"
                             "extends: [base]\n", "b.yaml": VALID.format(name="b")})
    assert {name: [lim.name for lim in limits] for name, limits in policies.rate_limits.items()} == {"a": ["per-ip"]}
    assert policies.sources["b.yaml"] == VALID.format(name="b")
    assert load_sources({"b.yaml": VALID.format(name="b")}).rate_limits == {}
