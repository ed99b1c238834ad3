"""The one step after the policy: ceilings from the state layer only ever tighten, and say so."""

from __future__ import annotations

from datetime import datetime, timezone

from ttlpolicy.decision import Decision
from ttlpolicy.state.tighten import Ceiling, tighten

ISSUED = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)


def _decision(allow: bool = True, access: int = 3600, refresh: int = 86400) -> Decision:
    return Decision(allow=allow, access_ttl=access if allow else 0, refresh_ttl=refresh if allow else 0,
                    rotation=False, idle_timeout=None, max_session=None, reuse_grace=None, sender_constrained=False,
                    issued_at=ISSUED, session_end=None, step_up=False, step_up_reasons=["policy reason"],
                    deny_reason=None if allow else "policy deny", matched=[], errors=[],
                    steps=[("access_ttl", "base", 3600, 3600, None, "defaults")], policy_name="p",
                    policy_digest="sha256:x", extra={"kept": 1})


def test_ceilings_lower_each_lifetime_and_say_so_even_when_already_lower() -> None:
    tightened = tighten(_decision(), [Ceiling("emergency", "INC-42", access_ttl=300, refresh_ttl=0),
                                      Ceiling("degraded", "store", access_ttl=7200)])
    assert (tightened.allow, tightened.access_ttl, tightened.refresh_ttl) == (True, 300, 0)
    assert tightened.steps[1:] == [
        ("access_ttl", "degraded", 7200, 3600, None, "store: access ≤ 2h"),
        ("access_ttl", "emergency", 300, 300, None, "INC-42: access ≤ 5m"),
        ("refresh_ttl", "emergency", 0, 0, None, "INC-42: refresh off"),
    ]
    assert tighten(_decision(), [Ceiling("emergency", "x", refresh_ttl=600)]).steps[-1] == (
        "refresh_ttl", "emergency", 600, 600, None, "x: refresh ≤ 10m")


def test_a_deny_from_state_denies_and_keeps_the_first_reason() -> None:
    denied = tighten(_decision(), [Ceiling("rate_limit", "login", deny="too many attempts"),
                                   Ceiling("emergency", "INC-1", deny="lockdown")])
    assert (denied.allow, denied.access_ttl, denied.refresh_ttl) == (False, 0, 0)
    assert denied.deny_reason == "INC-1: lockdown"  # ceilings apply in a fixed order: emergency before rate_limit
    assert denied.steps[-2:] == [("access_ttl", "deny", None, 0, None, "login: too many attempts"),
                                 ("refresh_ttl", "deny", None, 0, None, "login: too many attempts")]
    already = tighten(_decision(allow=False), [Ceiling("emergency", "INC-1", deny="lockdown")])
    assert already.deny_reason == "policy deny"


def test_a_step_up_from_state_adds_its_reason_once() -> None:
    stepped = tighten(_decision(), [Ceiling("emergency", "INC-7", step_up="verify"),
                                    Ceiling("emergency", "INC-7", step_up="verify", access_ttl=60)])
    assert stepped.step_up is True and stepped.step_up_reasons == ["policy reason", "INC-7: verify"]
    assert stepped.access_ttl == 60


def test_nothing_to_apply_returns_the_decision_itself_and_extra_is_merged() -> None:
    decision = _decision()
    assert tighten(decision, []) is decision
    merged = tighten(decision, [], {"state": "degraded"})
    assert merged.extra == {"kept": 1, "state": "degraded"} and decision.extra == {"kept": 1}
    assert merged.to_dict()["state"] == "degraded" and merged.access_ttl == 3600


def test_ceilings_that_tie_on_their_source_apply_in_one_order() -> None:
    a = Ceiling("emergency", "same", access_ttl=None, refresh_ttl=600, deny=None, step_up="b")
    b = Ceiling("emergency", "same", access_ttl=300, refresh_ttl=None, deny="d", step_up=None)
    assert a.sort_key() == ("emergency", "same", -1, 600, "", "b")
    assert b.sort_key() == ("emergency", "same", 300, -1, "d", "")
    assert tighten(_decision(), [a, b]).steps == tighten(_decision(), [b, a]).steps
