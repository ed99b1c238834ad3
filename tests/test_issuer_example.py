"""The example issuer end to end over HTTP: login, use, refresh, reuse, expiry, risk, the cap, restart."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[1]
# The example lives outside the package; import it the way `python -m examples.issuer` does.
sys.path.insert(0, str(REPO))
from examples.issuer.app import create_app  # noqa: E402
from ttlpolicy.tokens import public_jwk  # noqa: E402

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

START = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)  # a Tuesday, 10:00 in Berlin
OFFICE = ("10.1.2.3", 50000)  # the corporate zone
INFECTED_OFFICE = ("10.66.0.5", 50000)  # corporate too, but the demo risk table scores it 0.6


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_client(tmp_path: Path, clock: Clock) -> Callable[..., TestClient]:
    """A client on a fresh app instance over the same SQLite file: calling it again is a restart."""

    def make(client: tuple[str, int] = OFFICE, **options: Any) -> TestClient:
        app = create_app(db_path=tmp_path / "issuer.sqlite3", issuer="http://testserver", clock=clock,
                         **options)
        return TestClient(app, client=client)

    return make


def login(client: TestClient, user: str = "alice", password: str = "wonderland", device: str = "managed",
          headers: dict[str, str] | None = None, **form: str) -> httpx.Response:
    data = {"grant_type": "password", "username": user, "password": password, "client_id": "cli", **form}
    return client.post("/token", data=data, headers={"X-Device-Trust": device, **(headers or {})})


def refresh(client: TestClient, token: str, device: str = "managed", **headers: str) -> httpx.Response:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": "cli"},
                       headers={"X-Device-Trust": device, **headers})


def use(client: TestClient, access_token: str, scheme: str = "Bearer", **headers: str) -> httpx.Response:
    return client.get("/resource", headers={"Authorization": f"{scheme} {access_token}", **headers})


def challenge(response: httpx.Response) -> str:
    assert response.status_code == 401
    return response.headers["WWW-Authenticate"]


def test_login_use_refresh_and_reuse_revokes_the_family(make_client: Callable[..., TestClient],
                                                        clock: Clock) -> None:
    client = make_client()
    first = login(client)
    assert first.status_code == 200, first.text
    body = first.json()
    assert first.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["refresh_expires_in"] == 7 * 86400  # 14d held to the 7d idle timeout
    assert body["decision"]["rotation"] is True  # a public client: the bundled policy rotates
    assert use(client, body["access_token"]).json()["sub"] == "alice"

    clock.advance(minutes=30)
    second = refresh(client, body["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != body["refresh_token"]
    assert use(client, rotated["access_token"]).status_code == 200

    clock.advance(minutes=1)  # beyond the 10 s grace window
    replay = refresh(client, body["refresh_token"])
    assert replay.status_code == 400
    assert replay.json() == {"error": "invalid_grant",
                             "error_description": "refresh token reuse detected; token family revoked"}
    # The whole family is dead: the rotated refresh token and the access tokens too.
    assert refresh(client, rotated["refresh_token"]).json()["error_description"] == "token family revoked"
    assert challenge(use(client, rotated["access_token"])) == (
        'Bearer realm="demo-api", error="invalid_token", error_description="token family revoked"')
    assert challenge(use(client, body["access_token"])).endswith('"token family revoked"')


def test_reuse_detection_survives_a_restart(make_client: Callable[..., TestClient], clock: Clock) -> None:
    before = make_client()
    original = login(before).json()
    rotated = refresh(before, original["refresh_token"]).json()
    clock.advance(minutes=5)

    after = make_client()  # a new process: same SQLite file and signing key, nothing in memory
    assert use(after, rotated["access_token"]).status_code == 200  # the key survived
    assert refresh(after, original["refresh_token"]).json()["error_description"].startswith("refresh token reuse")

    again = make_client()
    assert refresh(again, rotated["refresh_token"]).json()["error_description"] == "token family revoked"
    assert challenge(use(again, rotated["access_token"])).endswith('"token family revoked"')


def test_grace_window_allows_one_retry(make_client: Callable[..., TestClient], clock: Clock) -> None:
    client = make_client()
    original = login(client).json()
    lost = refresh(client, original["refresh_token"]).json()  # the answer never reached the client
    clock.advance(seconds=3)
    retried = refresh(client, original["refresh_token"])
    assert retried.status_code == 200
    clock.advance(seconds=3)
    assert refresh(client, retried.json()["refresh_token"]).status_code == 200
    # The superseded token turning up later is a sign of theft.
    assert refresh(client, lost["refresh_token"]).json()["error_description"].startswith("refresh token reuse")


def test_expired_access_token_gets_a_401_that_says_why(make_client: Callable[..., TestClient],
                                                       clock: Clock) -> None:
    client = make_client()
    body = login(client).json()
    clock.advance(seconds=3600 + 29)  # inside the 30 s leeway
    assert use(client, body["access_token"]).status_code == 200
    clock.advance(seconds=2)
    assert challenge(use(client, body["access_token"])) == (
        'Bearer realm="demo-api", error="invalid_token", error_description="token expired"')
    assert use(client, body["access_token"]).json()["reason"] == "expired"
    # A refresh token is not an access token, however valid.
    assert challenge(use(client, body["refresh_token"])).endswith('error_description="wrong token type (expected at+jwt)"')
    missing = client.get("/resource")
    assert challenge(missing) == 'Bearer realm="demo-api"'  # RFC 6750 §3.1: no error without credentials
    tampered = body["access_token"][:-4] + ("AAAA" if not body["access_token"].endswith("AAAA") else "BBBB")
    assert "bad signature" in challenge(use(client, tampered)) or "malformed" in challenge(use(client, tampered))


def test_riskier_context_shortens_the_next_refresh(make_client: Callable[..., TestClient], clock: Clock) -> None:
    office = make_client()
    first = login(office).json()
    assert first["refresh_expires_in"] == 7 * 86400
    clock.advance(hours=1)
    calm = refresh(office, first["refresh_token"]).json()
    assert calm["refresh_expires_in"] == 7 * 86400 and calm["expires_in"] == 3600

    clock.advance(hours=1)
    risky = refresh(make_client(INFECTED_OFFICE), calm["refresh_token"]).json()
    assert "risk-scaling" in risky["decision"]["matched"]
    assert risky["refresh_expires_in"] == int(14 * 86400 * 0.4)  # 5.6 days instead of 7
    assert risky["expires_in"] == int(3600 * 0.4)

    clock.advance(hours=1)
    denied = refresh(make_client(("192.0.2.7", 50000)), risky["refresh_token"])
    assert denied.status_code == 400
    assert denied.json()["error_description"] == "user risk is too high; the account needs review"
    # A deny ends the session: nothing from this family works any more.
    assert refresh(office, risky["refresh_token"]).json()["error_description"] == "token family revoked"


CAP_POLICY = """
apiVersion: ttlpolicy/v1
name: short-sessions
description: Two-hour sessions, to watch the absolute cap end one.
attributes:
  user.department: {type: string}
defaults:
  access_ttl: 30m
  refresh_ttl: 1h
  refresh: {rotation: true, max_session: 2h}
rules:
  - name: unmanaged
    when: device.trust == "unmanaged"
    access_ttl: {cap: 10m}
"""


def test_absolute_cap_ends_the_session(make_client: Callable[..., TestClient], clock: Clock,
                                       tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "short.yaml").write_text(CAP_POLICY)
    client = make_client(policies_dir=tmp_path / "policies")
    body = login(client).json()
    assert body["session_expires_at"] == "2025-03-04T11:00:00Z"
    token = body["refresh_token"]
    for minutes, refresh_left, access_left in ((50, 3600, 1800), (50, 1200, 1200)):
        clock.advance(minutes=minutes)
        answer = refresh(client, token).json()
        assert (answer["refresh_expires_in"], answer["expires_in"]) == (refresh_left, access_left)
        token = answer["refresh_token"]
    assert use(client, answer["access_token"]).json()["expires_at"] == "2025-03-04T11:00:00Z"
    clock.advance(minutes=19)
    last = refresh(client, token).json()
    assert last["refresh_expires_in"] == 60 and last["expires_in"] == 60
    clock.advance(minutes=1)
    ended = refresh(client, last["refresh_token"])
    assert ended.status_code == 400
    assert ended.json()["error_description"] in ("token expired", "session expired; sign in again")
    clock.advance(seconds=31)
    assert challenge(use(client, last["access_token"])).endswith('"token expired"')


def dpop(key: Any, method: str, url: str, clock: Clock, access_token: str | None = None) -> str:
    claims: dict[str, Any] = {"jti": os.urandom(8).hex(), "htm": method, "htu": url,
                              "iat": int(clock().timestamp())}
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": public_jwk(key)})


def test_dpop_bound_tokens_live_longer_and_need_the_key(make_client: Callable[..., TestClient],
                                                        clock: Clock) -> None:
    client, key = make_client(), ec.generate_private_key(ec.SECP256R1())
    bound = login(client, headers={"DPoP": dpop(key, "POST", "http://testserver/token", clock)})
    assert bound.status_code == 200, bound.text
    body = bound.json()
    assert body["token_type"] == "DPoP" and body["expires_in"] == 7200  # bearer gets 3600
    assert "sender-constrained" in body["decision"]["matched"]
    at = body["access_token"]
    assert use(client, at, "DPoP", DPoP=dpop(key, "GET", "http://testserver/resource", clock, at)).json()[
        "binding"] == "dpop"
    stolen = use(client, at)  # presented as a bearer token, without the key
    assert challenge(stolen).startswith('DPoP realm="demo-api", error="invalid_token"')
    thief = ec.generate_private_key(ec.SECP256R1())
    assert "does not match" in challenge(use(client, at, "DPoP",
                                             DPoP=dpop(thief, "GET", "http://testserver/resource", clock, at)))
    replayed = dpop(key, "GET", "http://testserver/resource", clock, at)
    assert use(client, at, "DPoP", DPoP=replayed).status_code == 200
    assert "already used" in challenge(use(client, at, "DPoP", DPoP=replayed))
    # The refresh token is bound as well: no proof, no refresh — and no revocation by a thief.
    assert refresh(client, body["refresh_token"]).json()["error_description"].startswith("token is bound")
    ok = refresh(client, body["refresh_token"], DPoP=dpop(key, "POST", "http://testserver/token", clock))
    assert ok.status_code == 200 and ok.json()["token_type"] == "DPoP"


def test_client_credentials_step_up_and_bad_requests(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    machine = client.post("/token", data={"grant_type": "client_credentials", "client_id": "reporter",
                                          "client_secret": "reporter-secret"})
    assert machine.status_code == 200 and "refresh_token" not in machine.json()
    assert machine.json()["decision"]["policy"] == "machine"
    assert use(client, machine.json()["access_token"]).json()["sub"] == "reporter"
    wrong = client.post("/token", data={"grant_type": "client_credentials", "client_id": "reporter",
                                        "client_secret": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert login(client, password="guess").json()["error_description"] == "wrong username or password"
    assert login(client, user="mallory", password="mallory").json()["error_description"].startswith("user risk")
    unmanaged = login(client, device="unmanaged")
    assert unmanaged.json()["expires_in"] == 1800 and unmanaged.json()["refresh_expires_in"] == 8 * 3600
    assert login(client, device="jailbroken").json()["error"] == "invalid_request"
    assert client.post("/token", data={"grant_type": "implicit", "client_id": "cli"}).json()["error"] \
        == "unsupported_grant_type"
    assert client.post("/token", json={"grant_type": "password"}).json()["error"] == "invalid_request"
    assert client.get("/.well-known/jwks.json").json()["keys"][0]["alg"] == "ES256"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_as_a_real_server(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "examples.issuer", "--port", str(port),
                                "--data-dir", str(tmp_path / "data")], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        token = httpx.post(base + "/token", data={"grant_type": "password", "username": "alice",
                                                  "password": "wonderland", "client_id": "cli"}).json()
        assert httpx.get(base + "/resource",
                         headers={"Authorization": "Bearer " + token["access_token"]}).json()["sub"] == "alice"
        assert (tmp_path / "data" / "issuer-key.pem").stat().st_mode & 0o077 == 0  # the key is private to its owner
        assert (tmp_path / "data").stat().st_mode & 0o077 == 0  # and so is its directory
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_the_default_data_directory_is_ignored_by_git() -> None:
    """The private key and the database must be one `git add .` away from nothing."""
    from examples.issuer.app import DATA_DIR

    for name in ("issuer.sqlite3", "issuer-key.pem"):
        path = (DATA_DIR / name).relative_to(REPO)
        result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
        assert result.returncode == 0, f"{path} is not ignored by git"


def test_a_rate_limited_refresh_is_429_with_retry_after(tmp_path: Path, clock: Clock) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for file in (REPO / "policies").glob("*.yaml"):
        (policies / file.name).write_text(file.read_text())
    with (policies / "workforce.yaml").open("a") as handle:
        handle.write("rate_limits:\n  - name: refresh-per-user\n    when: grant.type == \"refresh_token\"\n"
                     "    key: user.id\n    rate: 2 per 1h\n    on_exceed: {deny: too many refresh attempts}\n")
    app = create_app(db_path=tmp_path / "issuer.sqlite3", issuer="http://testserver", clock=clock,
                     policies_dir=policies, state_url=f"sqlite://{tmp_path}/state.db")
    client = TestClient(app, client=OFFICE)
    token = login(client).json()["refresh_token"]
    for _ in range(2):
        clock.advance(minutes=1)
        answer = refresh(client, token)
        assert answer.status_code == 200, answer.text
        token = answer.json()["refresh_token"]
    clock.advance(minutes=1)
    refused = refresh(client, token)
    assert refused.status_code == 429 and refused.headers["retry-after"] == str(3600 - 120)
    assert refused.json()["error"] == "invalid_request"
    clock.advance(seconds=3600 - 120)
    assert refresh(client, token).status_code == 200  # the same token: a refused refresh consumed nothing
