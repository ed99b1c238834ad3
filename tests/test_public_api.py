"""The public face: exactly these names, typed, with docstrings."""

from __future__ import annotations

from pathlib import Path

import ttlpolicy


def test_exported_names_are_pinned() -> None:
    assert sorted(ttlpolicy.__all__) == sorted([
        "CompiledPolicy", "ContextError", "Decision", "Location", "PolicyError", "PolicySet", "Problem",
        "RuleOutcome", "Step", "UnknownPolicyError", "format_duration", "load_policies", "load_sources",
        "parse_duration", "__version__",
    ])
    for name in ttlpolicy.__all__:
        assert hasattr(ttlpolicy, name), name


def test_package_is_typed() -> None:
    assert (Path(ttlpolicy.__file__).parent / "py.typed").exists()


def test_public_callables_have_docstrings() -> None:
    for name in ("load_policies", "load_sources", "PolicySet", "Decision", "PolicyError", "ContextError"):
        assert getattr(ttlpolicy, name).__doc__, name
    assert ttlpolicy.PolicySet.decide.__doc__


def test_readme_library_example_runs() -> None:
    policies = ttlpolicy.load_policies(Path(__file__).parent.parent / "policies")
    decision = policies.decide({"tier": "finance", "device": {"trust": "unmanaged"}},
                               now="2026-03-02T10:00:00Z")
    assert (decision.allow, decision.access_ttl) == (True, 450)
    assert decision.to_dict()["policy"]["name"] == "workforce"
