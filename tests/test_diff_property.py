"""The gate's promise as a property: for a random small policy and a random one-step change,
if ANY context of a small domain decides looser under the new version (found by brute force,
with a definition of "looser" written here independently of the diff), then
``ttlpolicy diff --fail-on loosen`` exits 1.

The brute-force domain deliberately holds values the diff's grid does not (risk in steps of
0.05, every tier, absent attributes), so the property tests that the grid's boundary values
are complete, not that the diff agrees with itself.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy import Decision, load_sources
from ttlpolicy.cli.main import main

TRUST = ["managed", "compliant", "known", "unmanaged"]
RISKS = [0.2, 0.35, 0.5, 0.8]
DURATIONS = ["5m", "10m", "30m", "1h", "2h", "1d"]
NOW = "2025-01-08T12:00:00Z"

atoms = st.one_of(
    st.sampled_from(TRUST).map(lambda v: f'device.trust == "{v}"'),
    st.sampled_from(TRUST).map(lambda v: f'device.trust != "{v}"'),
    st.lists(st.sampled_from(TRUST), min_size=1, max_size=3, unique=True).map(
        lambda vs: "device.trust in [" + ", ".join(f'"{v}"' for v in vs) + "]"),
    st.just("user.mfa"), st.just("!user.mfa"),
    st.tuples(st.sampled_from([">", ">=", "<", "<="]), st.sampled_from(RISKS)).map(
        lambda t: f"user.risk {t[0]} {t[1]}"),
    st.sampled_from(['tier == "finance"', 'tier != "finance"']),
)
conditions = st.one_of(atoms, st.tuples(atoms, st.sampled_from(["&&", "||"]), atoms).map(
    lambda t: f"{t[0]} {t[1]} {t[2]}" if t[0] != t[2] else t[0]))
ttl_effects = st.fixed_dictionaries({}, optional={
    "multiply": st.sampled_from([0.5, 0.8, 1.5, 2.0]), "cap": st.sampled_from(DURATIONS)})
effects = st.fixed_dictionaries({}, optional={
    "access_ttl": ttl_effects.filter(bool), "refresh_ttl": ttl_effects.filter(bool),
    "refresh": st.fixed_dictionaries({}, optional={"rotation": st.just(True),
                                                   "idle_timeout": st.sampled_from(["2h", "8h"])}).filter(bool),
    "deny": st.just("denied"), "step_up": st.just("step up"),
}).filter(bool)
rules = st.lists(st.tuples(conditions, effects).map(lambda t: {"when": t[0], **t[1]}), min_size=1, max_size=3)


def mutations(rule_list: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """One step: change a condition, an effect, drop or add a rule."""
    index = st.integers(0, len(rule_list) - 1)

    def replace(i: int, new: dict[str, Any]) -> list[dict[str, Any]]:
        return [new if j == i else r for j, r in enumerate(rule_list)]

    return st.one_of(
        st.tuples(index, conditions).map(lambda t: replace(t[0], {**rule_list[t[0]], "when": t[1]})),
        st.tuples(index, effects).map(lambda t: replace(t[0], {"when": rule_list[t[0]]["when"], **t[1]})),
        index.map(lambda i: [r for j, r in enumerate(rule_list) if j != i]),
        st.tuples(conditions, effects).map(lambda t: [*rule_list, {"when": t[0], **t[1]}]),
    )


def document(rule_list: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({
        "apiVersion": "ttlpolicy/v1", "name": "p",
        "defaults": {"tier": "standard", "access_ttl": "1h", "refresh_ttl": "1d"},
        "tiers": {"standard": {}, "finance": {"access_ttl": "15m", "max_access_ttl": "40m"}},
        "limits": {"access_ttl": {"min": "1m", "max": "4h"}},
        "rules": [{"name": f"r{i}", **r} for i, r in enumerate(rule_list)],
    }, sort_keys=False)


def contexts() -> list[dict[str, Any]]:
    out = []
    for trust, mfa, risk, tier in itertools.product(TRUST + [None], [True, False, None],
                                                    [round(0.05 * i, 2) for i in range(21)], ["standard", "finance"]):
        context: dict[str, Any] = {"tier": tier, "user": {"risk": risk}}
        if trust is not None:
            context["device"] = {"trust": trust}
        if mfa is not None:
            context["user"]["mfa"] = mfa
        out.append(context)
    return out


CONTEXTS = contexts()


def looser(before: Decision, after: Decision) -> bool:
    """Looser for the token holder, written out here on its own: allowed where it was denied, or
    (both allowed) a longer lifetime, step-up or rotation dropped, a longer idle timeout."""
    if after.allow != before.allow:
        return after.allow
    if not after.allow:
        return False
    idle = [t if t is not None else float("inf") for t in (before.idle_timeout, after.idle_timeout)]
    return (after.access_ttl > before.access_ttl or after.refresh_ttl > before.refresh_ttl
            or (before.step_up and not after.step_up) or (before.rotation and not after.rotation)
            or idle[1] > idle[0])


def loadable(rule_list: list[dict[str, Any]]) -> Any:
    from ttlpolicy import PolicyError
    try:
        return load_sources({"p.yaml": document(rule_list)})
    except PolicyError:
        return None  # e.g. a condition that can never be true: lint refuses it, nothing to diff


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_every_loosening_found_by_brute_force_fails_the_gate(data: st.DataObject) -> None:
    base_rules = data.draw(rules, "base")
    head_rules = data.draw(mutations(base_rules), "head")
    base, head = loadable(base_rules), loadable(head_rules)
    if base is None or head is None:
        return
    witness = next((c for c in CONTEXTS if looser(base.decide(c, now=NOW), head.decide(c, now=NOW))), None)
    with tempfile.TemporaryDirectory() as tmp:
        for name, rule_list in (("base", base_rules), ("head", head_rules)):
            (Path(tmp) / name).mkdir()
            (Path(tmp) / name / "p.yaml").write_text(document(rule_list))
        code = main(["diff", str(Path(tmp) / "base"), str(Path(tmp) / "head"), "--fail-on", "loosen",
                     "--format", "json"])
    if witness is not None:
        assert code == 1, (witness, base_rules, head_rules)
