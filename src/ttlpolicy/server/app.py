"""The HTTP API: routes, the request path of a decision, and the app factory.

The decide path is kept lean on purpose (promise 6): ``POST /v1/decide`` is a bare ASGI
handler in front of Starlette; the body is read once with a streaming size limit, parsed and
serialized with orjson, checked by hand (no pydantic per request), decided on the event loop
(microseconds), counted in plain in-process metrics (one worker) and queued for the
decision-log writer as one serialized line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import ContextError, PolicyError, PolicySet, UnknownPolicyError
from ..errors import Problem
from ..tokens import TokenInvalid, VerifiedToken, VerifiedTokenCache, token_context
from .activity_api import ActivityAPI
from .auth import Authenticator, Caller
from .config import INTERNAL_ENV, MAX_SUBJECT_TOKEN, Settings
from .decisionlog import DecisionLog
from .gate import RequestGate
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .openapi import openapi_document
from .request_model import validate_decide_request
from .problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, Refusal, context_errors, problem, problem_body
from .reload import DirectorySource, Loaded, PolicyHolder, Source, install_sighup, verify_disk, watch
from .remote import BundleSource, poll
from .state_api import StateAPI
from .ui import Playground

log = logging.getLogger("ttlpolicy.server")
JSON = "application/json"
_JSON_BYTES = JSON.encode()
_PROBLEM_BYTES = PROBLEM_MEDIA_TYPE.encode()
DECIDE_SCOPES = ("decide",)
READ_SCOPES = ("decide", "admin")
ADMIN_SCOPES = ("admin",)
# The claims a decision sees under token.* come only from a subject_token the service verified,
# and activity.* only from the service's own state store.
_FORGED = {"token": Problem.field("token", "context-forbidden-attribute", "token.* comes only from a verified "
                                  "subject_token"),
           "activity": Problem.field("activity", "context-forbidden-attribute", "activity.* is computed by the "
                                     "service from its state store")}
_SUBJECT_FIELDS = ("iss", "sub", "jti")  # what the decision log keeps of a subject token
_UTC = timezone.utc


class _DecisionIds:
    """Decision ids: UUID-shaped strings (version 4, RFC 4122 variant), without a syscall per id.

    ``uuid.uuid4()`` reads 16 bytes from ``os.urandom`` per call (~3 µs; the syscall also lets
    another thread take the GIL). Here 74 random bits are drawn once per process and the last 48
    bits are a counter starting at a random value: ids stay unique across workers and restarts
    (two processes share a prefix with probability ~2^-74) and cost one string format.
    """

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)  # a forked worker must not repeat its parent's ids

    def _reseed(self) -> None:
        bits = int.from_bytes(os.urandom(16), "big")
        high, mid, low, tail = bits >> 96, (bits >> 80) & 0xFFFF, (bits >> 68) & 0xFFF, (bits >> 54) & 0x3FFF
        self._prefix = f"{high:08x}-{mid:04x}-4{low:03x}-{0x8000 | tail:04x}-"
        self._counter = itertools.count(bits & 0xFFFFFFFFFFFF)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


_next_decision_id = _DecisionIds().next


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


class Service:
    """Everything one app instance holds: settings, credentials, the policy holder, metrics, the log."""

    def __init__(self, settings: Settings, policies: PolicySet | None = None):
        self.settings = settings
        self.max_batch = settings.limits.max_batch
        self.auth = Authenticator(settings.auth)
        self.gate = RequestGate(self.auth, settings.limits)
        self.holder = PolicyHolder(policy_source(settings), policies, on_reload=self._reloaded)
        # Built (key files read) when the settings were validated; None: no issuer configured. A
        # token seen again is not verified again until it expires; revocation is asked per request.
        verifier = settings.subject_tokens.verifier
        self.subject_tokens = VerifiedTokenCache(verifier) if verifier is not None else None
        self.metrics = Metrics(lambda: self.holder.last_success)
        self.metrics.serving(self.holder.current.policies.digest, self.holder.current.revision)
        self.metrics.track_delivery(self.holder)
        self.decision_log = DecisionLog(settings.decision_log, self.metrics.log_dropped.inc)
        self._openapi = ("", b"")  # (digest of the set it describes, the document)
        # Routes added beside the core API (the playground) add their part of the document here.
        self.openapi_extensions: list[Callable[[dict[str, Any]], dict[str, Any]]] = []
        # Rate limits, revocations, emergencies: applied after the policy, never instead of it.
        self.state = StateAPI(self, settings)
        # Events, activity.*, detectors and their actions, security events, webhooks: on the same store.
        self.activity = ActivityAPI(self, settings, self.state.runtime)

    def _reloaded(self, result: str, loaded: Loaded) -> None:
        self.metrics.reloaded(result, loaded.policies.digest, self.holder.last_success, loaded.revision)

    # -- request plumbing -------------------------------------------------------------------

    def _caller(self, request: Request, scopes: tuple[str, ...] | None) -> Caller:
        headers = request.headers
        return self._authorize(headers.get("authorization"), headers.get("x-api-key"), scopes)

    def _authorize(self, authorization: str | None, api_key: str | None, scopes: tuple[str, ...] | None) -> Caller:
        caller = self.gate.caller(authorization, api_key, scopes)
        if scopes is DECIDE_SCOPES:
            too_many = self.state.caller_refusal(caller)
            if too_many is not None:
                raise Refusal(too_many)
        return caller

    def _check_audit_trail(self) -> None:
        """Refuse to decide while the decision log fails, where ``decision_log.on_failure: refuse``
        makes the audit trail mandatory: no decision is made that could not be logged."""
        if self.decision_log.refusing:
            raise Refusal(problem("decision-log-unavailable", "the decision log cannot be written "
                                  f"({self.decision_log.error}); decisions are refused until it can",
                                  headers={"Retry-After": "5"}))

    # -- deciding ---------------------------------------------------------------------------

    def _verify_subject(self, token: str) -> VerifiedToken | TokenInvalid:
        """Verify one subject token at the real time, never at the request's `now`: a back-dated
        `now` must not revive an expired token (`now` only moves the policy's clock). Pure and
        thread-safe, so a batch's tokens can be verified in a worker thread."""
        assert self.subject_tokens is not None
        try:
            return self.subject_tokens.verify(token, datetime.now(_UTC))
        except TokenInvalid as exc:
            return exc

    def _verify_subjects(self, tokens: Iterable[str]) -> dict[str, VerifiedToken | TokenInvalid]:
        return {token: self._verify_subject(token) for token in tokens}

    def _decide_one(self, loaded: Loaded, caller: Caller, item: Any, start: float,
                    verified_tokens: Mapping[str, VerifiedToken | TokenInvalid] | None = None
                    ) -> tuple[int, dict[str, Any]]:
        """``(status, decision or problem body)`` for one request item, decided by ``loaded`` alone.

        ``verified_tokens`` holds subject tokens already verified (off the event loop, for a batch).
        """
        request = validate_decide_request(item)
        policies = loaded.policies
        if isinstance(request, list):  # every problem of the request, none of its values
            name = item.get("policy") if isinstance(item, dict) else None
            self.metrics.error(name if isinstance(name, str) and name in policies else "unknown")
            return 400, problem_body("invalid-request", "; ".join(f"{e.path or 'body'}: {e.message}" for e in request),
                                     errors=request)
        context = request["context"]
        name = request.get("policy")
        explain = request.get("explain", False)
        subject_token = request.get("subject_token")
        now = request.get("now")
        try:
            compiled = policies.get(name)
        except UnknownPolicyError as exc:
            self.metrics.error("unknown")
            return 404, problem_body("unknown-policy", str(exc), policy=exc.name, known=exc.known)
        instant = now or datetime.now(_UTC)
        if "token" in context or "activity" in context:
            return self._forged_token(compiled, context, instant)
        subject: dict[str, str] | None = None
        if subject_token is not None:
            if self.subject_tokens is None:
                self.metrics.error(compiled.name)
                return 422, problem_body("subject-token-not-configured", "this service verifies no subject tokens "
                                         "(no subject_tokens.issuers configured); send the request without "
                                         "subject_token", policy=compiled.name)
            verified = verified_tokens.get(subject_token) if verified_tokens else None
            if verified is None:
                verified = self._verify_subject(subject_token)
            if isinstance(verified, TokenInvalid):
                # 422, not 401: the caller's own credential is fine; the token it relays is not.
                # The description never contains the token, a key or an attacker-chosen value.
                self.metrics.error(compiled.name)
                self.metrics.subject_token_failure(verified.reason)
                return 422, problem_body("invalid-subject-token", verified.description, reason=verified.reason,
                                         policy=compiled.name)
            revoked = self.state.subject_revoked(verified.claims)
            if revoked is not None:
                self.metrics.error(compiled.name)
                self.metrics.subject_token_failure("revoked")
                return 422, problem_body("invalid-subject-token", "token revoked", reason="revoked",
                                         policy=compiled.name)
            context = {**context, "token": token_context(verified.claims)}
            subject = {k: v for k in _SUBJECT_FIELDS if isinstance(v := verified.claims.get(k), str)}
        # A policy reading activity.* makes a store round trip before it decides; its rate-limit
        # hits go in the same one when they can (counted=limits then says so).
        limits = self.state.counting(compiled, context, instant, policies, caller)
        observation = self.activity.observe(context, compiled, limits)
        if observation is not None and observation.values:
            context = {**context, "activity": observation.values}
        try:
            decision = compiled.decide(context, instant, explain)
            decision = self.state.after_policy(decision, compiled, context, instant, policies, caller, limits)
        except ContextError as exc:
            self.metrics.error(compiled.name)
            return 422, problem_body("invalid-context", f"the context violates {len(exc.problems)} declared "
                                     f"attribute rule(s) of policy {compiled.name}",
                                     errors=context_errors(exc.problems), policy=compiled.name)
        self.activity.after_decision(decision, observation, compiled)
        out = decision.to_dict()
        decision_id = _next_decision_id()
        out["decision_id"] = decision_id
        out["policy_set"] = loaded.reference  # digest, and the bundle revision when there is one
        elapsed = time.perf_counter() - start
        self.metrics.decision(compiled.name, decision.allow, decision.step_up, decision.access_ttl,
                              decision.refresh_ttl, decision.matched, elapsed)
        if self.decision_log.enabled:
            self.decision_log.submit((decision_id, time.time(), caller.log_entry(), compiled.name,
                                      compiled.digest, context, out, elapsed, subject))
        return 200, out

    def _forged_token(self, compiled: Any, context: dict[str, Any], instant: datetime) -> tuple[int, dict[str, Any]]:
        """The 422 for a context that sends ``token`` or ``activity`` itself, listing every other offending field too."""
        errors = [problem for name, problem in _FORGED.items() if name in context]
        try:
            compiled.context.activation({k: v for k, v in context.items() if k not in ("token", "activity")},
                                        instant)
        except ContextError as exc:
            errors += context_errors(exc.problems)
        self.metrics.error(compiled.name)
        return 422, problem_body("invalid-context", f"the context violates {len(errors)} declared attribute "
                                 f"rule(s) of policy {compiled.name}: "
                                 + "; ".join(e.message for e in errors if e.path in _FORGED),
                                 errors=errors, policy=compiled.name)

    async def decide(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/decide, as a bare ASGI app: the fast path of :class:`_App` and the Starlette route alike.

        Starlette's middleware stack, router, Request and Response cost more per request than
        everything else the service adds to a decision, so :class:`_App` sends this one hot
        route here first; the route in the router (taken under a root path) is this same
        callable. Checks in order: credentials, the audit trail, media type, declared and
        streamed size, JSON, then the request model. An unexpected exception is answered with
        the 500 problem and re-raised for the server to log, as Starlette's
        ServerErrorMiddleware does.
        """
        start = time.perf_counter()
        try:
            authorization = api_key = content_type = content_length = None
            for name, value in scope["headers"]:  # names are lower-case (ASGI); the first of each counts
                if name == b"authorization":
                    if authorization is None:
                        authorization = value.decode("latin-1")
                elif name == b"content-type":
                    if content_type is None:
                        content_type = value.decode("latin-1")
                elif name == b"content-length":
                    if content_length is None:
                        content_length = value.decode("latin-1")
                elif name == b"x-api-key" and api_key is None:
                    api_key = value.decode("latin-1")
            try:
                caller = self._authorize(authorization, api_key, DECIDE_SCOPES)
                self._check_audit_trail()
                self.gate.check_body_headers(content_type, content_length)
                raw = await self.gate.receive_body(receive, scope)
                if raw is None:
                    return  # the client went away: nobody to answer
                body = self.gate.parse(raw)
            except Refusal as refusal:
                response: Response | None = refusal.response
            else:
                response = None
                status, out = self._decide_one(self.holder.current, caller, body, start)
                content = orjson.dumps(out)
        except Exception:
            # Nothing was sent yet: answer like Starlette's ServerErrorMiddleware, then let the server log it.
            await self._internal_error_response()(scope, receive, send)
            raise
        if response is not None:
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"%d" % len(content)),
                                (b"content-type", _JSON_BYTES if status == 200 else _PROBLEM_BYTES)]})
        await send({"type": "http.response.body", "body": content})

    async def decide_batch(self, request: Request) -> Response:
        """POST /v1/decide/batch"""
        try:
            caller = self._caller(request, DECIDE_SCOPES)
            self._check_audit_trail()
            body = await self.gate.json_body(request)
        except Refusal as refusal:
            return refusal.response
        requests = body.get("requests") if isinstance(body, dict) else None
        extra = [k for k in body if k != "requests"] if isinstance(body, dict) else []
        if not isinstance(requests, list) or extra:
            errors = [Problem.field(k, "unknown-field", "unknown field") for k in extra]
            if not isinstance(requests, list):
                errors.append(Problem.field("requests", "invalid-field", "expected a list of decide requests"))
            return problem("invalid-request", 'a batch is {"requests": [...]}', errors=errors)
        if len(requests) > self.max_batch:
            return problem("invalid-request", f"a batch holds at most {self.max_batch} requests, not {len(requests)}",
                           errors=[Problem.field("requests", "too-many-items", f"at most {self.max_batch} items")])
        verified: dict[str, VerifiedToken | TokenInvalid] | None = None
        tokens = {token for item in requests if isinstance(item, dict)
                  and isinstance(token := item.get("subject_token"), str) and 0 < len(token) <= MAX_SUBJECT_TOKEN}
        if tokens and self.subject_tokens is not None:
            # A signature check costs about half a millisecond: a batch of them on the event loop
            # would stall every probe and caller behind it for tens of milliseconds. Verify them
            # in a worker thread (each distinct token once); the decisions stay on the loop.
            verified = await asyncio.to_thread(self._verify_subjects, tokens)
        loaded = self.holder.current  # read once: the whole batch is decided by one set
        results = []
        for item in requests:
            status, out = self._decide_one(loaded, caller, item, time.perf_counter(), verified)
            results.append({"status": status, "decision": out} if status == 200 else {"status": status, "problem": out})
        return _json({"results": results})

    # -- policies, health, reload -----------------------------------------------------------

    def _policy_entry(self, loaded: Loaded, name: str) -> dict[str, Any]:
        compiled = loaded.policies.get(name)
        return {**compiled.summary(), "default": name == loaded.policies.default, "loaded_at": loaded.loaded_at}

    async def list_policies(self, request: Request) -> Response:
        """GET /v1/policies"""
        try:
            self._caller(request, READ_SCOPES)
        except Refusal as refusal:
            return refusal.response
        loaded = self.holder.current
        return _json({"default": loaded.policies.default, "digest": loaded.policies.digest,
                      "loaded_at": loaded.loaded_at,
                      "policies": [self._policy_entry(loaded, n) for n in loaded.policies.names]})

    async def get_policy(self, request: Request) -> Response:
        """GET /v1/policies/{name}"""
        try:
            self._caller(request, READ_SCOPES)
        except Refusal as refusal:
            return refusal.response
        loaded = self.holder.current
        name = request.path_params["name"]
        if name not in loaded.policies:
            exc = UnknownPolicyError(name, loaded.policies.names)
            return problem("unknown-policy", str(exc), policy=name, known=exc.known)
        return _json(self._policy_entry(loaded, name))

    def read_refusal(self, request: Request) -> Response | None:
        """The 401/403 problem for a caller without scope decide or admin, else ``None`` (the playground's check)."""
        try:
            self._caller(request, READ_SCOPES)
        except Refusal as refusal:
            return refusal.response
        return None

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: the process is alive."""
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """GET /readyz: 200 whenever a set is being served; ``degraded`` (with ``reasons``) after a
        failed reload, with an unhealthy watcher, or when the files on disk differ from the served set."""
        loaded, error = self.holder.current, self.holder.error
        reasons = self.holder.problems()
        body: dict[str, Any] = {"status": "degraded" if reasons else "ready", "digest": loaded.policies.digest,
                                "loaded_at": loaded.loaded_at, "error": None, "reasons": reasons,
                                **self.holder.delivery()}
        if error is not None:
            body["error"] = {"detail": "the last reload failed; serving the last good set", **error.to_dict()}
        body["state"] = self.state.readiness()
        if body["state"]["status"] != "ok":
            body["status"] = "degraded"
        body["decision_log"] = self.decision_log.health()
        if self.decision_log.refusing:  # decisions are refused: take this replica out of rotation
            body["status"] = "unavailable"
            return _json(body, 503)
        if body["decision_log"]["status"] == "failing":
            body["status"] = "degraded"
        return _json(body)

    async def reload(self, request: Request) -> Response:
        """POST /v1/reload (admin)"""
        try:
            self._caller(request, ADMIN_SCOPES)
        except Refusal as refusal:
            return refusal.response
        before = self.holder.current
        try:
            loaded = await self.holder.reload("POST /v1/reload")
        except PolicyError as exc:
            return problem("policy-load-failed", f"{len(exc.problems)} problem(s); still serving "
                           f"{self.holder.current.policies.digest}", digest=self.holder.current.policies.digest,
                           **exc.to_dict())
        unchanged = (loaded.policies.digest, loaded.revision) == (before.policies.digest, before.revision)
        return _json({"status": "unchanged" if unchanged else "reloaded", "digest": loaded.policies.digest,
                      "loaded_at": loaded.loaded_at})

    async def metrics_endpoint(self, request: Request) -> Response:
        """GET /metrics"""
        if self.settings.auth.metrics_require_auth:
            try:
                self._caller(request, None)
            except Refusal as refusal:
                return refusal.response
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def openapi_endpoint(self, request: Request) -> Response:
        """GET /openapi.json"""
        policies = self.holder.current.policies
        if self._openapi[0] != policies.digest:  # each policy's context schema is part of it
            document = openapi_document(self.settings, policies)
            for extend in self.openapi_extensions:
                document = extend(document)
            self._openapi = (policies.digest, orjson.dumps(document))
        return Response(self._openapi[1], media_type=JSON)

    # -- errors and lifespan ----------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return problem("not-found", f"no route for {request.url.path}")
        if exc.status_code == 405:
            return problem("method-not-allowed", f"{request.method} is not allowed here", headers=headers)
        body = {"type": PROBLEM_BASE + "http-error", "title": "HTTP error", "status": exc.status_code,
                "detail": str(exc.detail), "code": "http-error"}
        return Response(orjson.dumps(body), status_code=exc.status_code, headers=headers,
                        media_type=PROBLEM_MEDIA_TYPE)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        # No detail leaves the process; the server logs the traceback (Starlette re-raises to it).
        return self._internal_error_response()

    @staticmethod
    def _internal_error_response() -> Response:
        return problem("internal-error", "the server failed to answer; the error has been logged")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.decision_log.start()
        self.metrics.start()  # several workers: copies the counts into the shared files
        self.activity.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Per run of the lifespan (one event loop each), not per Service: tests may run an app twice.
        tasks: set[asyncio.Task[None]] = set()
        source = self.holder.source
        if isinstance(source, BundleSource):
            tasks.add(loop.create_task(poll(self.holder, source, stop)))
        elif self.settings.reload.watch:
            paths = list(self.settings.reload.watch_paths) or [self.settings.policies]
            tasks.add(loop.create_task(watch(self.holder, paths, self.settings.reload.debounce_ms, stop)))
        if isinstance(source, DirectorySource) and self.settings.reload.verify_interval_s > 0:
            tasks.add(loop.create_task(verify_disk(self.holder, self.settings.reload.verify_interval_s, stop)))
        undo_sighup = install_sighup(self.holder, tasks, also=self.decision_log.reopen)
        self.state.start()
        try:
            yield
        finally:
            self.activity.stop()  # first: it writes what waits (recordings, token expiries) to the store
            self.state.stop()  # closes the store
            undo_sighup()
            stop.set()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.decision_log.stop()
            self.metrics.close()


def policy_source(settings: Settings) -> Source:
    """Where the service takes its policy sets from: the bundle when one is configured, else the directory."""
    if settings.bundle.source is not None:
        return BundleSource(settings.bundle)
    reload = settings.reload
    return DirectorySource(settings.policies, settings.bundle.keys, reload.quiet_ms / 1000,
                           reload.settle_timeout_ms / 1000)


class _App(Starlette):
    """Starlette, except that ``POST /v1/decide`` goes straight to :meth:`Service.decide`.

    Every other request, and /v1/decide with another method (405) or under a root path, takes the
    normal Starlette route (whose endpoint is the same :meth:`Service.decide`).
    """

    decide: Callable[[Scope, Receive, Send], Awaitable[None]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == "/v1/decide" and scope["method"] == "POST"
                and not scope.get("root_path")):
            await self.decide(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class _AsgiEndpoint:
    """An ASGI callable as a route's endpoint (Starlette treats a bare function or method as a
    request-response handler; any other callable as an ASGI app)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, policies: PolicySet | None = None) -> Starlette:
    """The Starlette app serving ``settings.policies`` (or an already loaded ``policies``).

    Raises :class:`~ttlpolicy.PolicyError` when the set does not load.

    >>> app = create_app(Settings(policies="policies"))                 # doctest: +SKIP
    """
    service = Service(settings or Settings(), policies)
    routes = [
        Route("/v1/decide", _AsgiEndpoint(service.decide), methods=["POST"]),
        Route("/v1/decide/batch", service.decide_batch, methods=["POST"]),
        Route("/v1/policies", service.list_policies, methods=["GET"]),
        Route("/v1/policies/{name}", service.get_policy, methods=["GET"]),
        Route("/v1/reload", service.reload, methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", service.openapi_endpoint, methods=["GET"]),
        *service.state.routes(),
        *service.activity.routes(),
    ]
    if service.settings.ui.enabled:  # /ui/ and /v1/playground/*: see ui.py
        playground = Playground(service.settings, lambda: service.holder.current.policies, service.read_refusal)
        routes += playground.routes()
        service.openapi_extensions.append(playground.openapi)
    app = _App(routes=routes, lifespan=service.lifespan,
               exception_handlers={HTTPException: service.http_error, Exception: service.internal_error})
    app.decide = service.decide
    app.router.redirect_slashes = False  # "/v1/policies/" is a 404 problem, not an undocumented redirect
    app.state.service = service
    return app


def create_app_from_env() -> Starlette:
    """uvicorn factory for worker processes: settings resolved by ``ttlpolicy serve``."""
    app = create_app(Settings.model_validate_json(os.environ[INTERNAL_ENV]))
    freeze_heap()
    return app


def freeze_heap() -> None:
    """Take everything alive once a server process has built its service (the imports, the loaded
    policy set) out of the cyclic garbage collector's sight; ``ttlpolicy serve`` only.

    A full collection walks every tracked object: with the service's ~60,000 it paused the event
    loop for 30-90 ms every few tens of thousands of requests (in-process, 2 full collections in
    42,000 decisions took 151 ms, the longest 90 ms; frozen, 1 ms). Frozen (``gc.freeze``), it
    walks only what was allocated since. Garbage is collected first so that none is frozen; the
    frozen objects are still freed by reference counting (the first policy set when a reload
    replaces it), only never by the cyclic collector.
    """
    gc.collect()
    gc.freeze()
