"""Properties of refresh sequences: the absolute cap always holds, and risk never buys time.

For any sequence of refreshes with any contexts (device trust, network, MFA, risk, whether the
context even carries ``user.auth_time``, time between refreshes):

* no refresh token, and no access token, ever expires after the session's absolute cap —
  ``auth_time + max_session``, with the smallest ``max_session`` any decision in the session
  gave (an oracle computed here, independently of the SDK), and the cap never moves later;
* from the same state at the same instant, a refresh with a riskier context (higher
  ``user.risk``, all else equal) never leaves the client more time than a calmer one.

Both hold for the bundled policy and for a policy with long refresh lifetimes and no step-up,
which lets sessions run into the cap instead of ending at a step-up.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttlpolicy import load_policies, load_sources
from ttlpolicy.tokens import (
    IssuanceDenied,
    MemoryRefreshStore,
    RefreshChain,
    TokenInvalid,
    VerifiedToken,
)

NOW = 1_741_082_400  # 2025-03-04T10:00:00Z
ISS = "https://id.example.com"
DAY = 86400

LONG_POLICY = """
apiVersion: ttlpolicy/v1
name: long
defaults:
  access_ttl: 2h
  refresh_ttl: 20d
  refresh: {rotation: false, idle_timeout: 5d, max_session: 10d}
rules:
  - name: risk
    when: user.risk > 0.0
    access_ttl: {multiply: {expr: "1.0 - user.risk", min: 0.1, max: 1.0}}
    refresh_ttl: {multiply: {expr: "1.0 - user.risk", min: 0.1, max: 1.0}}
  - name: too-risky
    when: user.risk >= 0.95
    deny: too risky
  - name: unmanaged
    when: device.trust == "unmanaged"
    refresh_ttl: {cap: 1d}
    refresh: {max_session: 3d, rotation: true}
"""

POLICY_SETS = {
    "bundled": load_policies(Path(__file__).resolve().parents[1] / "policies"),
    "long": load_sources({"long.yaml": LONG_POLICY}),
}

steps = st.fixed_dictionaries({
    "dt": st.integers(0, 6 * DAY),
    "risk": st.floats(0.0, 1.0, allow_nan=False),
    "trust": st.sampled_from(["managed", "compliant", "known", "unmanaged"]),
    "ip": st.sampled_from(["10.0.0.1", "172.16.0.9", "8.8.8.8", None]),
    "mfa": st.booleans(),
    "contractor": st.booleans(),
    "auth_time": st.booleans(),  # does the issuer pass user.auth_time? The SDK must cap either way.
    "public": st.booleans(),
})


def context(step: dict[str, Any], grant: str, risk: float | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"risk": step["risk"] if risk is None else risk, "mfa": step["mfa"]}
    if step["contractor"]:
        user["groups"] = ["contractors"]
    if step["auth_time"] or grant == "password":
        user["auth_time"] = NOW
    out: dict[str, Any] = {"device": {"trust": step["trust"]}, "user": user, "grant": {"type": grant},
                           "client": {"type": "public" if step["public"] else "confidential"}}
    if step["ip"]:
        out["location"] = {"ip": step["ip"]}
    return out


def at(instant: int) -> datetime:
    return datetime.fromtimestamp(instant, timezone.utc)


def verified(claims: dict[str, Any]) -> VerifiedToken:
    # The chain, not JWT verification, is under test here: skip signing for speed.
    return VerifiedToken(claims=claims, issuer=ISS, algorithm="ES256", kid=None, token_type=None)


class Session:
    """One sign-in and its refreshes, with the oracle cap tracked independently of the SDK."""

    def __init__(self, policies: Any, first: dict[str, Any]):
        self.policies, self.store = policies, MemoryRefreshStore()
        self.chain = RefreshChain(self.store, reuse_grace=0)
        decision = policies.decide(context(first, "password"), now=at(NOW))
        self.cap = NOW + decision.max_session if decision.max_session is not None else None
        self.issued = self.chain.start({"iss": ISS, "aud": ISS, "sub": "alice"}, decision, NOW, client_id="c",
                                       public_client=first["public"], step_up_satisfied=True)
        self.claims = self.issued.refresh_claims
        self.now = NOW

    def refresh(self, step: dict[str, Any], instant: int, risk: float | None = None) -> Any:
        """The new tokens, or ``None`` when the session cannot go on (expired, denied, step-up)."""
        try:
            redemption = self.chain.redeem(verified(self.claims), instant, client_id="c")
        except TokenInvalid:
            return None
        decision = self.policies.decide(context(step, "refresh_token", risk), now=at(instant))
        if decision.max_session is not None and self.cap is not None:
            self.cap = min(self.cap, NOW + decision.max_session)
        try:
            return self.chain.rotate(redemption, {"iss": ISS, "aud": ISS, "sub": "alice"}, decision, instant)
        except IssuanceDenied:
            return None

    def held_until(self, issued: Any) -> int:
        """When the refresh credential the client holds after ``issued`` stops working."""
        if issued is None:
            return 0
        if issued.refresh_claims is not None:
            return int(issued.refresh_claims["exp"])
        return self.store.token(self.claims["jti"]).expires_at

    def check_cap(self, issued: Any) -> None:
        family = self.store.family(self.issued.family)
        assert self.cap is not None and family.session_exp is not None
        assert family.session_exp <= self.cap
        assert self.held_until(issued) <= self.cap
        access = issued.access_claims({"iss": ISS, "aud": "api", "sub": "alice"})
        assert access["exp"] <= self.cap
        assert access["exp"] <= family.session_exp


@pytest.mark.parametrize("name", sorted(POLICY_SETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=steps, sequence=st.lists(steps, min_size=1, max_size=8))
def test_no_refresh_outlives_the_absolute_cap(name: str, first: dict[str, Any],
                                              sequence: list[dict[str, Any]]) -> None:
    if first["risk"] >= 0.9:
        first = {**first, "risk": 0.0}  # a denied sign-in opens no session to test
    session = Session(POLICY_SETS[name], first)
    if session.claims is None:
        return
    previous_cap = session.store.family(session.issued.family).session_exp
    instant = NOW
    for step in sequence:
        instant += step["dt"]
        issued = session.refresh(step, instant)
        if issued is None:
            break
        session.check_cap(issued)
        cap = session.store.family(session.issued.family).session_exp
        assert cap <= previous_cap  # the session's end only ever moves earlier
        previous_cap = cap
        if issued.refresh_claims is None and session.held_until(issued) <= instant:
            break
        if issued.refresh_claims is not None:
            session.claims = issued.refresh_claims


@pytest.mark.parametrize("name", sorted(POLICY_SETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=steps, prefix=st.lists(steps, max_size=5), last=steps,
       risks=st.tuples(st.floats(0.0, 1.0, allow_nan=False), st.floats(0.0, 1.0, allow_nan=False)))
def test_riskier_refresh_never_lengthens_what_remains(name: str, first: dict[str, Any],
                                                      prefix: list[dict[str, Any]], last: dict[str, Any],
                                                      risks: tuple[float, float]) -> None:
    calm_risk, risky_risk = sorted(risks)
    if first["risk"] >= 0.9:
        first = {**first, "risk": 0.0}
    session = Session(POLICY_SETS[name], first)
    if session.claims is None:
        return
    instant = NOW
    for step in prefix:
        instant += step["dt"]
        issued = session.refresh(step, instant)
        if issued is None:
            return
        if issued.refresh_claims is not None:
            session.claims = issued.refresh_claims
    instant += last["dt"]
    # Two refreshes from the very same state at the same instant; only user.risk differs.
    risky = Session.__new__(Session)
    risky.__dict__.update(session.__dict__)
    risky.store = session.store.copy()
    risky.chain = RefreshChain(risky.store, reuse_grace=0)
    calm_issued = session.refresh(last, instant, calm_risk)
    risky_issued = risky.refresh(last, instant, risky_risk)
    assert risky.held_until(risky_issued) <= session.held_until(calm_issued)
    if risky_issued is not None:
        assert calm_issued is not None
        base = {"iss": ISS, "aud": "api", "sub": "alice"}
        assert risky_issued.access_claims(base)["exp"] <= calm_issued.access_claims(base)["exp"]
