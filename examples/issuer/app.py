"""A small OAuth-style token service whose token lifetimes come from ttlpolicy, in-process.

Endpoints:

* ``POST /token`` — ``grant_type=password`` (demo users; ``otp`` adds a second factor),
  ``client_credentials`` and ``refresh_token`` (rotation, reuse detection). A ``DPoP`` proof
  header binds the tokens to the client's key (RFC 9449), which the policy rewards.
* ``GET /resource`` — a protected demo API: 401 + ``WWW-Authenticate`` for a bad token.
* ``GET /.well-known/jwks.json`` — the public signing key.

Run from the repository root: ``python -m examples.issuer --port 9000`` (or
``python examples/issuer/app.py --port 9000``). State (families, refresh-token records, the
signing key) live in ``--data-dir`` (examples/issuer/data/, ignored by git), so a restart loses nothing. See README.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl

if __package__ in (None, ""):  # run as a script: make `examples.issuer` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.issuer import demo
from examples.issuer.store import SqliteStore
from ttlpolicy import ContextError, Decision, load_policies
from ttlpolicy.state import open_store
from ttlpolicy.state.runtime import StateRuntime
from ttlpolicy.tokens.events import EventReporter
from ttlpolicy.tokens import (
    ACCESS_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
    IssuanceDenied,
    Issued,
    IssuerConfig,
    RefreshChain,
    TokenInvalid,
    TokenVerifier,
    apply_decision,
    check_sender,
    cnf_claim,
    jwk_thumbprint,
    load_private_key,
    private_key_pem,
    public_jwk,
    sign,
    verify_dpop_proof,
    verify_key,
)

ACCESS_AUDIENCE = "demo-api"
ALGORITHM = "ES256"
REPO = Path(__file__).resolve().parents[2]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1
MAX_FORM_BYTES = 16_384
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, dict(headers or {})

    def response(self) -> Response:
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers={**NO_STORE, **self.headers})


def load_or_create_key(path: Path) -> Any:
    """The issuer's signing key, created (mode 0600) on first start so restarts keep verifying."""
    if path.exists():
        return load_private_key(path)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(key))
    return key


class Issuer:
    """The token service. All state is in the SQLite file and the key file; ``clock`` is injectable."""

    def __init__(self, *, db_path: str | Path, policies_dir: str | Path = REPO / "policies",
                 key_path: str | Path | None = None, issuer: str = "http://127.0.0.1:9000",
                 clock: Clock = _utc_now, trust_forwarded_for: bool = False, reuse_grace: int = 10,
                 state_url: str | None = None, events: EventReporter | None = None):
        db_path = Path(db_path)
        # Reports sign-ins, refreshes and their failures to the decision service (POST /v1/events),
        # so that policies can read activity.* and detectors can watch it; None: report nothing.
        self.events = events
        self.issuer = issuer.rstrip("/")
        self.clock = clock
        self.trust_forwarded_for = trust_forwarded_for
        self.policies = load_policies(policies_dir)
        self.store = SqliteStore(db_path)
        self.key = load_or_create_key(Path(key_path) if key_path else db_path.with_name(db_path.stem + "-key.pem"))
        self.jwk = public_jwk(self.key, alg=ALGORITHM)
        self.kid = jwk_thumbprint(self.jwk)
        self.jwk["kid"] = self.kid
        keys = (verify_key(self.key, self.kid, (ALGORITHM,)),)
        # Two verifiers: an access token is never accepted as a refresh token and vice versa.
        self.access_verifier = TokenVerifier([IssuerConfig(
            self.issuer, ACCESS_AUDIENCE, keys, (ALGORITHM,), token_types=(ACCESS_TOKEN_TYPE,))], revocations=self.store)
        self.refresh_verifier = TokenVerifier([IssuerConfig(
            self.issuer, self.issuer, keys, (ALGORITHM,), token_types=(REFRESH_TOKEN_TYPE,))], revocations=self.store)
        self.chain = RefreshChain(self.store, reuse_grace=reuse_grace)
        # With a state store, decisions also count the policies' rate limits and apply emergency
        # ceilings (ttlpolicy.state); without one they are the pure library decision.
        self.state = StateRuntime(open_store(state_url), clock=lambda: self.clock().timestamp()) if state_url else None

    # ------------------------------------------------------------------ endpoints

    async def token(self, request: Request) -> Response:
        try:
            fields = await _read_form(request)
            body = await run_in_threadpool(self._token, request, fields)
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(body, headers=NO_STORE)

    async def resource(self, request: Request) -> Response:
        try:
            verified = await run_in_threadpool(self._protect, request)
        except TokenInvalid as exc:
            scheme = "DPoP" if exc.error == "invalid_dpop_proof" or exc.reason == "sender" else "Bearer"
            return JSONResponse(exc.to_dict(), status_code=401,
                                headers={"WWW-Authenticate": exc.www_authenticate(scheme, realm=ACCESS_AUDIENCE)})
        if verified is None:  # RFC 6750 §3.1: no credentials, no error code
            return JSONResponse({"error": "missing credentials"}, status_code=401,
                                headers={"WWW-Authenticate": f'Bearer realm="{ACCESS_AUDIENCE}"'})
        claims = verified.claims
        return JSONResponse({"message": f"hello, {claims['sub']}", "sub": claims["sub"],
                             "client_id": claims.get("client_id"), "scope": claims.get("scope"),
                             "binding": verified.binding, "expires_at": _iso(claims["exp"]),
                             "session_expires_at": _iso(claims.get("session_exp"))})

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.jwk]})

    async def index(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "token_endpoint": self.issuer + "/token",
                             "jwks_uri": self.issuer + "/.well-known/jwks.json",
                             "grant_types_supported": ["password", "client_credentials", "refresh_token"],
                             "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
                             "policies": self.policies.names})

    # ------------------------------------------------------------------ token endpoint

    def _token(self, request: Request, form: dict[str, str]) -> dict[str, Any]:
        grant = form.get("grant_type")
        client = self._client(request, form)
        if grant not in ("password", "client_credentials", "refresh_token"):
            raise OAuthError("unsupported_grant_type", "grant_type must be password, client_credentials or "
                                                       "refresh_token")
        if grant not in client.grants:
            raise OAuthError("unauthorized_client", f"client may not use the {grant} grant")
        now = self.clock()
        jkt = self._dpop(request, "POST", now)
        if grant == "password":
            return self._password(request, form, client, jkt, now)
        if grant == "client_credentials":
            return self._client_credentials(request, form, client, jkt, now)
        return self._refresh(request, form, client, jkt, now)

    def _password(self, request: Request, form: dict[str, str], client: demo.Client, jkt: str | None,
                  now: datetime) -> dict[str, Any]:
        user = demo.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            self._report("auth.failed", request, subject=form.get("username") or None, client=client.id,
                         reason="bad_password")
            raise OAuthError("invalid_grant", "wrong username or password")
        mfa = demo.check_otp(user, form.get("otp"))
        context = self._context(request, user, client, jkt, "password", mfa)
        context["user"]["auth_time"] = int(now.timestamp())
        decision = self._decide(context, now)
        scope = form.get("scope", "read")
        base = {"iss": self.issuer, "sub": user.id, "client_id": client.id, "scope": scope,
                "amr": ["pwd", "otp", "mfa"] if mfa else ["pwd"], "auth_time": int(now.timestamp())}
        try:
            # A second factor given with the password is the step-up the policy may ask for.
            issued = self.chain.start({**base, "aud": self.issuer}, decision, now, client_id=client.id,
                                      auth_time=now, public_client=client.type == "public",
                                      cnf=cnf_claim(dpop_jkt=jkt), step_up_satisfied=mfa)
        except IssuanceDenied as exc:
            raise _denied(exc) from None
        self._report("token.issued", request, subject=user.id, client=client.id, session=issued.family)
        return self._response(issued, {**base, "aud": ACCESS_AUDIENCE}, decision, scope)

    def _client_credentials(self, request: Request, form: dict[str, str], client: demo.Client, jkt: str | None,
                            now: datetime) -> dict[str, Any]:
        context = {"client": {"id": client.id, "type": client.type, "binding": "dpop" if jkt else "none",
                              "workload": client.workload or "vm"},
                   "location": self._location(request), "grant": {"type": "client_credentials"}}
        decision = self._decide(context, now, policy="machine")
        scope = form.get("scope", "read")
        base = {"iss": self.issuer, "sub": client.id, "aud": ACCESS_AUDIENCE, "client_id": client.id, "scope": scope}
        cnf = cnf_claim(dpop_jkt=jkt)
        if cnf:
            base["cnf"] = cnf
        try:
            claims = apply_decision(base, decision, now, "access")
        except IssuanceDenied as exc:
            raise _denied(exc) from None
        token = sign(claims, self.key, ALGORITHM, self.kid, typ=ACCESS_TOKEN_TYPE)
        return {"access_token": token, "token_type": "DPoP" if jkt else "Bearer",
                "expires_in": claims["exp"] - claims["iat"], "scope": scope, "decision": _summary(decision)}

    def _refresh(self, request: Request, form: dict[str, str], client: demo.Client, jkt: str | None,
                 now: datetime) -> dict[str, Any]:
        try:
            verified = self.refresh_verifier.verify(form.get("refresh_token", ""), now)
            redemption = self.chain.redeem(verified, now, client_id=client.id, dpop_jkt=jkt)
        except TokenInvalid as exc:
            kind = "token.bad_signature" if exc.reason == "signature" else "refresh.failed"
            self._report(kind, request, client=client.id, reason=exc.reason)
            raise OAuthError("invalid_grant", exc.description) from None
        user = demo.USERS.get(redemption.family.subject)
        if user is None:
            raise OAuthError("invalid_grant", "the account no longer exists")
        amr = list(verified.claims.get("amr", []))
        context = self._context(request, user, client, jkt, "refresh_token", "mfa" in amr)
        known = redemption.context()  # session auth_time, verified token claims, grant type
        context["user"].update(known["user"])
        context["token"] = known["token"]
        context["grant"] = known["grant"]
        decision = self._decide(context, now)
        scope = str(verified.claims.get("scope", "read"))
        base = {"iss": self.issuer, "sub": user.id, "client_id": client.id, "scope": scope, "amr": amr}
        try:
            issued = self.chain.rotate(redemption, {**base, "aud": self.issuer}, decision, now)
        except IssuanceDenied as exc:
            raise _denied(exc) from None
        except TokenInvalid as exc:  # lost a race against a reuse: the family is revoked
            self._report("refresh.failed", request, subject=user.id, client=client.id, reason=exc.reason)
            raise OAuthError("invalid_grant", exc.description) from None
        self._report("token.refreshed", request, subject=user.id, client=client.id,
                     session=redemption.family.id)
        return self._response(issued, {**base, "aud": ACCESS_AUDIENCE}, decision, scope)

    def _response(self, issued: Issued, access_base: dict[str, Any], decision: Decision, scope: str
                  ) -> dict[str, Any]:
        try:
            access = issued.access_claims(access_base)
        except IssuanceDenied as exc:
            raise _denied(exc) from None
        body: dict[str, Any] = {
            "access_token": sign(access, self.key, ALGORITHM, self.kid, typ=ACCESS_TOKEN_TYPE),
            "token_type": "DPoP" if issued.cnf else "Bearer",
            "expires_in": access["exp"] - access["iat"], "scope": scope,
        }
        if issued.refresh_claims is not None:
            refresh = issued.refresh_claims
            body["refresh_token"] = sign(refresh, self.key, ALGORITHM, self.kid, typ=REFRESH_TOKEN_TYPE)
            body["refresh_expires_in"] = refresh["exp"] - refresh["iat"]
        if issued.session_exp is not None:
            body["session_expires_at"] = _iso(issued.session_exp)
        body["decision"] = _summary(decision)
        return body

    # ------------------------------------------------------------------ helpers

    def _client(self, request: Request, form: dict[str, str]) -> demo.Client:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":  # RFC 6749 §2.3.1 client_secret_basic
            try:
                client_id, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = None
        client = demo.authenticate_client(client_id, secret)
        if client is None:
            raise OAuthError("invalid_client", "client authentication failed", 401,
                             {"WWW-Authenticate": 'Basic realm="token"'})
        return client

    def _dpop(self, request: Request, method: str, now: datetime, access_token: str | None = None) -> str | None:
        proof = request.headers.get("dpop")
        if proof is None:
            return None
        at = int(now.timestamp())
        try:
            return verify_dpop_proof(proof, method=method, url=self.issuer + request.url.path, now=now,
                                     access_token=access_token,
                                     seen=lambda proof_id, expires: self.store.dpop_seen(proof_id, expires, at))
        except TokenInvalid as exc:
            if access_token is not None:
                raise
            raise OAuthError("invalid_dpop_proof", exc.description) from None

    def _protect(self, request: Request) -> Any:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not token.strip():
            raise TokenInvalid("malformed", "expected a Bearer or DPoP access token")
        token = token.strip()
        now = self.clock()
        verified = self.access_verifier.verify(token, now)
        jkt = None
        if verified.binding == "dpop":
            if scheme.lower() != "dpop":
                raise TokenInvalid("sender", "DPoP-bound token must be sent with the DPoP scheme and a proof")
            jkt = self._dpop(request, "GET", now, access_token=token)
        check_sender(verified, dpop_jkt=jkt)
        return verified

    def _report(self, kind: str, request: Request, **fields: Any) -> None:
        if self.events is not None:
            self.events.report(kind, ip=self._client_ip(request), **fields)

    def _client_ip(self, request: Request) -> str | None:
        host = request.client.host if request.client else None
        if self.trust_forwarded_for:  # only behind a proxy you run: clients can forge this header
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded:
                host = forwarded.split(",")[0].strip()
        try:
            return str(ipaddress.ip_address(host)) if host else None
        except ValueError:
            return None

    def _location(self, request: Request) -> dict[str, Any]:
        ip = self._client_ip(request)
        return {"ip": ip} if ip else {}

    def _context(self, request: Request, user: demo.User, client: demo.Client, jkt: str | None, grant: str,
                 mfa: bool) -> dict[str, Any]:
        ip = self._client_ip(request)
        # The device trust would come from an MDM attestation; the demo takes a header.
        device = request.headers.get("x-device-trust")
        return {
            "tier": user.tier,
            "device": {"trust": device} if device else {},
            "location": {"ip": ip} if ip else {},
            "user": {"id": user.id, "groups": list(user.groups), "mfa": mfa, "department": user.department,
                     "risk": demo.risk_of(user, ip)},
            "client": {"id": client.id, "type": client.type, "binding": "dpop" if jkt else "none"},
            "grant": {"type": grant},
        }

    def _decide(self, context: dict[str, Any], now: datetime, policy: str | None = None) -> Decision:
        try:
            if self.state is None:
                return self.policies.decide(context, policy=policy, now=now)
            decision = self.state.decide(self.policies, context, policy=policy, now=now, caller=self.issuer)
        except ContextError as exc:
            raise OAuthError("invalid_request", "; ".join(f"{p.path}: {p.message}" for p in exc.problems)) from None
        if not decision.allow and any(limit["exceeded"] for limit in decision.extra.get("rate_limits", ())):
            # A rate limit the policy sets: 429 with Retry-After, not a generic denial.
            retry = decision.extra.get("retry_after") or 3600
            raise OAuthError("invalid_request", f"too many requests; retry in {retry}s", 429,
                             {"Retry-After": str(retry)})
        return decision


async def _read_form(request: Request) -> dict[str, str]:
    """The URL-encoded body RFC 6749 prescribes, bounded; parsed here rather than with a
    multipart library because the token endpoint accepts nothing else. Repeated parameters
    are refused (RFC 6749 §3.2)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "request too large", 413)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "body is not UTF-8") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        fields[name] = value
    return fields


def _denied(exc: IssuanceDenied) -> OAuthError:
    if exc.step_up:
        return OAuthError("invalid_grant", f"{exc.description} (sign in again with a second factor)")
    return OAuthError("invalid_grant", exc.description)


def _summary(decision: Decision) -> dict[str, Any]:
    return {"policy": decision.policy_name, "matched": decision.matched, "access_ttl": decision.access_ttl,
            "refresh_ttl": decision.refresh_ttl, "rotation": decision.rotation}


def _iso(epoch: Any) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), timezone.utc).isoformat().replace("+00:00", "Z")


def create_app(**options: Any) -> Starlette:
    """The Starlette app; ``options`` are :class:`Issuer`'s (``db_path``, ``clock``, ...)."""
    issuer = Issuer(**options)
    app = Starlette(routes=[
        Route("/", issuer.index, methods=["GET"]),
        Route("/token", issuer.token, methods=["POST"]),
        Route("/resource", issuer.resource, methods=["GET"]),
        Route("/.well-known/jwks.json", issuer.jwks, methods=["GET"]),
    ])
    app.state.issuer = issuer
    return app


DATA_DIR = Path(__file__).resolve().parent / "data"  # ignored by git: the private key must never be committed


def app_from_args(argv: list[str] | None = None, data_dir: Path | None = None) -> tuple[Starlette, int]:
    """The app ``python -m examples.issuer ARGV`` serves, and its port (``data_dir`` overrides the default)."""
    parser = argparse.ArgumentParser(prog="python -m examples.issuer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data-dir", type=Path, default=data_dir or DATA_DIR,
                        help="directory for the SQLite database and the signing key (default: examples/issuer/data/,"
                             " ignored by git)")
    parser.add_argument("--policies", default=str(REPO / "policies"))
    parser.add_argument("--issuer", help="public base URL (default http://HOST:PORT)")
    parser.add_argument("--reuse-grace", type=int, default=10, help="seconds a rotated refresh token may be retried")
    parser.add_argument("--state", metavar="URL", help="state store for rate limits and emergencies "
                        "(default: sqlite in --data-dir; see docs/state.md)")
    parser.add_argument("--trust-forwarded-for", action="store_true",
                        help="take the client IP from X-Forwarded-For (only behind your own proxy)")
    parser.add_argument("--events-url", help="send sign-in and refresh events to this ttlpolicy service "
                                             "(e.g. http://127.0.0.1:8080/v1/events); the API key, if any, is "
                                             "read from TTLPOLICY_EVENTS_API_KEY")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    app = create_app(db_path=args.data_dir / "issuer.sqlite3", policies_dir=args.policies,
                     issuer=args.issuer or f"http://{args.host}:{args.port}",
                     trust_forwarded_for=args.trust_forwarded_for, reuse_grace=args.reuse_grace,
                     state_url=args.state or f"sqlite://{args.data_dir.absolute() / 'state.db'}",
                     events=EventReporter(args.events_url, api_key=os.environ.get("TTLPOLICY_EVENTS_API_KEY")).start()
                     if args.events_url else None)
    app.state.host = args.host
    return app, args.port


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    app, port = app_from_args(argv)
    uvicorn.run(app, host=app.state.host, port=port, log_level="info")
