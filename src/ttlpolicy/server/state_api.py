"""The state endpoints of the service: revocations, the token check, emergencies; and the hooks
the decide path calls (rate limits and emergencies after the policy, API-caller limits).

=============================  =================  =============================================
``POST /v1/revocations``       revoke, admin      revoke one or many (``{"revocations": [...]}``)
``GET /v1/revocations``        revoke, admin      list: ``kind``, ``value``, ``status``, ``limit``, ``cursor``
``GET /v1/revocations/{id}``   revoke, admin      one revocation
``DELETE /v1/revocations/{id}``revoke, admin      lift it (``?reason=``), audited
``POST /v1/tokens/check``      decide, revoke,    "is this token still good?" (RFC 7662 shape)
                               admin
``POST /v1/emergencies``       admin              start an emergency ceiling
``GET /v1/emergencies``        revoke, admin      list (``status=active|ended|all``)
``GET /v1/emergencies/{id}``   revoke, admin      one emergency
``DELETE /v1/emergencies/{id}``admin              end it early
=============================  =================  =============================================
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl

import orjson
from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..decision import Decision
from ..errors import Problem
from ..state.emergency import EmergencyInputError
from ..state.ratelimit import retry_after_seconds
from ..state.revocation import KINDS, RevocationInputError, TokenFacts
from ..state.runtime import LimitCount, StateRuntime
from ..state.store import StoreUnavailable, StoreURLError
from .auth import Caller
from .config import ConfigError, Settings
from .problems import Refusal, problem

if TYPE_CHECKING:
    from ..program import CompiledPolicy
    from ..policyset import PolicySet
    from .parts import ServiceParts

log = logging.getLogger("ttlpolicy.server")
REVOKE_SCOPES = ("revoke", "admin")
ADMIN_SCOPES = ("admin",)
CHECK_SCOPES = ("decide", "revoke", "admin")
MAX_REVOCATIONS_PER_REQUEST = 1000
MAX_PAGE = 1000
_CHECK_FIELDS = {"token", "token_type_hint", "jti", "sid", "sub", "client_id", "tenant", "iat"}


class StateMetrics:
    """The state layer's Prometheus metrics (multiprocess-safe like the rest)."""

    def __init__(self, registry: Any):
        self.store_up = Gauge("ttlpolicy_state_store_up", "1 when the state store answers, 0 while degraded.",
                              registry=registry, multiprocess_mode="livemin")
        self.store_failures = Counter("ttlpolicy_state_store_failures_total",
                                      "State store operations that failed (unreachable, timed out, locked).",
                                      registry=registry)
        self.degraded = Counter("ttlpolicy_state_degraded_decisions_total",
                                "Decisions held under the degraded ceiling because the store could not answer.",
                                registry=registry)
        self.rate_limited = Counter("ttlpolicy_rate_limited_decisions_total",
                                    "Decisions that exceeded a policy rate limit.", ["policy", "limit"],
                                    registry=registry)
        self.callers_limited = Counter("ttlpolicy_api_caller_rate_limited_total",
                                       "Decide requests refused with 429 because the API caller exceeded its rate.",
                                       ["caller"], registry=registry)
        self.emergency_decisions = Counter("ttlpolicy_emergency_decisions_total",
                                           "Decisions an emergency ceiling applied to.", ["reason"], registry=registry)
        self.emergencies_active = Gauge("ttlpolicy_emergencies_active", "Emergencies in force.", registry=registry,
                                        multiprocess_mode="livemax")
        self.revocations_active = Gauge("ttlpolicy_revocations_active", "Revocations in force.", registry=registry,
                                        multiprocess_mode="livemax")
        self.checks = Counter("ttlpolicy_token_checks_total", "Token checks by result.", ["result"],
                              registry=registry)
        # Bound once: the check endpoint answers thousands of times a second, labels() is a lookup each.
        self.checks_active, self.checks_revoked = self.checks.labels("active"), self.checks.labels("revoked")
        self.store_up.set(1)


class StateAPI:
    """Holds the :class:`StateRuntime` of one service process and answers the state endpoints."""

    def __init__(self, service: ServiceParts, settings: Settings):
        self.service = service
        config = settings.state
        try:
            store = config.open()
        except (StoreURLError, StoreUnavailable) as exc:
            raise ConfigError(f"state: {exc}") from None
        self.runtime = StateRuntime(store, poll_interval=config.poll_interval,
                                    degraded_access=config.degraded.access_ttl,
                                    degraded_refresh=config.degraded.refresh_ttl, retention=config.retention,
                                    emergency_max_duration=config.emergency_max_duration)
        self.callers = config.callers
        self.metrics = StateMetrics(service.metrics.registry)
        self.runtime.health.on_change = self._health_changed
        self._failures_seen = 0
        self.runtime.poll()
        self._observe()

    def _health_changed(self, ok: bool) -> None:
        self.metrics.store_up.set(1 if ok else 0)

    def _observe(self) -> None:
        health = self.runtime.health
        if health.failures != self._failures_seen:
            self.metrics.store_failures.inc(health.failures - self._failures_seen)
            self._failures_seen = health.failures
        now = self.runtime.clock()
        self.metrics.emergencies_active.set(len(self.runtime.emergencies.live(now)))
        self.metrics.revocations_active.set(len(self.runtime.revocations.index.tokens)
                                            + len(self.runtime.revocations.index.selectors))

    def start(self) -> None:
        self.runtime.start()

    def stop(self) -> None:
        self.runtime.close()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/revocations", self.create_revocations, methods=["POST"]),
            Route("/v1/revocations", self.list_revocations, methods=["GET"]),
            Route("/v1/revocations/{id}", self.get_revocation, methods=["GET"]),
            Route("/v1/revocations/{id}", self.lift_revocation, methods=["DELETE"]),
            Route("/v1/tokens/check", self.check_token, methods=["POST"]),
            Route("/v1/emergencies", self.start_emergency, methods=["POST"]),
            Route("/v1/emergencies", self.list_emergencies, methods=["GET"]),
            Route("/v1/emergencies/{id}", self.get_emergency, methods=["GET"]),
            Route("/v1/emergencies/{id}", self.end_emergency, methods=["DELETE"]),
        ]

    # -- hooks for the decide path ---------------------------------------------------------------

    def caller_refusal(self, caller: Caller) -> Response | None:
        """The 429 for a caller over its rate (``state.callers``), else None."""
        windows = self.callers.windows_for(caller.id)
        if not windows:
            return None
        retry = self.runtime.limit_caller(f"{caller.kind}:{caller.id}", windows)
        if retry is None:
            return None
        self.metrics.callers_limited.labels(caller.id).inc()
        seconds = retry_after_seconds(retry) or 3600
        return problem("rate-limited", f"caller {caller.id} exceeded its rate "
                       f"({', '.join(self.callers.keys.get(caller.id, self.callers.rate))}); retry after {seconds}s",
                       headers={"Retry-After": str(seconds)}, retry_after=seconds)

    def counting(self, compiled: CompiledPolicy, context: Mapping[str, Any], instant: datetime,
                 policies: PolicySet, caller: Caller) -> LimitCount | None:
        """The decision's rate-limit hits, for a round trip made before the policy (``None``: no limits)."""
        limits = policies.rate_limits.get(compiled.name, ())
        if not limits:
            return None
        return self.runtime.counting(compiled, context, instant, limits, caller=f"{caller.kind}:{caller.id}")

    def after_policy(self, decision: Decision, compiled: CompiledPolicy, context: Mapping[str, Any],
                     instant: datetime, policies: PolicySet, caller: Caller,
                     counted: LimitCount | None = None) -> Decision:
        limits = policies.rate_limits.get(compiled.name, ())
        out = self.runtime.after_policy(decision, compiled, context, instant, limits,
                                        caller=f"{caller.kind}:{caller.id}", counted=counted)
        if out is not decision:
            extra = out.extra
            for entry in extra.get("rate_limits", ()):
                if entry["exceeded"]:
                    self.metrics.rate_limited.labels(compiled.name, entry["name"]).inc()
            for entry in extra.get("emergencies", ()):
                self.metrics.emergency_decisions.labels(entry["reason"]).inc()
            if extra.get("state") == "degraded":
                self.metrics.degraded.inc()
            self._observe()
        return out

    def subject_revoked(self, claims: Mapping[str, Any]) -> str | None:
        """Why a verified subject token is revoked, or None."""
        revocation = self.runtime.revoked(TokenFacts.from_claims(claims))
        return None if revocation is None else revocation.describe()

    def readiness(self) -> dict[str, Any]:
        self._observe()
        health = self.runtime.health.to_dict()
        health["store"] = self.runtime.store.display_url
        health["backend"] = self.runtime.store.backend
        return health

    # -- plumbing --------------------------------------------------------------------------------

    def _caller(self, request: Request, scopes: tuple[str, ...]) -> Caller | Response:
        try:
            return self.service.gate.request_caller(request, scopes)
        except Refusal as refusal:
            return refusal.response

    async def _body(self, request: Request) -> Any:
        try:
            return await self.service.gate.json_body(request)
        except Refusal as refusal:
            return refusal

    def _unavailable(self, exc: StoreUnavailable) -> Response:
        self._observe()
        return problem("state-unavailable", "the state store cannot answer; nothing was changed. "
                       "Existing revocations and emergencies keep applying. Retry shortly.",
                       headers={"Retry-After": "1"})

    @staticmethod
    def _who(caller: Caller) -> str:
        return f"{caller.kind}:{caller.id}"

    # -- revocations -----------------------------------------------------------------------------

    async def create_revocations(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        body = await self._body(request)
        if isinstance(body, Refusal):
            return body.response
        if isinstance(body, dict) and "revocations" in body:
            extra = sorted(set(body) - {"revocations"})
            items = body["revocations"]
            if extra or not isinstance(items, list) or not items:
                return problem("invalid-request", 'a bulk revocation is {"revocations": [{...}, ...]}',
                               errors=[Problem.field(k, "unknown-field", "unknown field") for k in extra]
                               or [Problem.field("revocations", "invalid-field", "expected a non-empty list")])
            if len(items) > MAX_REVOCATIONS_PER_REQUEST:
                return problem("invalid-request", f"at most {MAX_REVOCATIONS_PER_REQUEST} revocations per request, "
                               f"not {len(items)}; revoke a client, tenant or everything issued before a moment "
                               "instead of listing tokens", errors=[Problem.field("revocations", "too-many-items", f"at most {MAX_REVOCATIONS_PER_REQUEST}")])
            paths = [f"revocations[{i}]" for i in range(len(items))]
        elif isinstance(body, dict):
            items, paths = [body], [""]
        else:
            return problem("invalid-request", "a revocation is a JSON object")
        now = self.runtime.clock()
        registry = self.runtime.revocations
        prepared: list[Any] = []
        errors: list[Problem] = []
        for item, path in zip(items, paths):
            if not isinstance(item, dict):
                errors.append(Problem.field(path, "invalid-type", "expected an object"))
                continue
            try:
                prepared.append(registry.prepare(item, self._who(caller), now, path))
            except RevocationInputError as exc:
                errors.append(exc.problem())
        if errors:  # all or nothing: one bad item stores none of them
            return problem("invalid-revocation", f"{len(errors)} problem(s); nothing was revoked", errors=errors)
        try:
            results = self.runtime.guarded(lambda: registry.revoke_all(prepared, now))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        self._observe()
        for revocation, created in results:
            if created:
                self.service.activity.alert("revocation.created", revocation.to_dict())
        entries = [{**revocation.to_dict(), "created": created} for revocation, created in results]
        status = 201 if any(created for _, created in results) else 200
        if isinstance(body, dict) and "revocations" not in body:
            return _json(entries[0], status)
        return _json({"revocations": entries}, status)

    async def list_revocations(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        query = request.query_params
        errors = [Problem.field(k, "unknown-field", "unknown query parameter")
                  for k in query if k not in ("kind", "value", "status", "limit", "cursor")]
        kind = query.get("kind")
        if kind is not None and kind not in KINDS:
            errors.append(Problem.field("kind", "invalid-field", f"one of {', '.join(KINDS)}"))
        status = query.get("status", "active")
        if status not in ("active", "lifted", "all"):
            errors.append(Problem.field("status", "invalid-field", "one of active, lifted, all"))
        limit = _page_size(query.get("limit"), errors)
        if errors:
            return problem("invalid-request", "; ".join(f"{e.path}: {e.message}" for e in errors), errors=errors)
        try:
            page, cursor = self.runtime.guarded(lambda: self.runtime.revocations.listing(
                self.runtime.clock(), kind=kind, value=query.get("value"), status=status,
                cursor=query.get("cursor"), limit=limit))
        except RevocationInputError as exc:
            return problem("invalid-request", str(exc), errors=[exc.problem()])
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        return _json({"revocations": [r.to_dict() for r in page], "next_cursor": cursor})

    async def get_revocation(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        revocation_id = request.path_params["id"]
        try:
            held = self.runtime.guarded(lambda: self.runtime.revocations.get(revocation_id))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        if held is None:
            return problem("not-found", f"no revocation {revocation_id!r}")
        return _json(held.to_dict())

    async def lift_revocation(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        revocation_id = request.path_params["id"]
        reason = request.query_params.get("reason")
        if reason is not None and len(reason) > 500:
            return problem("invalid-request", "reason: longer than 500 characters",
                           errors=[Problem.field("reason", "too-long", "longer than 500 characters")])
        try:
            lifted = self.runtime.guarded(lambda: self.runtime.revocations.lift(
                revocation_id, by=self._who(caller), reason=reason, now=self.runtime.clock()))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        if lifted is None:
            return problem("not-found", f"no revocation {revocation_id!r}")
        self._observe()
        return _json(lifted.to_dict())

    # -- the token check -------------------------------------------------------------------------

    async def check_token(self, request: Request) -> Response:
        """RFC 7662-shaped: form (``token=…``) or JSON (``token`` or the token's claims)."""
        caller = self._caller(request, CHECK_SCOPES)
        if isinstance(caller, Response):
            return caller
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        raw = await request.body()
        if len(raw) > self.service.gate.max_body:
            return self.service.gate.too_large()
        if media == "application/x-www-form-urlencoded":
            try:
                body: Any = dict(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw)))
            except (UnicodeDecodeError, ValueError):
                return problem("invalid-request", "the form body cannot be parsed")
        elif media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return problem("invalid-json", f"body is not valid JSON: {exc}")
        else:
            return problem("unsupported-media-type", "send application/x-www-form-urlencoded (RFC 7662) or JSON")
        if not isinstance(body, dict):
            return problem("invalid-request", "a check is an object with token, or jti/sid/sub/client_id/tenant/iat")
        unknown = sorted(set(body) - _CHECK_FIELDS)
        if unknown:
            return problem("invalid-request", f"unknown field {unknown[0]!r}",
                           errors=[Problem.field(k, "unknown-field", "unknown field") for k in unknown])
        claims: dict[str, Any]
        if "token" in body:
            verifier = self.service.subject_tokens
            token = body["token"]
            if verifier is None:
                return problem("subject-token-not-configured", "this service verifies no tokens (no "
                               "subject_tokens.issuers configured); send the token's jti, sid, sub, client_id, "
                               "tenant and iat instead")
            if not isinstance(token, str) or not token:
                return problem("invalid-request", "token: expected a JWT",
                               errors=[Problem.field("token", "invalid-field", "expected a JWT")])
            from ..tokens import TokenInvalid

            try:
                verified = verifier.verify(token, self.runtime.clock())
            except TokenInvalid as exc:
                self.metrics.checks.labels("invalid").inc()
                return _json({"active": False, "reason": exc.reason})
            claims = dict(verified.claims)
        else:
            errors = []
            for name in ("jti", "sid", "sub", "client_id", "tenant"):
                if name in body and (not isinstance(body[name], str) or not body[name] or len(body[name]) > 512):
                    errors.append(Problem.field(name, "invalid-field", "expected a non-empty string"))
            iat = body.get("iat")
            if iat is not None:
                try:
                    from ..state.timefmt import to_epoch

                    body["iat"] = to_epoch(iat)
                except ValueError as exc:
                    errors.append(Problem.field("iat", "invalid-field", str(exc)))
            if not any(body.get(n) for n in ("jti", "sid", "sub", "client_id", "tenant")) and not errors:
                errors.append(Problem.field("", "missing-field", "give token, or at least one of jti, sid, sub, client_id, tenant"))
            if errors:
                return problem("invalid-request", "; ".join(f"{e.path or 'body'}: {e.message}" for e in errors),
                               errors=errors)
            claims = body
        facts = TokenFacts.from_claims(claims)
        revocation = self.runtime.revoked(facts)
        if revocation is not None:
            self.metrics.checks_revoked.inc()
            return _json({"active": False, "reason": "revoked",
                          "revocation": {"id": revocation.id, "kind": revocation.kind, "reason": revocation.reason}})
        if not self.runtime.can_vouch():
            # Never "active" on a guess: the store could hold a revocation this process has not seen.
            self.metrics.checks.labels("unavailable").inc()
            return problem("state-unavailable", "the state store cannot answer, so this token cannot be vouched for; "
                           "treat it as not active or retry", headers={"Retry-After": "1"})
        self.metrics.checks_active.inc()
        out: dict[str, Any] = {"active": True}
        for name in ("iss", "sub", "client_id", "exp", "iat", "jti", "sid", "scope"):  # RFC 7662 §2.2 members
            if name in claims:
                out[name] = claims[name]
        return _json(out)

    # -- emergencies -----------------------------------------------------------------------------

    async def start_emergency(self, request: Request) -> Response:
        caller = self._caller(request, ADMIN_SCOPES)
        if isinstance(caller, Response):
            return caller
        body = await self._body(request)
        if isinstance(body, Refusal):
            return body.response
        if not isinstance(body, dict):
            return problem("invalid-request", "an emergency is a JSON object")
        now = self.runtime.clock()
        registry = self.runtime.emergencies
        try:
            emergency = registry.prepare(body, self.service.holder.current.policies, self._who(caller), now)
        except EmergencyInputError as exc:
            return problem("invalid-emergency", f"{len(exc.errors)} problem(s); no emergency was started",
                           errors=exc.errors)
        try:
            self.runtime.guarded(lambda: registry.start(emergency, now))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        self._observe()
        self.service.activity.alert("emergency.started", emergency.to_dict(now))
        return _json(emergency.to_dict(now), 201)

    async def list_emergencies(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        status = request.query_params.get("status", "active")
        if status not in ("active", "ended", "all") or set(request.query_params) - {"status"}:
            return problem("invalid-request", "the only query parameter is status=active|ended|all",
                           errors=[Problem.field("status", "invalid-field", "one of active, ended, all")])
        now = self.runtime.clock()
        try:
            entries = self.runtime.guarded(lambda: self.runtime.emergencies.listing(now, status))
        except StoreUnavailable:
            entries = [e for e in self.runtime.emergencies.all() if status == "all" or
                       (e.live(now) == (status == "active"))]  # what this process still applies
        return _json({"emergencies": [e.to_dict(now) for e in entries], "state": self.runtime.health.to_dict()})

    async def get_emergency(self, request: Request) -> Response:
        caller = self._caller(request, REVOKE_SCOPES)
        if isinstance(caller, Response):
            return caller
        emergency_id = request.path_params["id"]
        try:
            held = self.runtime.guarded(lambda: self.runtime.emergencies.get(emergency_id))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        if held is None:
            return problem("not-found", f"no emergency {emergency_id!r}")
        return _json(held.to_dict(self.runtime.clock()))

    async def end_emergency(self, request: Request) -> Response:
        caller = self._caller(request, ADMIN_SCOPES)
        if isinstance(caller, Response):
            return caller
        emergency_id = request.path_params["id"]
        now = self.runtime.clock()
        try:
            ended = self.runtime.guarded(lambda: self.runtime.emergencies.end(emergency_id, by=self._who(caller),
                                                                               now=now))
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        if ended is None:
            return problem("not-found", f"no emergency {emergency_id!r}")
        self._observe()
        self.service.activity.emergency_ended(ended, now)
        return _json(ended.to_dict(now))


def _page_size(raw: str | None, errors: list[Problem]) -> int:
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        errors.append(Problem.field("limit", "invalid-field", f"an integer from 1 to {MAX_PAGE}"))
        return 100
    return int(raw)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")

