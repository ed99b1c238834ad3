"""``ttlpolicy diff`` sees every field of the decision, defines "loosens" once per field, finds
zone-boundary changes, reports tightening as a change and stays silent on refactors."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ttlpolicy import load_sources
from ttlpolicy.cli.diff import terminal_progress
from ttlpolicy.cli.main import main
from ttlpolicy.decision import Decision
from ttlpolicy.diffing import (DECISION_FIELDS, LOOSEN, NOT_COMPARED, TIGHTEN, Outcome, build_grid, change_kinds,
                               diff_policies, focus_dimensions)

HEAD = """\
apiVersion: ttlpolicy/v1
name: p
defaults:
  tier: standard
  access_ttl: 1h
  refresh_ttl: 1d
  refresh: {idle_timeout: 1d, max_session: 30d, reuse_grace: 10s}
tiers: {standard: {}, finance: {access_ttl: 15m, max_access_ttl: 30m}}
zones:
  office: [10.0.0.0/24]
rules:
"""


def diff(base_rules: str, head_rules: str, base_head: str = HEAD, head_head: str = HEAD) -> Any:
    base = load_sources({"p.yaml": base_head + base_rules})
    head = load_sources({"p.yaml": head_head + head_rules})
    return diff_policies(base, head)


def kinds(report: Any) -> set[str]:
    return {g.kind for g in report.groups}


# -- the definition of "loosens" covers every field of the decision --------------------------------

def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_decision_field_has_a_loosening_rule_or_a_reason_not_to_compare() -> None:
    """Adding a field to the decision without saying how it loosens fails here."""
    policies = load_sources({"p.yaml": HEAD + "  - {name: r, when: user.mfa, step_up: x}\n"})
    decision = policies.decide({"user": {"mfa": True, "auth_time": "2025-01-01T00:00:00Z"}},
                               now="2025-01-02T00:00:00Z", explain=True)
    fields = _flatten(decision.to_dict())
    assert fields == set(DECISION_FIELDS) | set(NOT_COMPARED), (
        fields - set(DECISION_FIELDS) - set(NOT_COMPARED), set(DECISION_FIELDS) | set(NOT_COMPARED) - fields)
    assert not set(DECISION_FIELDS) & set(NOT_COMPARED)
    # and the dataclass holds nothing that its JSON leaves out (besides the instants it derives from)
    # ``steps`` is the trace as compact data (JSON "trace"); ``_trace`` its formatted cache
    names = {"trace" if f.name == "steps" else f.name for f in dataclasses.fields(Decision) if f.name != "_trace"}
    json_roots = {key.split(".")[0] for key in fields} | {"rotation", "idle_timeout", "max_session", "reuse_grace",
                                                           "sender_constrained", "policy_name", "policy_digest"}
    # (and ``activation``: what the rules saw, the decision's input, kept for what runs after the policy)
    assert names - json_roots == {"issued_at", "session_end", "extra", "activation"}


LOOSER_TIGHTER: dict[str, tuple[Any, Any]] = {
    # field -> (a value, a looser value)
    "allow": (False, True),
    "access_ttl": (600, 900),
    "refresh_ttl": (3600, 7200),
    "refresh.rotation": (True, False),
    "refresh.idle_timeout": (3600, None),
    "refresh.max_session": (86400, 172800),
    "refresh.reuse_grace": (0, 10),
    "refresh.on_reuse": ("revoke_family", "ignore"),
    "refresh.sender_constrained": (True, False),
    "expires_at.session": (datetime(2025, 1, 2, tzinfo=timezone.utc), None),
    "step_up": (True, False),
}
NEUTRAL: dict[str, tuple[Any, Any]] = {
    "deny_reason": ("a", "b"),
    "step_up_reasons": (("a",), ("b",)),
    "tier": ("standard", "finance"),
}


def _outcome(**changes: Any) -> Outcome:
    values: dict[str, Any] = {"allow": True, "deny_reason": None, "access_ttl": 600, "refresh_ttl": 3600,
                              "refresh.rotation": False, "refresh.idle_timeout": 3600, "refresh.max_session": 86400,
                              "refresh.reuse_grace": 10, "refresh.on_reuse": "revoke_family",
                              "refresh.sender_constrained": False, "expires_at.session": None, "step_up": True,
                              "step_up_reasons": ("x",), "tier": "standard"}
    values.update(changes)
    return Outcome(tuple(values.items()), frozenset())


def test_the_tables_cover_every_compared_field() -> None:
    assert set(LOOSER_TIGHTER) | set(NEUTRAL) == set(DECISION_FIELDS)


@pytest.mark.parametrize("key", sorted(LOOSER_TIGHTER))
def test_each_field_loosens_one_way_and_tightens_the_other(key: str) -> None:
    tight, loose = LOOSER_TIGHTER[key]
    denied = {"allow": False, "deny_reason": "no"} if key != "allow" else {}
    base, head = _outcome(**{key: tight}), _outcome(**{key: loose})
    if key == "allow":
        base, head = _outcome(allow=False, deny_reason="no"), _outcome()
    up = change_kinds(base, head)
    down = change_kinds(head, base)
    assert len(up) == 1 and up[0][0] in LOOSEN, up
    assert len(down) == 1 and down[0][0] in TIGHTEN, down
    assert DECISION_FIELDS[key].labels == (up[0][0], down[0][0])
    if denied:  # when both versions deny, only the deny itself matters
        assert change_kinds(_outcome(**{key: tight}, **denied), _outcome(**{key: loose}, **denied)) == []


@pytest.mark.parametrize("key", sorted(NEUTRAL))
def test_directionless_fields_are_changes_that_never_loosen(key: str) -> None:
    a, b = NEUTRAL[key]
    extra = {"allow": False} if key == "deny_reason" else {}
    found = change_kinds(_outcome(**{key: a}, **extra), _outcome(**{key: b}, **extra))
    assert [k for k, _ in found] == [DECISION_FIELDS[key].labels[0]]
    assert not set(k for k, _ in found) & LOOSEN


def test_magnitudes_are_seconds_for_durations_infinite_for_a_limit_that_goes_and_zero_otherwise() -> None:
    found = change_kinds(_outcome(), _outcome(**{"access_ttl": 1200, "refresh.rotation": True,
                                                 "refresh.idle_timeout": None, "tier": "finance"}))
    assert found == [("access longer", 600.0), ("rotation added", 0.0), ("idle timeout longer", math.inf),
                     ("tier changed", 0.0)]


def test_a_change_without_a_direction_does_not_hide_the_fields_after_it() -> None:
    # no reuse grace means the issuer's default, which may be up to the 5m maximum: same rank as 5m
    found = change_kinds(_outcome(**{"refresh.reuse_grace": None}),
                         _outcome(**{"refresh.reuse_grace": 300, "step_up": False, "step_up_reasons": ()}))
    assert found == [("refresh.reuse_grace changed", 0.0), ("step-up removed", 0.0)]
    both_denied = {"allow": False, "access_ttl": 0, "refresh_ttl": 0}
    found = change_kinds(_outcome(**both_denied, deny_reason="a"), _outcome(**both_denied, deny_reason="b", tier="x"))
    assert found == [("deny reason changed", 0.0), ("tier changed", 0.0)]


def test_a_step_up_flip_is_one_change_not_also_a_changed_reason() -> None:
    found = change_kinds(_outcome(), _outcome(step_up=False, step_up_reasons=(), access_ttl=60, tier="finance"))
    assert found == [("access shorter", 540.0), ("step-up removed", 0.0), ("tier changed", 0.0)]


def test_a_context_only_one_side_accepts_is_the_one_change() -> None:
    refused = Outcome((), frozenset(), "user.risk: not a number")
    assert change_kinds(_outcome(), refused) == [("context refused", math.inf)]
    assert change_kinds(refused, _outcome()) == [("context accepted", math.inf)]
    assert change_kinds(refused, Outcome((), frozenset(), "user.risk: out of range")) == []
    assert change_kinds(refused, refused) == []


# -- policy changes, one field at a time: loosening fails the gate, tightening is reported ----------

PAIRS = [
    # (field, base rules, head rules that loosen it, the loosening kind)
    ("allow", "  - {name: r, when: '!user.mfa', deny: mfa required}\n", "  - {name: r, when: 'false', deny: x}\n",
     "deny→allow"),
    ("access_ttl", "  - {name: r, when: user.mfa, access_ttl: {cap: 30m}}\n",
     "  - {name: r, when: user.mfa, access_ttl: {cap: 45m}}\n", "access longer"),
    ("refresh_ttl", "  - {name: r, when: user.mfa, refresh_ttl: {cap: 2h}}\n",
     "  - {name: r, when: user.mfa, refresh_ttl: {cap: 3h}}\n", "refresh longer"),
    ("rotation", "  - {name: r, when: user.mfa, refresh: {rotation: true}}\n",
     "  - {name: r, when: user.mfa, refresh: {rotation: false}}\n", "rotation removed"),
    ("idle timeout", "  - {name: r, when: user.mfa, refresh: {idle_timeout: 8h}}\n",
     "  - {name: r, when: user.mfa, refresh: {idle_timeout: 12h}}\n", "idle timeout longer"),
    ("max session", "  - {name: r, when: user.mfa, refresh: {max_session: 7d}}\n",
     "  - {name: r, when: user.mfa, refresh: {max_session: 14d}}\n", "max session longer"),
    ("reuse grace", "  - {name: r, when: user.mfa, refresh: {reuse_grace: 0s}}\n",
     "  - {name: r, when: user.mfa, refresh: {reuse_grace: 5s}}\n", "reuse grace longer"),
    ("sender constraint", "  - {name: r, when: user.mfa, refresh: {sender_constrained: true}}\n",
     "  - {name: r, when: user.mfa, access_ttl: {cap: 12h}}\n", "binding no longer required"),
    ("step-up", "  - {name: r, when: '!user.mfa', step_up: use a second factor}\n",
     "  - {name: r, when: '!user.mfa', access_ttl: {cap: 12h}}\n", "step-up removed"),
    ("session end", "  - {name: r, when: has(user.auth_time), refresh: {max_session: 3d}}\n",
     "  - {name: r, when: has(user.auth_time), refresh: {max_session: 4d}}\n", "session ends later"),
]


@pytest.mark.parametrize("field, base, head, kind", PAIRS, ids=[p[0] for p in PAIRS])
def test_a_loosening_change_of_each_field_fails_the_gate(field: str, base: str, head: str, kind: str) -> None:
    report = diff(base, head)
    assert report.loosening and kind in kinds(report), kinds(report)
    group = next(g for g in report.groups if g.kind == kind)
    assert group.count > 0 and group.example().head != group.example().base


@pytest.mark.parametrize("field, base, head, kind", PAIRS, ids=[p[0] for p in PAIRS])
def test_the_reverse_change_is_reported_as_tightening(field: str, base: str, head: str, kind: str) -> None:
    report = diff(head, base)
    assert report.changed and not report.loosening, kinds(report)
    tight = DECISION_FIELDS[next(k for k, f in DECISION_FIELDS.items() if f.labels[0] == kind)].labels[1]
    assert tight in kinds(report)
    assert report.headline().startswith("tightens only: ") and "refused more" in report.headline()


def test_a_new_deny_reason_is_a_change_but_not_a_loosening() -> None:
    report = diff("  - {name: r, when: '!user.mfa', deny: a}\n", "  - {name: r, when: '!user.mfa', deny: b}\n")
    assert kinds(report) == {"deny reason changed"} and not report.loosening


# -- network zones: the edges of both versions' CIDRs are in the grid ------------------------------

ZONE_RULE = "  - {name: office, when: 'location.zone == \"office\"', access_ttl: {multiply: 2}}\n"


def test_widening_a_zone_is_seen_at_the_new_edge() -> None:
    wide = HEAD.replace("10.0.0.0/24", "10.0.0.0/23")
    report = diff(ZONE_RULE, ZONE_RULE, HEAD, wide)
    assert report.loosening and kinds(report) == {"access longer"}
    [group] = report.groups
    ips = {c.context["location"]["ip"] for c, _ in group.changes}
    assert ips == {"10.0.1.0", "10.0.1.255"}  # inside the /23, outside the /24: both new edges


def test_narrowing_a_zone_is_a_tightening_at_the_old_edge() -> None:
    wide = HEAD.replace("10.0.0.0/24", "10.0.0.0/23")
    report = diff(ZONE_RULE, ZONE_RULE, wide, HEAD)
    assert not report.loosening and kinds(report) == {"access shorter"}


def test_moving_a_zone_is_both() -> None:
    moved = HEAD.replace("10.0.0.0/24", "10.0.5.0/24")
    report = diff(ZONE_RULE, ZONE_RULE, HEAD, moved)
    assert kinds(report) == {"access longer", "access shorter"}


# -- refactors are silent ----------------------------------------------------------------------

RULES = """\
  - name: unmanaged-without-mfa
    when: device.trust == "unmanaged" && !user.mfa
    access_ttl: {cap: 30m}
    refresh_ttl: {cap: 1d}
  - name: restricted-or-confidential
    when: resource.sensitivity == "restricted" || resource.sensitivity == "confidential"
    access_ttl: {cap: 15m}
  - name: not-office-or-risky
    when: '!(location.zone == "office" && user.risk < 0.5)'
    refresh_ttl: {cap: 12h}
"""
REFACTORS = {
    "rename": RULES.replace("name: unmanaged-without-mfa", "name: bare-device"),
    "reorder": "".join(reversed(["  - " + part for part in RULES.split("  - ")[1:]])),
    "split": RULES.replace("""  - name: restricted-or-confidential
    when: resource.sensitivity == "restricted" || resource.sensitivity == "confidential"
    access_ttl: {cap: 15m}
""", """  - name: restricted
    when: resource.sensitivity == "restricted"
    access_ttl: {cap: 15m}
  - name: confidential
    when: resource.sensitivity == "confidential"
    access_ttl: {cap: 15m}
"""),
    "de-morgan": RULES.replace("""'!(location.zone == "office" && user.risk < 0.5)'""",
                               """'location.zone != "office" || user.risk >= 0.5'"""),
    "membership": RULES.replace(
        'resource.sensitivity == "restricted" || resource.sensitivity == "confidential"',
        'resource.sensitivity in ["restricted", "confidential"]'),
    "iso-durations": RULES.replace("cap: 30m", "cap: PT30M").replace("cap: 1d", "cap: P1D")
                          .replace("cap: 12h", "cap: 43200"),
}


@pytest.mark.parametrize("name", sorted(REFACTORS))
def test_refactors_report_no_change(name: str) -> None:
    report = diff(RULES, REFACTORS[name])
    assert not report.changed, [(g.kind, g.rules, g.count) for g in report.groups]
    assert report.headline() == "no decision changes"


def test_moving_rules_to_a_base_reports_no_change() -> None:
    base = load_sources({"p.yaml": HEAD + RULES})
    shared = HEAD.replace("name: p\n", "name: shared\nabstract: true\n") + RULES.split("  - name: not-office")[0]
    own = ("apiVersion: ttlpolicy/v1\nname: p\nextends: [shared]\nrules:\n  - name: not-office"
           + RULES.split("  - name: not-office")[1])
    head = load_sources({"shared.yaml": shared, "p.yaml": own})
    assert not diff_policies(base, head).changed


# -- output: the headline first, a progress indicator on a terminal --------------------------------

def test_the_headline_comes_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, rules in (("a", PAIRS[1][1] + PAIRS[0][1].replace("name: r", "name: q")),
                        ("b", PAIRS[1][2] + PAIRS[0][2].replace("name: r", "name: q"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p.yaml").write_text(HEAD + rules)
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on", "loosen"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("LOOSENS: 2 kinds of decision now live longer or are allowed more "
                     "(access longer, deny→allow)")
    main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "markdown"])
    assert "**LOOSENS: 2 kinds of decision" in capsys.readouterr().out.split("\n", 3)[2]
    main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--format", "json"])
    assert json.loads(capsys.readouterr().out)["headline"].startswith("LOOSENS: 2 kinds")


def test_examples_show_the_fields_that_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, rules in (("a", PAIRS[3][1]), ("b", PAIRS[3][2])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p.yaml").write_text(HEAD + rules)
    main(["diff", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "refresh.rotation: true → false" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_only() -> None:
    assert terminal_progress(io.StringIO()) is None
    stream = _Terminal()
    show = terminal_progress(stream)
    assert show is not None
    base = load_sources({"p.yaml": HEAD + RULES})
    diff_policies(base, base, progress=show)
    out = stream.getvalue()
    assert "diff p: 500 of" in out and out.endswith(" scenarios decided\n")


def test_magnitudes_are_seconds_or_infinite() -> None:
    report = diff(PAIRS[1][1] + PAIRS[0][1].replace("name: r", "name: q"),
                  PAIRS[1][2] + PAIRS[0][2].replace("name: r", "name: q"))
    sizes = {g.kind: g.magnitude for g in report.groups}
    assert sizes["access longer"] == 900 and math.isinf(sizes["deny→allow"])


# -- a sampled grid still tries every boundary of what the change reads -----------------------------

WIDE = """\
  - {name: a, when: 'device.platform == "linux"', access_ttl: {cap: 50m}}
  - {name: b, when: 'resource.sensitivity == "restricted"', access_ttl: {cap: 40m}}
  - {name: c, when: 'grant.type == "password"', access_ttl: {cap: 35m}}
  - {name: d, when: 'client.type == "public"', refresh_ttl: {cap: 2h}}
  - {name: e, when: 'user.risk > 0.5', refresh_ttl: {cap: 1h}}
  - name: rare
    when: device.trust == "known" && user.mfa && client.binding == "dpop"
    access_ttl: {multiply: 0.5}
"""


def test_a_sampled_grid_enumerates_the_attributes_a_change_reads() -> None:
    base = load_sources({"p.yaml": HEAD + WIDE})
    head = load_sources({"p.yaml": HEAD + WIDE.replace("multiply: 0.5", "multiply: 0.9")})
    report = diff_policies(base, head, max_scenarios=300)
    [summary] = report.policies
    assert summary.grid_size > 10 * 300 and summary.scenarios == 300  # sampled
    assert kinds(report) == {"access longer"} and report.loosening
    [group] = report.groups
    assert {(c.scenario["device.trust"], c.scenario["user.mfa"], c.scenario["client.binding"])
            for c, _ in group.changes} == {("known", True, "dpop")}
    # every combination of what the changed rule reads is tried: device.trust × user.mfa × client.binding
    b, h = base.get("p"), head.get("p")
    focus = focus_dimensions(b, h)
    assert focus == {"device.trust", "user.mfa", "client.binding"}
    tried = {(s["device.trust"], s["user.mfa"], s["client.binding"])
             for s in build_grid(b, h).scenarios(300, 0, focus)}
    assert len(tried) == 4 * 2 * 3


def test_settings_changes_focus_on_tier_ip_and_time() -> None:
    base = load_sources({"p.yaml": HEAD + WIDE}).get("p")
    moved = HEAD.replace("10.0.0.0/24", "10.0.9.0/24").replace("max_access_ttl: 30m", "max_access_ttl: 20m")
    head = load_sources({"p.yaml": moved.replace("name: p\n", "name: p\ntimezone: Europe/Berlin\n") + WIDE}).get("p")
    assert focus_dimensions(base, head) == {"tier", "location.ip", "time.now"}


def test_the_compared_values_are_the_decisions_json_values() -> None:
    """The fast path reads the Decision's attributes; they must equal what its JSON says."""
    from ttlpolicy.diffing import decision_values

    policies = load_sources({"p.yaml": HEAD + "  - {name: r, when: user.mfa, step_up: x, refresh: {rotation: true}}\n"})
    decision = policies.decide({"user": {"mfa": True, "auth_time": "2025-01-01T00:00:00Z"}},
                               now="2025-01-02T00:00:00Z")
    data = decision.to_dict()
    for key, value in decision_values(decision).items():
        if key == "expires_at.session":
            assert value.strftime("%Y-%m-%dT%H:%M:%SZ") == data["expires_at"]["session"]
            continue
        expected: Any = data
        for part in key.split("."):
            expected = expected[part]
        assert value == (tuple(expected) if isinstance(expected, list) else expected), key


# -- the pieces of the report: headline, grid addresses, replayed logs -----------------------------

def _report(kinds: list[str], added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> Any:
    from ttlpolicy.diffing import DiffReport, Group

    return DiffReport([], [Group("p", kind, ()) for kind in kinds], list(added), list(removed))


@pytest.mark.parametrize(("kinds", "added", "removed", "headline"), [
    ([], (), (), "no decision changes"),
    (["access longer"], (), (), "LOOSENS: 1 kind of decision now lives longer or is allowed more (access longer)"),
    (["refresh longer", "access longer"], (), (),
     "LOOSENS: 2 kinds of decision now live longer or are allowed more (access longer, refresh longer)"),
    (["access shorter"], (), (), "tightens only: 1 kind of decision now lives shorter or is refused more (access shorter)"),
    (["access shorter", "allow→deny"], (), (),
     "tightens only: 2 kinds of decision now live shorter or are refused more (access shorter, allow→deny)"),
    (["access shorter", "tier changed"], (), (),
     "changes: 1 kind of decision now lives shorter or is refused more (access shorter); "
     "1 kind of decision changed without a direction (tier changed)"),
    (["tier changed", "deny reason changed"], (), (),
     "changes: 2 kinds of decision changed without a direction (deny reason changed, tier changed)"),
    ([], ("a",), (), "LOOSENS: 1 policy added (a): every decision is new"),
    ([], ("a", "b"), ("c",), "LOOSENS: 2 policies added (a, b): every decision is new; 1 policy removed"),
    ([], (), ("c", "d"), "changes: 2 policies removed"),
])
def test_the_headline(kinds: list[str], added: tuple[str, ...], removed: tuple[str, ...], headline: str) -> None:
    assert _report(kinds, added, removed).headline() == headline


def test_grid_addresses_sit_inside_each_zone_at_its_edges_and_outside_all() -> None:
    from ttlpolicy.diffing import boundary_addresses, zone_addresses

    policy = load_sources({"p.yaml": HEAD.replace("zones:\n  office: [10.0.0.0/24]",
                                                  "zones:\n  office: [10.0.0.0/24]\n  vpn: [192.168.7.9/32]\n"
                                                  "  lab: [203.0.113.0/24]") + "  []\n"}).get("p")
    assert zone_addresses(policy) == {"office": "10.0.0.1", "vpn": "192.168.7.9", "lab": "203.0.113.1",
                                      "none": "192.0.2.7"}
    found = boundary_addresses(policy)
    for address in ("9.255.255.255", "10.0.0.0", "10.0.0.1", "10.0.0.255", "10.0.1.0", "192.168.7.8",
                    "192.168.7.9", "192.168.7.10", "203.0.112.255", "203.0.113.0", "203.0.113.1", "203.0.113.255",
                    "203.0.114.0", "192.0.2.7"):
        assert address in found, address
    assert len(found) == 14


def test_values_are_described_as_a_reader_writes_them() -> None:
    from ttlpolicy.diffing import ABSENT, describe_value

    assert describe_value(ABSENT) == "(absent)"
    assert describe_value(("age", 3600)) == "now - 3600s"
    assert [describe_value((day, 9)) for day in range(7)] == [
        "mon 09:30", "tue 09:30", "wed 09:30", "thu 09:30", "fri 09:30", "sat 09:30", "sun 09:30"]
    assert describe_value("managed") == "managed"


def test_a_replayed_log_skips_blank_lines_and_names_its_policy(tmp_path: Path) -> None:
    from ttlpolicy.diffing import read_replay

    log = tmp_path / "decisions.jsonl"
    log.write_text("\n".join([
        json.dumps({"context": {"user": {"mfa": True}}, "time": "2026-03-02T10:00:00Z", "policy": "p"}),
        "",
        json.dumps({"context": {}, "time": "2026-03-02T11:00:00Z", "policy": {"name": "q", "digest": "x"}}),
        json.dumps({"context": {}, "time": "2026-03-02T12:00:00Z", "policy": 7}),
        json.dumps({"context": {}, "time": "2026-03-02T13:00:00Z"}),
    ]) + "\n", encoding="utf-8")
    records = list(read_replay(log))
    assert [(r[0], r[3]) for r in records] == [(f"{log}:1", "p"), (f"{log}:3", "q"), (f"{log}:4", None),
                                               (f"{log}:5", None)]
    assert records[0][1] == {"user": {"mfa": True}}
    assert records[1][2] == datetime(2026, 3, 2, 11, 0, tzinfo=timezone.utc)
    log.write_text(json.dumps({"context": [1], "time": "2026-03-02T10:00:00Z"}) + "\n")
    with pytest.raises(ValueError, match=r":1: not a decision log record \(context is not an object\)$"):
        list(read_replay(log))


def _group(*scenarios: dict[str, Any], source: str = "grid") -> Any:
    from ttlpolicy.diffing import Change, Group

    now = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    outcome = _outcome()
    return Group("p", "access longer", (), [(Change(source, s, {}, now, outcome, outcome), 1.0) for s in scenarios])


def test_a_group_is_explained_by_the_grid_values_it_is_limited_to() -> None:
    from ttlpolicy.diffing import ABSENT, Grid, _common

    grid = Grid({"device.trust": ["managed", "unmanaged", ABSENT], "user.mfa": [True, False]}, "UTC")
    only_unmanaged = _group({"device.trust": "unmanaged", "user.mfa": True}, {"device.trust": "unmanaged", "user.mfa": False})
    assert _common(only_unmanaged, (grid, True)) == {"device.trust": "unmanaged"}
    two_of_three = _group({"device.trust": "unmanaged", "user.mfa": True}, {"device.trust": ABSENT, "user.mfa": True})
    assert _common(two_of_three, (grid, True)) == {"device.trust": ["unmanaged", "(absent)"], "user.mfa": True}
    # a sampled grid: 2 scenarios are too few to say a dimension's missing values mean anything
    assert _common(two_of_three, (grid, False)) == {}
    many = _group(*[{"device.trust": "unmanaged", "user.mfa": mfa} for mfa in [True, False] * 5])
    assert _common(many, (grid, False)) == {"device.trust": "unmanaged"}
    just_enough = _group(*[{"device.trust": "unmanaged", "user.mfa": mfa} for mfa in [True, False, True] * 3])
    assert _common(just_enough, (grid, False)) == {"device.trust": "unmanaged"}  # 9 = 3 per value of the 3


def test_replayed_contexts_are_explained_by_the_values_they_all_share() -> None:
    from ttlpolicy.diffing import _common

    group = _group({"user.mfa": True, "device.trust": "managed", "tier": "gold"},
                   {"user.mfa": True, "device.trust": "unmanaged"},
                   {"user.mfa": True, "device.trust": "managed", "tier": "gold"}, source="replay:1")
    assert _common(group, None) == {"user.mfa": True}
    one = _group({"user.mfa": False, "time": (0, 9)}, source="replay:1")
    assert _common(one, None) == {"time": "mon 09:30", "user.mfa": False}
    assert _common(_group({"user.mfa": 1}, {"user.mfa": True}, source="replay:1"), None) == {}  # 1 == True, not the same
    built = "".join(["un", "managed"])  # equal to the literal, not the same object
    assert _common(_group({"device.trust": built}, {"device.trust": "unmanaged"}, source="replay:1"), None) == {
        "device.trust": "unmanaged"}


def test_grid_addresses_stop_at_the_ends_of_the_address_space_v4_before_v6() -> None:
    from ttlpolicy.diffing import boundary_addresses, zone_addresses

    policy = load_sources({"p.yaml": HEAD.replace(
        "zones:\n  office: [10.0.0.0/24]",
        'zones:\n  low: [0.0.0.0/31]\n  high: [255.255.255.254/31]\n'
        '  v6: ["2001:db8::/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127", "::/127"]') + "  []\n"}).get("p")
    assert zone_addresses(policy) == {"low": "0.0.0.0", "high": "255.255.255.254", "v6": "2001:db8::1",
                                      "none": "203.0.113.7"}
    assert boundary_addresses(policy) == [
        "0.0.0.0", "0.0.0.1", "0.0.0.2", "203.0.113.7", "255.255.255.253", "255.255.255.254", "255.255.255.255",
        "::", "::1", "::2", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::", "2001:db8::1", "2001:db8::3",
        "2001:db8::4", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]


def test_a_scenario_becomes_a_nested_context_at_half_past_its_hour_in_the_policy_zone() -> None:
    from ttlpolicy.diffing import ABSENT, scenario_context

    context, now = scenario_context({"device.trust": "managed", "user.mfa": ABSENT, "tier": "gold",
                                     "user.auth_time": ("age", 7200)}, "Europe/Berlin")
    assert now == datetime(2025, 1, 8, 12, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday noon by default
    assert context == {"device": {"trust": "managed"}, "tier": "gold",
                       "user": {"auth_time": "2025-01-08T10:30:00+01:00"}}
    _, monday_morning = scenario_context({"time.now": (0, 9)}, "UTC")
    assert monday_morning == datetime(2025, 1, 6, 9, 30, tzinfo=ZoneInfo("UTC"))


def test_each_side_decides_on_the_attributes_it_declares_and_a_refusal_says_why() -> None:
    from ttlpolicy.diffing import decide_outcome

    policy = load_sources({"p.yaml": HEAD + '  - {name: mfa, when: "user.mfa", access_ttl: {cap: 5m}}\n'}).get("p")
    now = datetime(2025, 1, 8, 12, 30, tzinfo=timezone.utc)
    outcome = decide_outcome(policy, {"user": {"mfa": True, "shoe_size": 44}, "weather": "rain",
                                      "tier": "finance", "office": {"floor": 3}}, now)
    assert outcome.refused is None and outcome.matched == frozenset({"mfa"})
    assert outcome["access_ttl"] == 300 and outcome["tier"] == "finance"
    refused = decide_outcome(policy, {"user": {"mfa": "yes"}, "tier": "nope"}, now)
    assert refused.values == () and refused.matched == frozenset()
    assert refused.refused == "user.mfa: expected a boolean, got string; tier: 'nope' is not one of standard, finance"


def test_a_field_added_to_the_comparison_is_read_from_the_decision_s_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttlpolicy import diffing

    monkeypatch.setitem(diffing.DECISION_FIELDS, "policy.name", diffing.Comparison(("renamed",)))  # type: ignore[index]
    monkeypatch.setitem(diffing.DECISION_FIELDS, "expires_at.access", diffing.Comparison(("moved",)))  # type: ignore[index]
    monkeypatch.setitem(diffing.DECISION_FIELDS, "matched", diffing.Comparison(("rules",)))  # type: ignore[index]
    decision = load_sources({"p.yaml": HEAD + "  []\n"}).decide({}, now="2026-03-02T10:00:00Z")
    values = diffing.decision_values(decision)
    assert (values["policy.name"], values["expires_at.access"], values["matched"]) == ("p", "2026-03-02T11:00:00Z", ())


# -- the grid: values only one side mentions, sampling, and which policies are compared ------------

def test_the_grid_holds_literals_and_tiers_only_the_new_version_mentions() -> None:
    from ttlpolicy.diffing import build_grid

    declared = HEAD.replace("rules:\n", "attributes:\n  user.department: {type: string}\nrules:\n")
    base = load_sources({"p.yaml": declared + '  - {name: a, when: \'user.department == "eng"\', access_ttl: {cap: 5m}}\n'})
    head = load_sources({"p.yaml": declared.replace("finance: {access_ttl: 15m, max_access_ttl: 30m}",
                                                    "finance: {access_ttl: 15m, max_access_ttl: 30m}, gold: {}")
                         + '  - {name: a, when: \'user.department == "ops"\', access_ttl: {cap: 5m}}\n'})
    grid = build_grid(base.get("p"), head.get("p"))
    assert {"eng", "ops"} <= set(grid.dimensions["user.department"])
    assert {"standard", "finance", "gold"} <= set(grid.dimensions["tier"])


def test_a_grid_within_the_budget_is_tried_whole_and_a_larger_one_is_sampled_without_repeats() -> None:
    from ttlpolicy.diffing import Grid

    grid = Grid({"a": [1, 2, 3], "b": ["x", "y"], "c": [True, False]}, "UTC")
    whole = list(grid.scenarios(12))
    assert len(whole) == 12 and whole[0] == {"a": 1, "b": "x", "c": True}
    sample = list(grid.scenarios(11, seed=3))
    assert len(sample) == 11 and len({tuple(s.values()) for s in sample}) == 11
    assert sample == list(grid.scenarios(11, seed=3)) and sample != list(grid.scenarios(11, seed=4))
    # the focus dimensions' combinations come first, each once, when they fit in half the budget
    focused = list(grid.scenarios(11, focus={"a"}))
    assert sorted(s["a"] for s in focused[:3]) == [1, 2, 3]
    first = list(grid.scenarios(10, focus={"b", "c"}))[:4]
    assert {(s["b"], s["c"]) for s in first} == {("x", True), ("x", False), ("y", True), ("y", False)}


def test_only_one_policy_is_compared_when_asked_and_the_largest_loosening_comes_first() -> None:
    two = {"p.yaml": HEAD.replace("name: p", "name: p\ndefault: true") + '  - {name: a, when: "user.mfa", access_ttl: {multiply: 2}}\n',
           "q.yaml": HEAD.replace("name: p", "name: q") + '  - {name: a, when: "user.mfa", access_ttl: {multiply: 2}}\n'}
    two["q.yaml"] = two["q.yaml"].replace("multiply: 2", "multiply: 3")
    looser = {"p.yaml": two["p.yaml"].replace("multiply: 2", "multiply: 3"),
              "q.yaml": two["q.yaml"].replace("multiply: 3", "multiply: 4")}
    report = diff_policies(load_sources(two), load_sources(looser), only="q")
    assert [p.policy for p in report.policies] == ["q"] and {g.policy for g in report.groups} == {"q"}
    assert {g.magnitude for g in report.groups} == {3600.0}  # 3h to 4h, against q's own base version
    both = diff_policies(load_sources(two), load_sources(looser))
    assert [p.policy for p in both.policies] == ["p", "q"]
    assert [g.policy for g in both.groups if g.kind == "access longer"] == ["p", "q"]  # 1h longer each: by name
    assert all(p.changed > 0 and p.scenarios == p.grid_size for p in both.policies)


@pytest.mark.parametrize(("condition", "days", "hours"), [
    ("time.hour >= 18", 1, 24), ("time.minute < 30", 1, 24), ("time.weekday == \"sat\"", 7, 24),
    ("time.date == \"2025-01-11\"", 7, 1), ("time.now > timestamp(\"2025-01-01T00:00:00Z\")", 1, 24),
    ("time.zone == \"UTC\"", 0, 0),
])
def test_the_grid_tries_every_hour_and_day_a_time_condition_can_tell_apart(condition: str, days: int,
                                                                           hours: int) -> None:
    from ttlpolicy.diffing import build_grid

    policy = load_sources({"p.yaml": HEAD + f"  - {{name: t, when: '{condition}', access_ttl: {{cap: 5m}}}}\n"}).get("p")
    instants = build_grid(policy, policy).dimensions.get("time.now", [])
    assert len({day for day, _ in instants}) == days and len({hour for _, hour in instants}) == hours
    if days == 1:
        assert {day for day, _ in instants} == {2}  # a Wednesday
    if hours == 1:
        assert {hour for _, hour in instants} == {12}


def test_the_grid_has_an_address_dimension_when_a_rule_reads_the_zone_and_a_tier_one_side_has() -> None:
    from ttlpolicy.diffing import ABSENT, build_grid

    no_tiers = HEAD.replace("  tier: standard\n", "").replace(
        "tiers: {standard: {}, finance: {access_ttl: 15m, max_access_ttl: 30m}}\n", "")
    base = load_sources({"p.yaml": no_tiers + "  []\n"}).get("p")
    head = load_sources({"p.yaml": HEAD + '  - {name: z, when: \'location.zone == "office"\', access_ttl: {cap: 5m}}\n'}).get("p")
    grid = build_grid(base, head)
    assert "10.0.0.1" in grid.dimensions["location.ip"] and grid.dimensions["location.ip"][-1] is ABSENT
    assert "location.zone" not in grid.dimensions  # derived from the address
    assert {"standard", "finance"} <= set(grid.dimensions["tier"])
    assert "location.ip" not in build_grid(base, base).dimensions


def test_a_new_rule_is_added_not_redefined_and_groups_come_largest_first_with_their_counts() -> None:
    base = load_sources({"p.yaml": HEAD + '  - {name: keep, when: "user.mfa", access_ttl: {cap: 30m}}\n'})
    head = load_sources({"p.yaml": HEAD + '  - {name: keep, when: "user.mfa", access_ttl: {cap: 50m}}\n'
                                          '  - {name: new, when: \'tier == "finance"\', deny: "no"}\n'})
    report = diff_policies(base, head)
    rules = {(g.kind, g.rules) for g in report.groups}
    assert rules == {("allow→deny", ("+new",)), ("allow→deny", ("+new", "~keep")), ("access longer", ("~keep",))}
    order = [(not g.loosening, -g.magnitude, -g.count) for g in report.groups]
    assert order == sorted(order) and report.groups[0].loosening
    assert report.policies[0].policy == "p" and report.policies[0].changed > 0
    assert 0 < report.seconds < 120


def test_progress_is_reported_for_large_grids_and_replays_go_to_their_own_policy(tmp_path: Path) -> None:
    from ttlpolicy.diffing import PROGRESS_EVERY

    rules = '  - {name: a, when: \'user.mfa && time.hour >= 18 && location.zone == "office"\', access_ttl: {cap: 30m}}\n'
    two = {"p.yaml": HEAD.replace("name: p", "name: p\ndefault: true") + rules,
           "q.yaml": HEAD.replace("name: p", "name: q") + rules}
    looser = {name: text.replace("cap: 30m", "cap: 50m") for name, text in two.items()}
    calls: list[tuple[str, int, int]] = []
    evening = datetime(2026, 3, 2, 20, tzinfo=timezone.utc)
    office = {"user": {"mfa": True}, "location": {"ip": "10.0.0.9"}, "tier": "standard"}
    replay = [("log:1", office, evening, "q"), ("log:2", office, evening, None), ("log:3", office, evening, "q")]
    report = diff_policies(load_sources(two), load_sources(looser), replay=replay,
                           max_scenarios=PROGRESS_EVERY + 5, progress=lambda *call: calls.append(call))
    assert {p.policy: p.replayed for p in report.policies} == {"p": 1, "q": 2}
    sizes = {p.policy: (p.scenarios, p.grid_size) for p in report.policies}
    for name, (count, size) in sizes.items():
        if count >= PROGRESS_EVERY:
            assert (name, PROGRESS_EVERY, min(size, PROGRESS_EVERY + 5)) in calls and (name, count, count) in calls
        else:
            assert not [c for c in calls if c[0] == name]
    assert calls  # these grids are larger than PROGRESS_EVERY
    replayed = [c for g in report.groups for c, _ in g.changes if c.source.startswith("log:")]
    assert {c.source for c in replayed} == {"log:1", "log:2", "log:3"}
    assert all(c.scenario == {"user.mfa": True, "location.ip": "10.0.0.9", "tier": "standard"} for c in replayed)


def test_grid_addresses_cover_every_cidr_of_a_zone_and_the_last_addresses_before_the_ends() -> None:
    from ttlpolicy.diffing import boundary_addresses, zone_addresses

    zones = ('zones:\n  small: [10.9.0.0/30, 10.3.0.0/30]\n  edge: [0.0.0.1/32, 255.255.255.254/32, '
             '"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128"]\n  doc1: [203.0.113.0/24]\n  doc2: [192.0.2.0/24]\n'
             '  bench: [198.18.0.0/15]')
    policy = load_sources({"p.yaml": HEAD.replace("zones:\n  office: [10.0.0.0/24]", zones) + "  []\n"}).get("p")
    assert zone_addresses(policy)["small"] == "10.9.0.1" and zone_addresses(policy)["none"] == "100.64.0.7"
    found = boundary_addresses(policy)
    for address in ("10.3.0.1", "0.0.0.0", "255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert address in found, address
    bench_only = load_sources({"p.yaml": HEAD.replace("zones:\n  office: [10.0.0.0/24]", zones.replace(
        "  bench: [198.18.0.0/15]", "")) + "  []\n"}).get("p")
    assert zone_addresses(bench_only)["none"] == "198.18.0.7"


def test_the_focus_of_a_change_is_what_its_rules_read() -> None:
    from ttlpolicy.diffing import focus_dimensions

    base = load_sources({"p.yaml": HEAD + "  []\n"}).get("p")
    head = load_sources({"p.yaml": HEAD.replace("rules:\n", "attributes:\n  user.risk: {type: double}\nrules:\n")
                         + '  - {name: z, when: \'location.zone == "office" && time.hour > 18\','
                           ' access_ttl: {multiply: {expr: "1.0 - user.risk", min: 0.1}}}\n'}).get("p")
    assert focus_dimensions(base, head) == {"location.zone", "location.ip", "time.hour", "time.now", "user.risk"}
    assert focus_dimensions(head, base) == focus_dimensions(base, head)


def test_a_sample_is_the_same_for_the_same_seed_and_focuses_within_half_the_budget() -> None:
    from ttlpolicy.diffing import Grid

    grid = Grid({"a": [1, 2, 3], "b": ["x", "y"], "c": [True, False]}, "UTC")
    assert list(grid.scenarios(11)) == list(grid.scenarios(11, seed=0))
    first = list(grid.scenarios(9, seed=5, focus={"b", "c"}))[:4]  # 4 combinations, 9 // 2 = 4: they fit
    assert {(s["b"], s["c"]) for s in first} == {("x", True), ("x", False), ("y", True), ("y", False)}


def test_a_description_is_not_behaviour_a_rule_whose_description_changed_is_not_redefined() -> None:
    base = load_sources({"p.yaml": HEAD + '  - {name: a, description: one, when: "user.mfa", access_ttl: {cap: 30m}}\n'
                                          '  - {name: b, when: "user.mfa", access_ttl: {cap: 40m}}\n'})
    head = load_sources({"p.yaml": HEAD + '  - {name: a, description: two, when: "user.mfa", access_ttl: {cap: 30m}}\n'
                                          '  - {name: b, when: "user.mfa", access_ttl: {cap: 20m}}\n'})
    assert {g.rules for g in diff_policies(base, head).groups} == {("~b",)}


def test_the_grid_keeps_a_tier_only_the_old_version_has_and_zone_edges_for_a_rule_on_the_address() -> None:
    from ttlpolicy.diffing import build_grid

    three = HEAD.replace("finance: {access_ttl: 15m, max_access_ttl: 30m}",
                         "finance: {access_ttl: 15m, max_access_ttl: 30m}, gold: {}")
    base = load_sources({"p.yaml": three + "  []\n"}).get("p")
    head = load_sources({"p.yaml": HEAD + '  - {name: ip, when: \'location.ip == "10.0.0.7"\', access_ttl: {cap: 5m}}\n'}).get("p")
    grid = build_grid(base, head)
    assert {"standard", "finance", "gold"} <= set(grid.dimensions["tier"])  # gold: a context base decides with
    assert {"9.255.255.255", "10.0.0.0", "10.0.0.255", "10.0.1.0"} <= set(grid.dimensions["location.ip"])


def test_the_largest_loosening_comes_first() -> None:
    base = load_sources({"p.yaml": HEAD + "  []\n"})
    head = load_sources({"p.yaml": HEAD + '  - {name: b, when: "user.mfa", access_ttl: {multiply: 2}}\n'
                                          '  - {name: a, when: "!user.mfa", access_ttl: {multiply: 1.5}}\n'})
    groups = diff_policies(base, head).groups
    assert [(g.kind, g.rules, g.magnitude) for g in groups] == [("access longer", ("+b",), 3600.0),
                                                                ("access longer", ("+a",), 1800.0)]


def test_a_grid_exactly_the_size_of_the_budget_is_tried_whole_and_explains_its_groups() -> None:
    base = load_sources({"p.yaml": HEAD + "  []\n"})
    head = load_sources({"p.yaml": HEAD + '  - {name: m, when: \'device.trust == "managed"\', access_ttl: {multiply: 2}}\n'})
    size = build_grid(base.get("p"), head.get("p")).size  # device.trust × tier
    # every scenario is decided, so the 2 changed ones say for certain that only "managed" changed
    [group] = diff_policies(base, head, max_scenarios=size).groups
    assert (group.count, group.common) == (2, {"device.trust": "managed"})
    # one short of the grid: a sample of it, where one change explains nothing
    [sampled] = diff_policies(base, head, max_scenarios=size - 1).groups
    assert sampled.common == {}


def test_even_a_small_sample_tries_the_one_combination_a_change_reads_and_the_same_seed_repeats_it() -> None:
    base = load_sources({"p.yaml": HEAD + WIDE})
    head = load_sources({"p.yaml": HEAD + WIDE.replace("multiply: 0.5", "multiply: 0.9")})
    # 50 scenarios of a grid of thousands: the 24 combinations the changed rule reads come first
    report = diff_policies(base, head, max_scenarios=50)
    assert kinds(report) == {"access longer"}
    sampled = [c.scenario for g in diff_policies(base, head, max_scenarios=300, seed=7).groups for c, _ in g.changes]
    again = [c.scenario for g in diff_policies(base, head, max_scenarios=300, seed=7).groups for c, _ in g.changes]
    assert sampled and again == sampled  # a reproducible sample: the same seed, the same scenarios


def test_of_two_loosenings_as_large_the_more_frequent_comes_first() -> None:
    base = load_sources({"p.yaml": HEAD + "  []\n"})
    head = load_sources({"p.yaml": HEAD + '  - {name: few, when: \'device.trust == "managed"\', access_ttl: {multiply: 2}}\n'
                                          '  - {name: many, when: \'device.trust != "managed" && user.mfa\', '
                                          'access_ttl: {multiply: 2}}\n'})
    groups = diff_policies(base, head).groups
    assert [(g.rules, g.magnitude) for g in groups] == [(("+many",), 3600.0), (("+few",), 3600.0)]
    assert groups[0].count > groups[1].count
