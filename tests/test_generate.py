"""The generated whole-policy program (ttlpolicy.generate) against the reference evaluator.

* Differential: on hypothesis-generated policies and contexts (valid and not, conditions and
  factors that fail), generated program == reference evaluator with the native closures ==
  the same with cel-python's interpreter: values, errors, traces, refused contexts.
* The generated code hands a decision to the reference exactly when a rule failed (so a bug in
  the generated code cannot hide behind the reference).
* Every tests/cases decision is what it was before the program existed (golden, trace included).
* The bundled policies and tests/cases generate fully: no condition is called as a closure.
The core's properties (tests/test_properties.py) go through ``PolicySet.decide``, which runs the
generated program.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import ttlpolicy.compile
from ttlpolicy import ContextError, Decision, PolicyError, load_policies, load_sources
from ttlpolicy.evaluate import decide as reference_decide
from ttlpolicy.generate import generate_program
from ttlpolicy.program import CompiledPolicy

sys.path.insert(0, str(Path(__file__).parent))
from test_cases import DEFAULT_NOW, _collect, _policy_set  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((Path(__file__).parent / "golden" / "case_decisions.json").read_text())

CONDITIONS = [
    "true", "false", 'device.trust == "unmanaged"', "user.mfa", "user.risk > 0.5", "time.hour >= 9",
    'location.zone == "corp"', '"admins" in user.groups', 'resource.sensitivity == "restricted"',
    'tier == "finance"', "!user.mfa", 'client.binding != "none"', 'time.weekday in ["sat", "sun"]',
    'has(user.department) && user.department == "x"', "size(user.groups) > 1",
    # fail for most contexts: an attribute no context sends, or a non-bool result
    'user.department == "x"', 'user.department == "x" || user.mfa', "user.department.size() > 0",
]
FACTORS = [0.0, 0.5, 1.0, 2.0, "user.risk * 2.0", "1.0 / user.risk", "user.department == 'x' ? 2.0 : 0.5",
           {"expr": "3.0 - user.risk", "min": 0.5, "max": 2.5}]
DURATIONS = [60, 600, 3600, 7200, 86400]


def _some(parts: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A non-empty dict with a random subset of ``parts``."""
    keys = sorted(parts)
    return st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: parts[k] for k in chosen}))


def _floor_not_above_cap(effect: dict[str, Any]) -> dict[str, Any]:
    if "floor" in effect and "cap" in effect and effect["floor"] > effect["cap"]:
        effect["floor"], effect["cap"] = effect["cap"], effect["floor"]
    return effect


_effect = _some({"multiply": st.sampled_from(FACTORS), "cap": st.sampled_from(DURATIONS),
                 "floor": st.sampled_from(DURATIONS)}).map(_floor_not_above_cap)
_rule = st.tuples(st.sampled_from(CONDITIONS), _some({
    "access_ttl": _effect, "refresh_ttl": _effect,
    "refresh": _some({"rotation": st.just(True), "idle_timeout": st.sampled_from(DURATIONS),
                      "max_session": st.sampled_from(DURATIONS), "reuse_grace": st.sampled_from([0, 10]),
                      "sender_constrained": st.just(True)}),
    "deny": st.just("no"), "step_up": st.sampled_from(["mfa", "again"])})).map(lambda t: {"when": t[0], **t[1]})

_policies = st.fixed_dictionaries({
    "rules": st.lists(_rule, max_size=6),
    "defaults": st.fixed_dictionaries({"access_ttl": st.sampled_from([60, 600, 3600]), "refresh_ttl": st.sampled_from(
        [0, 86400, 604800])}, optional={"refresh": _some({
            "idle_timeout": st.sampled_from(DURATIONS), "max_session": st.sampled_from(DURATIONS)})}),
    "limits": st.fixed_dictionaries({}, optional={
        "access_ttl": _some({"min": st.just(120), "max": st.just(28800)}),
        "refresh_ttl": _some({"min": st.just(600), "max": st.just(604800)})}),
})

_values = {
    "tier": st.sampled_from(["standard", "finance", None]),
    "device": st.fixed_dictionaries({}, optional={"trust": st.sampled_from(["managed", "unmanaged", None])}),
    "user": st.fixed_dictionaries({}, optional={
        "mfa": st.booleans(), "risk": st.sampled_from([0.0, 0.3, 0.9, 1]),
        "groups": st.sampled_from([[], ["admins"], ["admins", "staff"]]),
        "auth_time": st.sampled_from(["2026-03-01T09:00:00Z", 1772355600]), "department": st.sampled_from(["x", "y"])}),
    "location": st.fixed_dictionaries({}, optional={
        "ip": st.sampled_from(["10.1.2.3", "192.0.2.7", "2001:db8::5", "::ffff:10.0.0.1"])}),
    "resource": st.fixed_dictionaries({"sensitivity": st.sampled_from(["internal", "restricted"])}),
    "client": st.fixed_dictionaries({"binding": st.sampled_from(["none", "mtls"])}),
    "time": st.fixed_dictionaries({"zone": st.sampled_from(["Europe/Berlin", "Asia/Tokyo"])}),
    "token": st.fixed_dictionaries({}, optional={"session_exp": st.sampled_from(["2026-03-02T10:30:00Z"]),
                                                 "auth_time": st.sampled_from(["2026-03-01T00:00:00Z"])}),
}
# One thing wrong: refused with every problem listed, by the generated code as by the reference.
_MISTAKES = [("tier", "nope"), ("tier", 3), ("device", "x"), ("user", {"mfa": "yes"}), ("user", {"risk": 2.5}),
             ("user", {"risk": "x"}), ("user", {"groups": "admins"}), ("user", {"auth_time": "yesterday"}),
             ("user", {"unknown": 1}), ("location", {"ip": "999.1.1.1"}), ("location", {"zone": "corp"}),
             ("time", {"zone": "Mars/Base"}), ("extra", {})]


def _with_mistake(context: dict[str, Any], mistake: tuple[str, Any] | None) -> Any:
    if mistake is None:
        return context
    key, value = mistake
    return {**context, key: {**context[key], **value} if isinstance(value, dict) and isinstance(
        context.get(key), dict) else value}


_contexts = st.builds(_with_mistake, st.fixed_dictionaries({}, optional=_values),
                      st.none() | st.none() | st.none() | st.sampled_from(_MISTAKES)) | st.sampled_from([[], "ctx"])
_instants = st.sampled_from(["2026-03-02T10:00:00Z", "2026-03-07T23:30:00Z", "2026-03-03T05:59:59+01:00"])


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ttlpolicy/v1", "name": "p", "defaults": {**spec["defaults"], "tier": "standard"},
            "limits": spec["limits"], "zones": {"corp": ["10.0.0.0/8"]},
            "tiers": {"standard": {}, "finance": {"access_ttl": 900, "max_refresh_ttl": 7200}},
            "attributes": {"user.department": {"type": "string"}},
            "rules": [{"name": f"r{i}", **rule} for i, rule in enumerate(spec["rules"])]}


def _outcome(run: Callable[[], Decision]) -> Any:
    try:
        decision = run()
    except ContextError as exc:
        return ("refused", sorted((p.code, p.path, p.message) for p in exc.problems))
    data = decision.to_dict()
    # cel-python words its errors differently; which rule failed, and what applied, must agree
    data["errors"] = [{k: v for k, v in e.items() if k != "message"} for e in data["errors"]]
    return data


def _reference(policy: CompiledPolicy, context: Any, now: datetime) -> Decision:
    return reference_decide(policy, policy.context.activation(context, now), now)


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@example({"rules": [{"when": 'user.department == "x"', "access_ttl": {"multiply": 2.0, "cap": 60}}],
          "defaults": {"access_ttl": 3600, "refresh_ttl": 86400}, "limits": {}}, {"user": {"risk": 0.5}},
         "2026-03-02T10:00:00Z", 64)
@given(_policies, _contexts, _instants, st.sampled_from([1, 2, 64]))
def test_generated_equals_closures_equals_cel_python(spec: dict[str, Any], context: Any, instant: str,
                                                     rules_per_function: int) -> None:
    """``rules_per_function``: small values put the rules in several functions, as for a large policy."""
    source = {"p.yaml": yaml.safe_dump(_document(spec))}
    handed: list[bool] = []

    def recorder(policy: CompiledPolicy, act: Any, now: datetime, explain: bool) -> Decision:
        handed.append(explain)
        return reference_decide(policy, act, now, explain)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ttlpolicy.compile, "generate_program", functools.partial(generate_program, reference=recorder))
        patch.setattr(ttlpolicy.generate, "RULES_PER_FUNCTION", rules_per_function)
        try:
            generated = load_sources(source).get("p")
        except PolicyError:  # e.g. a floor above a cap in one rule: not a policy to decide with
            assume(False)
    cel_python = load_sources(source, backend="reference").get("p")
    now = datetime.fromisoformat(instant.replace("Z", "+00:00"))

    expected = _outcome(lambda: _reference(generated, context, now))
    assert _outcome(lambda: generated.decide(context, now)) == expected
    assert _outcome(lambda: _reference(cel_python, context, now)) == expected
    assert _outcome(lambda: cel_python.decide(context, now)) == expected
    if isinstance(expected, dict):
        # handed to the reference exactly when a rule failed: the generated code decided the rest
        assert handed == ([False] if expected["errors"] else []), (handed, expected["errors"])
        handed.clear()
        explained = generated.decide(context, now, explain=True)
        assert handed == [True]
        assert explained.rules is not None and len(explained.rules) == len(generated.rules)


@pytest.mark.parametrize("param", [pytest.param(p, id=p.id) for p in _collect() if "expect_error" not in p.values[2]])
def test_every_case_decides_as_before(param: Any) -> None:
    """The compact trace, formatted, and the whole decision equal what the evaluator gave
    before the generated program existed (tests/golden/case_decisions.json)."""
    file, spec, case = param.values
    policies = _policy_set(spec)
    now = case.get("now", DEFAULT_NOW)
    golden = GOLDEN[param.id]
    explained = policies.decide(case["context"], policy=case.get("policy"), now=now, explain=True)
    assert explained.to_dict() == golden
    plain = policies.decide(case["context"], policy=case.get("policy"), now=now)
    assert plain.to_dict() == {k: v for k, v in golden.items() if k != "rules"}
    assert [step.to_dict() for step in plain.trace] == golden["trace"]  # formatted from the compact data


@pytest.mark.parametrize("rules_per_function", [64, 1])  # one function, or one per rule as for a large policy
@pytest.mark.parametrize("param", [pytest.param(p, id=p.id) for p in _collect() if "expect_error" not in p.values[2]])
def test_the_generated_code_decides_every_case_itself_unless_a_rule_failed(param: Any, rules_per_function: int) -> None:
    """No case is handed to the reference evaluator except for a failed rule, and no case's context
    to the slow validation: the generated code validates, derives, combines and bounds on its own
    (and still decides as the reference)."""
    file, spec, case = param.values
    handed: list[bool] = []

    def recorder(policy: CompiledPolicy, act: Any, now: datetime, explain: bool) -> Decision:
        handed.append(explain)
        return reference_decide(policy, act, now, explain)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ttlpolicy.compile, "generate_program", functools.partial(generate_program, reference=recorder))
        patch.setattr(ttlpolicy.generate, "RULES_PER_FUNCTION", rules_per_function)
        policies = _policy_set(spec)
    slow: list[Any] = []  # contexts the generated validation hands to ContextSchema.activation
    for policy in policies:
        assert policy.program is not None
        namespace = policy.program.run.__globals__
        namespace["_activation"] = functools.partial(
            lambda validate, context, now: slow.append(context) or validate(context, now), namespace["_activation"])
    decision = policies.decide(case["context"], policy=case.get("policy"), now=case.get("now", DEFAULT_NOW))
    golden = GOLDEN[param.id]
    assert decision.to_dict() == {k: v for k, v in golden.items() if k != "rules"}
    assert handed == ([False] if golden["errors"] else [])
    assert slow == []  # every case's context is validated by the generated code itself


def test_bundled_policies_and_cases_generate_fully() -> None:
    sets = [load_policies(ROOT / "policies")] + [_policy_set(p.values[1]) for p in _collect()]
    for policies in sets:
        for policy in policies:
            assert policy.program is not None
            assert policy.program.fallbacks == (), (policy.name, policy.program.fallbacks)


def _compiled_with_recorder(document: dict[str, Any], rules_per_function: int = 64
                            ) -> tuple[CompiledPolicy, list[tuple[bool, Any]]]:
    """The policy of ``document``, whose generated program records what it hands to the reference
    evaluator (explain or not, and the activation), in a list returned with it."""
    handed: list[tuple[bool, Any]] = []

    def recorder(policy: CompiledPolicy, act: Any, now: datetime, explain: bool) -> Decision:
        handed.append((explain, act))
        return reference_decide(policy, act, now, explain)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ttlpolicy.compile, "generate_program", functools.partial(generate_program, reference=recorder))
        patch.setattr(ttlpolicy.generate, "RULES_PER_FUNCTION", rules_per_function)
        policy = load_sources({"p.yaml": yaml.safe_dump(document)}).get("p")
    return policy, handed


@pytest.mark.parametrize("rules_per_function", [64, 1])
def test_a_condition_the_generator_cannot_inline_is_counted_and_shown(monkeypatch: pytest.MonkeyPatch,
                                                                      rules_per_function: int) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("shape not known")

    monkeypatch.setattr(ttlpolicy.generate.codegen, "condition_source", refuse)
    policy, handed = _compiled_with_recorder(_document({
        "rules": [{"when": "user.mfa", "access_ttl": {"cap": 60}}, {"when": "user.risk > 0.5", "deny": "risky"}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}), rules_per_function)
    assert policy.program is not None
    assert policy.program.fallbacks == (("r0", "ValueError: shape not known"), ("r1", "ValueError: shape not known"))
    assert "2 conditions called as closures" in policy.program.source
    now = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    assert policy.decide({"user": {"mfa": True}}, now).access_ttl == 60
    assert not policy.decide({"user": {"risk": 0.9}}, now).allow
    assert handed == []  # the generated code called the closures and decided itself


# Every effect a rule can have, every derived attribute and the IP's zone, in one policy.
_EVERY_EFFECT = {
    "apiVersion": "ttlpolicy/v1", "name": "p", "defaults": {"access_ttl": 3600, "refresh_ttl": 86400},
    "rules": [
        {"name": "corp", "when": 'location.zone == "corp"',
         "refresh": {"sender_constrained": True, "reuse_grace": 5, "idle_timeout": 3600}},
        {"name": "day", "when": 'time.date == "2026-03-02" && time.weekday == "mon"',
         "refresh": {"max_session": 7200, "rotation": True}},  # no session in the defaults
        {"name": "late", "when": "time.minute >= 30 && time.hour >= 10", "access_ttl": {"cap": 600}},
        {"name": "risk", "when": "user.risk > 0.5", "access_ttl": {"multiply": "1.0 - user.risk"}},
        {"name": "risky", "when": "user.risk > 0.8", "deny": "too risky"},
        {"name": "restricted", "when": 'resource.sensitivity == "restricted"', "step_up": "mfa"},
        # without user.department the inline test raises, and the condition's closure decides (CEL: error || true)
        {"name": "either", "when": 'user.department == "x" || user.mfa', "access_ttl": {"cap": 900}},
    ],
    "attributes": {"user.department": {"type": "string"}}}
_EVERY_CONTEXT = [  # each sends user.department but one, where "either" needs its closure
    {"location": {"ip": "10.1.2.3"}, "user": {"risk": 0.6, "department": "y"}},
    {"location": {"ip": "192.0.2.7"}, "time": {"zone": "Asia/Tokyo"}, "resource": {"sensitivity": "restricted"},
     "user": {"department": "y"}},
    {"user": {"risk": 0.9, "department": "x"}},
    {"user": {"mfa": True}},
]


@pytest.mark.parametrize("rules_per_function", [64, 1])
@pytest.mark.parametrize("zones", [{"corp": ["10.0.0.0/8"]}, None])
def test_every_effect_and_derived_attribute_is_decided_by_the_generated_code_alone(
        zones: dict[str, list[str]] | None, rules_per_function: int) -> None:
    """Nothing is handed to the reference evaluator but explain; the activation handed then is the
    one the reference validation builds; and the decision is the reference's."""
    document = {**_EVERY_EFFECT, "zones": zones} if zones else {  # without zones, every request is in "none"
        **_EVERY_EFFECT, "rules": [{**rule, "when": rule["when"].replace('"corp"', '"none" && user.risk > 0.5')}
                                   for rule in _EVERY_EFFECT["rules"]]}
    policy, handed = _compiled_with_recorder(document, rules_per_function)
    for context in _EVERY_CONTEXT:
        for now in (datetime(2026, 3, 2, 10, 45, tzinfo=timezone.utc), datetime(2026, 3, 3, 9, tzinfo=timezone.utc)):
            assert policy.decide(context, now).to_dict() == _reference(policy, context, now).to_dict()
            assert handed == [], (context, now)
            policy.decide(context, now, explain=True)
            [(explain, act)] = handed
            handed.clear()
            assert explain and act == policy.context.activation(context, now)
    with pytest.raises(ContextError) as raised:
        policy.decide({"location": {"ip": 167837953}}, datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert [p.path for p in raised.value.problems] == ["location.ip"]


def test_generated_source_is_safe_and_readable() -> None:
    """User text reaches the source only inside comments, escaped; values go through constants."""
    hostile = 'x\n__import__("os").system("false")'
    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": [{"when": 'user.department != "\\nimport os"', "deny": hostile}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}))}).get("p")
    assert policy.program is not None
    source = policy.program.source
    assert "__import__" not in source and "import os" not in source.replace("\\nimport os", "")
    assert "# rule r0 at p.yaml:" in source
    decision = policy.decide({"user": {"department": "x"}}, datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert decision.deny_reason == hostile


def test_the_shown_source_is_the_program_python_runs_under_its_own_few_builtins() -> None:
    import ast

    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": [{"when": "true", "access_ttl": {"cap": 60}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}))}).get("p")
    assert policy.program is not None
    source = policy.program.source
    ast.parse(source)  # what ``compile --show`` prints is Python, header comments included
    assert source.startswith(f"# policy p ({policy.digest}), from p.yaml\n# 1 rules; 0 conditions called as "
                             "closures\ndef decide(context, now, explain):\n")
    builtins = policy.program.run.__globals__["__builtins__"]
    assert {"min", "max", "len"} <= set(builtins) and not {"open", "__import__", "eval"} & set(builtins)


def test_user_text_in_comments_is_escaped_and_cut_at_160_characters() -> None:
    from ttlpolicy.generate import _comment

    assert _comment("a\nb") == "a\\nb"
    assert _comment("r" * 159) == "r" * 159
    assert _comment("r" * 160) == "r" * 157 + "..."
    assert _comment("\n" * 200) == "\\n" * 157 + "..."


def test_a_large_policy_runs_its_rules_in_several_functions() -> None:
    """Compiled one function per RULES_PER_FUNCTION rules (memory), deciding as the reference does."""
    import ttlpolicy.generate

    per = ttlpolicy.generate.RULES_PER_FUNCTION
    rules = [{"when": f"user.risk > {i / (3 * per)}", "access_ttl": {"multiply": 0.5 if i % 2 else 1.5}}
             | ({"refresh": {"rotation": True}} if i == 2 * per + 1 else {}) for i in range(2 * per + 2)]
    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": rules, "defaults": {"access_ttl": 3600, "refresh_ttl": 86400}, "limits": {}}))}).get("p")
    assert policy.program is not None
    source = policy.program.source
    assert "def _rules2(act, matched," in source and "def _rules3" not in source
    # the comments a reviewer finds a rule by: decide's call of each function, and its first line
    assert f"_rules1(act, {ttlpolicy.generate._STATE})  # rules {per} to {2 * per - 1}\n" in source
    assert f"# rules {per} to {2 * per - 1} of {2 * per + 2}, in name order\n" in source
    assert f"# rules {2 * per} to {2 * per + 1} of {2 * per + 2}, in name order\n" in source
    assert "decide" in source and source.count("rotation or rotated") == 3
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    for risk in (0.0, 0.3, 0.7, 0.99):
        context = {"user": {"risk": risk}}
        assert _outcome(lambda: policy.decide(context, now)) == _outcome(lambda: _reference(policy, context, now))
    assert policy.decide({"user": {"risk": 0.99}}, now).rotation is True


def test_an_unusual_context_goes_to_the_slow_validation_which_lists_every_problem() -> None:
    from types import MappingProxyType

    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": [{"when": "user.mfa", "access_ttl": {"cap": 60}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}))}).get("p")
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    for context, paths in [({"user": {"shoe": 44}}, ["user.shoe"]), ({"weather": "rain"}, ["weather"]),
                           ({"user": "alice"}, ["user"]), ({"user": {"mfa": "yes"}, "tier": 3}, ["tier", "user.mfa"])]:
        with pytest.raises(ContextError) as raised:
            policy.decide(context, now)
        assert sorted(p.path for p in raised.value.problems) == paths
    assert policy.decide(MappingProxyType({"user": MappingProxyType({"mfa": True})}), now).access_ttl == 60


def test_the_generated_validation_accepts_and_refuses_exactly_what_the_context_schema_does() -> None:
    """Value by value from tests/test_context.py's tables: the generated code's fast checks must
    never let through what ContextSchema.activation refuses, nor refuse what it accepts."""
    from test_context import INVALID, VALID

    attributes = {name: {k: v for k, v in attribute.model_dump(exclude_none=True).items()
                         if k in ("type", "values", "min", "max")}
                  for name, attribute, _, _ in VALID + INVALID if name.startswith("x.")}
    policy = load_sources({"p.yaml": yaml.safe_dump({
        "apiVersion": "ttlpolicy/v1", "name": "p", "defaults": {"access_ttl": 3600, "refresh_ttl": 0},
        "zones": {"office": ["10.0.0.0/24"]},  # location.ip is then checked and placed in one parse
        "attributes": {name: {**spec, "values": list(spec["values"])} if "values" in spec else spec
                       for name, spec in attributes.items()},
        "rules": [{"name": "r", "when": "x.flag", "access_ttl": {"cap": 60}}]})}).get("p")
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)

    def outcome(run: Any) -> Any:
        try:
            return run()
        except ContextError as exc:
            return sorted((p.path, p.message) for p in exc.problems)

    for name, _, value, _ in VALID + INVALID:  # x.* as declared above, location.* and time.zone from the vocabulary
        namespace, leaf = name.split(".")
        context = {namespace: {leaf: value}}
        expected = outcome(lambda: policy.context.activation(context, now))
        decided = outcome(lambda: policy.decide(context, now))
        assert isinstance(decided, list) == isinstance(expected, list), (name, value)
        if isinstance(expected, list):
            assert decided == expected, (name, value)


def test_a_missing_required_attribute_is_refused_by_the_generated_code_too() -> None:
    policy = load_sources({"p.yaml": yaml.safe_dump({
        "apiVersion": "ttlpolicy/v1", "name": "p", "defaults": {"access_ttl": 3600, "refresh_ttl": 0},
        "attributes": {"user.badge": {"type": "string", "required": True},
                       "tenant": {"type": "string", "required": True}},
        "rules": [{"name": "r", "when": 'user.badge == "b1"', "access_ttl": {"cap": 60}}]})}).get("p")
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    for context, missing in [({}, ["tenant", "user.badge"]), ({"tenant": "acme"}, ["user.badge"]),
                             ({"user": {"badge": "b1"}}, ["tenant"])]:
        with pytest.raises(ContextError) as raised:
            policy.decide(context, now)
        assert sorted(p.path for p in raised.value.problems) == missing
    assert policy.decide({"user": {"badge": "b1"}, "tenant": "acme"}, now).access_ttl == 60


def test_the_source_of_a_policy_split_into_several_functions_is_python_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import ast

    monkeypatch.setattr(ttlpolicy.generate, "RULES_PER_FUNCTION", 1)
    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": [{"when": "true", "access_ttl": {"cap": 60}}, {"when": "user.mfa", "access_ttl": {"cap": 30}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}))}).get("p")
    assert policy.program is not None
    ast.parse(policy.program.source)
    assert policy.decide({"user": {"mfa": True}}, datetime(2026, 3, 2, tzinfo=timezone.utc)).access_ttl == 30


def test_the_source_header_names_every_file_of_the_policy_s_chain_bases_first() -> None:
    base = "apiVersion: ttlpolicy/v1\nname: baseline\nabstract: true\nlimits: {access_ttl: {max: 12h}}\n"
    policy = load_sources({"baseline.yaml": base,
                           "p.yaml": "apiVersion: ttlpolicy/v1\nname: p\nextends: [baseline]\n"
                                     "defaults: {access_ttl: 1h, refresh_ttl: 0s}\n"}).get("p")
    assert policy.program is not None
    assert policy.program.source.startswith(f"# policy p ({policy.digest}), from baseline.yaml, p.yaml\n")


def test_why_a_condition_is_called_as_a_closure_is_cut_at_200_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("x" * 300)

    monkeypatch.setattr(ttlpolicy.generate.codegen, "condition_source", refuse)
    policy = load_sources({"p.yaml": yaml.safe_dump(_document({
        "rules": [{"when": "user.mfa", "access_ttl": {"cap": 60}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 0}, "limits": {}}))}).get("p")
    assert policy.program is not None
    [(rule, reason)] = policy.program.fallbacks
    assert reason == ("ValueError: " + "x" * 300)[:200] and len(reason) == 200


def test_idle_timeouts_only_rules_set_bound_the_refresh_lifetime() -> None:
    """No idle timeout in the defaults, and every rule sets one: the matching rule's still applies."""
    policy, handed = _compiled_with_recorder(_document({
        "rules": [{"when": "user.mfa", "refresh": {"idle_timeout": 600}},
                  {"when": "!user.mfa", "refresh": {"idle_timeout": 1200}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 86400}, "limits": {}}))
    now = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    for mfa, idle in ((True, 600), (False, 1200)):
        decision = policy.decide({"user": {"mfa": mfa}}, now)
        assert (decision.refresh_ttl, decision.idle_timeout) == (idle, idle)
        assert decision.to_dict() == _reference(policy, {"user": {"mfa": mfa}}, now).to_dict()
    assert handed == []


# _EVERY_EFFECT with a tier, as ``compile --show`` shows it: in name order, the rules are corp, day,
# either, late, restricted, risk (a factor), risky (a deny)
_SHOWN = {**_EVERY_EFFECT, "zones": {"corp": ["10.0.0.0/8"]}, "tiers": {"gold": {"max_access_ttl": 900}}}


@pytest.mark.parametrize("rules_per_function", [64, 1])
def test_the_generated_source_reads_no_name_it_does_not_define(rules_per_function: int) -> None:
    """A misspelt name in the generated code raises NameError, which its ``except Exception``
    turns into a silent hand-over to the reference (or, outside a try, a decision that fails):
    every global name any of its functions reads is a constant, a helper or one of its builtins."""
    import symtable

    policy, _ = _compiled_with_recorder(_SHOWN, rules_per_function)
    assert policy.program is not None
    namespace = policy.program.run.__globals__

    def read(table: symtable.SymbolTable) -> set[str]:
        names = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
        return names.union(*map(read, table.get_children()))

    names = set().union(*map(read, symtable.symtable(policy.program.source, "<p>", "exec").get_children()))
    assert {"_Slow", "_seconds", "len"} <= names  # the validation, the factors' rounding and a string's check
    assert {n for n in names if n not in namespace and n not in namespace["__builtins__"]} == set()


@pytest.mark.parametrize("rules_per_function", [64, 1])
def test_the_shown_source_names_each_constant_after_what_it_holds(rules_per_function: int) -> None:
    """``compile --show`` is read by reviewers: each constant's name says what it holds (and for
    a rule's, which rule by its index in name order), and each rule shows its condition."""
    policy, _ = _compiled_with_recorder(_SHOWN, rules_per_function)
    assert policy.program is not None
    source = policy.program.source
    for pattern in [r"m = _rule0_\d+\(act\)", r"matched\.append\(_rule6_name\d+\)",
                    r"denies\.append\(_rule6_deny\d+\)", r"step_ups\.append\(_rule4_step_up\d+\)",
                    r"f = _rule5_access_factor\d+\(act\)", r"tier = _tiers\d+\.get\(tier_name\)",
                    r"start \+ _session_lengths\d+\[max_session\]", r"= _bound_session\d+\(session_end,",
                    r"= _deny\d+\(denies,", r"return _Decision\d+\(", r"_name\d+,  # policy_name",
                    r"_digest\d+,  # policy_digest"]:
        assert re.search(pattern, source), pattern
    assert '#   when: time.minute >= 30 && time.hour >= 10\n' in source


@pytest.mark.parametrize("rules_per_function", [64, 1])
def test_each_condition_is_inline_in_the_source_reading_decide_s_locals(rules_per_function: int) -> None:
    """Every condition of _SHOWN is inlined (its closure only decides what the fast tests do
    not handle); in ``decide`` it reads each namespace from the local the validation filled,
    in a function of a large policy from ``act``."""
    policy, _ = _compiled_with_recorder(_SHOWN, rules_per_function)
    assert policy.program is not None
    inline = [line.strip() for line in policy.program.source.splitlines() if line.strip().startswith("m = (")]
    assert len(inline) == len(_SHOWN["rules"])
    if rules_per_function >= len(_SHOWN["rules"]):
        assert all(re.search(r"\bns\d+\[", line) and "act[" not in line for line in inline), inline
    else:
        assert all(re.search(r"\bact\['\w+'\]\['\w+'\]", line) for line in inline), inline


def test_a_product_of_factors_beyond_the_longest_duration_is_the_longest_duration() -> None:
    """The generated rounding hands an overflowing product to evaluate.seconds, as the reference does."""
    from ttlpolicy.durations import MAX_DURATION

    policy, handed = _compiled_with_recorder(_document({
        "rules": [{"when": "true", "access_ttl": {"multiply": 1e9}, "refresh_ttl": {"multiply": 1e9}}],
        "defaults": {"access_ttl": 3600, "refresh_ttl": 86400}, "limits": {}}))
    now = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    decision = policy.decide({}, now)
    assert (decision.access_ttl, decision.refresh_ttl) == (MAX_DURATION, MAX_DURATION)
    assert decision.to_dict() == _reference(policy, {}, now).to_dict()
    assert handed == []
