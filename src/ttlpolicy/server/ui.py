"""The playground: the ``/ui/`` page and the ``/v1/playground/*`` API behind it.

The page is three static files shipped in the package (``static/``), served with a strict
Content-Security-Policy: nothing is loaded from anywhere else and it works offline. Everything
it shows comes from the API below, which scripts may call too, with the same credentials as
the rest of the API (scope ``decide`` or ``admin``):

* ``GET  /v1/playground/policies``: the served set, its files' text and each policy's declared
  attributes (what the decide form is generated from) and rules with their source lines;
* ``POST /v1/playground/lint``: lint a version of the set (the served files with some replaced);
* ``POST /v1/playground/decide``: one explained decision by such a version;
* ``POST /v1/playground/grid``: a heat-map (:mod:`ttlpolicy.heatmap`);
* ``POST /v1/playground/diff``: a change map of two versions plus ``ttlpolicy diff``'s groups.

A *version* is ``{}`` (what is served), ``{"files": {name: text}}`` (the served files with
these replaced or added; ``"overlay": false`` to use only these) or ``{"git": "REV"}`` (the
policy directory at a git revision). Nothing here changes what is served, and these what-if
decisions are neither logged nor counted in the decision metrics. Every request is bounded
(``ui`` settings): policy text, heat-map cells, diff scenarios, compute time, and how many
computations run at once; beyond a bound the answer is a problem that names it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import ContextError, PolicyError, Problem, ProblemCollector, UnknownPolicyError
from ..heatmap import GridError, change_map, dimension_names, heatmap, make_axis
from ..load import parse_document
from ..policyset import POLICY_SUFFIXES, PolicySet, load_sources, resolve_now
from .config import Settings
from .problems import context_errors, problem

JSON = "application/json"
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
# The page may talk to this origin only and load nothing from anywhere else (promise 7, and
# the "nothing from a CDN": the browser itself would refuse it).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MAX_FILES = 32
# Namespaces only the service fills in (as POST /v1/decide refuses them): never typed into a what-if.
SERVICE_ONLY = {"token": "token.* comes only from a verified subject_token",
                "activity": "activity.* comes only from what the service has seen"}
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/~^@{}-]{0,99}$")  # never an option: no leading "-"
_VERSION_FIELDS = frozenset({"files", "overlay", "git"})
T = TypeVar("T")


class Refused(Exception):
    """Answer with ``response`` (a problem) instead."""

    def __init__(self, response: Response):
        self.response = response


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type=JSON)


def _invalid(errors: list[Problem]) -> Refused:
    return Refused(problem("invalid-request", "; ".join(f"{e.path or 'body'}: {e.message}" for e in errors),
                           errors=errors))


def _error(path: str, message: str, code: str = "invalid-field") -> Problem:
    return Problem.field(path, code, message)


def _service_only(context: Mapping[str, Any], path: str) -> list[Problem]:
    """A context may not send what only the service sets, here as in POST /v1/decide."""
    return [_error(f"{path}.{name}", SERVICE_ONLY[name], "context-forbidden-attribute")
            for name in SERVICE_ONLY if name in context]


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_assets() -> dict[str, bytes]:
    folder = resources.files("ttlpolicy.server") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def describe(policies: PolicySet) -> list[dict[str, Any]]:
    """What the page needs of each policy: attributes for the form and axes, rules with lines."""
    documents = {}
    for file, text in policies.sources.items():
        documents[file] = parse_document(text, ProblemCollector(file))
    out = []
    for policy in policies:
        attributes = []
        for name, a in sorted(policy.attributes.items()):
            if name.partition(".")[0] in SERVICE_ONLY:
                continue  # only ever from the service, never typed in
            attributes.append({"name": name, "type": a.type, "description": a.description,
                               "values": list(policy.tiers) if name == "tier" else a.values,
                               "min": a.min, "max": a.max, "default": a.default, "required": a.required,
                               "derived": a.derived})
        rules = []
        for rule in policy.document.rules:
            doc = documents.get(rule.file)
            location = doc.location(("rules", rule.index)) if doc else None
            compiled = next((r for r in policy.rules if r.name == rule.name), None)
            rules.append({"name": rule.name, "description": rule.description, "when": rule.when,
                          "file": rule.file, "line": location.line if location else 0,
                          "deny": rule.deny, "step_up": rule.step_up, "compiled": compiled is not None})
        out.append({"name": policy.name, "description": policy.description, "digest": policy.digest,
                    "default": policy.name == policies.default, "timezone": policy.timezone,
                    "files": list(policy.files), "tiers": list(policy.tiers), "zones": list(policy.document.zones),
                    "attributes": attributes,
                    "dimensions": [d for d in dimension_names(policy) if d.partition(".")[0] not in SERVICE_ONLY],
                    "rules": rules})
    return out


class Playground:
    """The routes of the page and its API, over whatever set ``current()`` returns at each request.

    ``authorize(request)`` is the service's credential check: ``None`` to go on, or the
    401/403 problem to answer with.
    """

    def __init__(self, settings: Settings, current: Callable[[], PolicySet],
                 authorize: Callable[[Request], Response | None]):
        self.settings = settings
        self.limits = settings.ui
        self.current = current
        self.authorize = authorize
        self.assets = load_assets()
        self.max_body = 2 * self.limits.max_text_bytes + 65_536  # JSON escaping may double the text
        self._busy = asyncio.Semaphore(self.limits.max_concurrent)
        self._git_dir: Path | None | bool = False  # False: not looked up yet

    def routes(self) -> list[Route]:
        return [
            Route("/ui", self.redirect, methods=["GET"]),
            Route("/ui/", self.page, methods=["GET"]),
            Route("/ui/{asset}", self.page, methods=["GET"]),
            Route("/v1/playground/policies", self.api(self.policies, body=False), methods=["GET"]),
            Route("/v1/playground/lint", self.api(self.lint), methods=["POST"]),
            Route("/v1/playground/decide", self.api(self.decide), methods=["POST"]),
            Route("/v1/playground/grid", self.api(self.grid), methods=["POST"]),
            Route("/v1/playground/diff", self.api(self.diff), methods=["POST"]),
        ]

    # -- the page ---------------------------------------------------------------------------

    async def redirect(self, request: Request) -> Response:
        return RedirectResponse(str(request.url.path) + "/", status_code=308)

    async def page(self, request: Request) -> Response:
        """The static files. Public on purpose: they hold no data; every call they make carries
        the credential the visitor gives the page, and the API checks it."""
        name = request.path_params.get("asset", "index.html")
        if name not in self.assets:
            return problem("not-found", f"no route for {request.url.path}")
        return Response(self.assets[name], media_type=ASSETS[name], headers=PAGE_HEADERS)

    # -- request plumbing -------------------------------------------------------------------

    def api(self, handler: Callable[[Any], Awaitable[Response]], body: bool = True
            ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refusal = self.authorize(request)
            if refusal is not None:
                return refusal
            try:
                data = await self._body(request) if body else None
                if body and not isinstance(data, dict):
                    raise _invalid([_error("", "expected a JSON object", "invalid-type")])
                return await handler(data)
            except Refused as refused:
                return refused.response
        return endpoint

    async def _body(self, request: Request) -> Any:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != JSON:
            raise Refused(problem("unsupported-media-type", f"send the body as {JSON}, not {media or 'nothing'}"))
        too_large = Refused(problem("body-too-large", f"request body exceeds {self.max_body} bytes",
                                    max_bytes=self.max_body))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise Refused(Response(status_code=400)) from None
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise Refused(problem("invalid-json", f"body is not valid JSON: {exc}")) from None

    async def _compute(self, work: Callable[[], T]) -> T:
        """Run ``work`` on a thread, at most ``max_concurrent`` at once, within ``max_seconds``
        (waiting for a turn included). Past the limit the answer is a problem; a heat-map also
        stops itself at its own budget, so abandoned work does not run on for long."""
        seconds = self.limits.max_seconds
        try:
            async with asyncio.timeout(seconds):
                async with self._busy:
                    return await asyncio.to_thread(work)
        except TimeoutError:
            raise Refused(problem("compute-time-exceeded", f"the computation took longer than {seconds:g}s; ask "
                                  "for fewer cells or a smaller policy", max_seconds=seconds)) from None

    def _version(self, spec: Any, path: str) -> Callable[[], PolicySet]:
        """A loader of the version ``spec`` describes (checked here, loaded on the worker thread)."""
        served = self.current()
        if spec is None or spec == {}:
            return lambda: served
        if not isinstance(spec, dict):
            raise _invalid([_error(path, 'expected {"files": {...}} or {"git": "REV"}')])
        errors = [_error(_at(path, k), "unknown field", "unknown-field") for k in spec if k not in _VERSION_FIELDS]
        if "git" in spec and "files" in spec:
            errors.append(_error(path or "body", "give files or git, not both"))
        overlay = spec.get("overlay", True)
        if not isinstance(overlay, bool):
            errors.append(_error(_at(path, "overlay"), "expected a boolean"))
        if errors:
            raise _invalid(errors)
        if "git" in spec:
            return self._git_version(spec["git"], _at(path, "git"))
        files = spec.get("files")
        if not isinstance(files, dict) or not files:
            raise _invalid([_error(_at(path, "files"), "expected an object of file name → policy text")])
        if len(files) > MAX_FILES:
            raise _invalid([_error(_at(path, "files"), f"at most {MAX_FILES} files", "too-many-items")])
        total = 0
        for name, text in files.items():
            if not name or len(name) > 256 or "\0" in name or not name.endswith(POLICY_SUFFIXES):
                errors.append(_error(_at(path, "files"), f"{name[:80]!r}: a file name ending in .yaml or .yml"))
            if not isinstance(text, str):
                errors.append(_error(_at(path, f"files.{name[:80]}"), "expected the file's text (a string)"))
            else:
                total += len(text.encode())
        if errors:
            raise _invalid(errors)
        if total > self.limits.max_text_bytes:
            raise Refused(problem("text-too-large", f"{total} bytes of policy text; at most "
                                  f"{self.limits.max_text_bytes} in one request", max_bytes=self.limits.max_text_bytes))
        sources: dict[str, str] = {**served.sources, **files} if overlay else dict(files)
        return lambda: load_sources(sources)

    def _git_version(self, rev: Any, path: str) -> Callable[[], PolicySet]:
        if not self.limits.git:
            raise Refused(problem("invalid-source", "git revisions are turned off (ui.git: false)"))
        if not isinstance(rev, str) or not _REVISION.match(rev):
            raise _invalid([_error(path, "expected a revision such as HEAD~1, main or a commit id")])
        from ..cli.diff import GitError, load_git  # the same reader as `ttlpolicy diff --git`

        directory = self.settings.policies

        def load() -> PolicySet:
            try:
                return load_git(rev, directory)
            except GitError as exc:
                raise _SourceError(str(exc)) from None
        return load

    def git_revisions(self) -> list[dict[str, str]]:
        """Recent commits touching the policy directory (newest first), or ``[]`` outside git."""
        if not self.limits.git:
            return []
        directory = self.settings.policies
        try:
            done = subprocess.run(["git", "log", "-n", "15", "--format=%h%x00%s%x00%cs", "--", "."],
                                  cwd=directory, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        if done.returncode != 0:
            return []
        out = []
        for line in done.stdout.decode(errors="replace").splitlines():
            commit, _, rest = line.partition("\0")
            subject, _, date = rest.partition("\0")
            out.append({"rev": commit, "subject": subject, "date": date})
        return out

    async def _load(self, loader: Callable[[], PolicySet]) -> PolicySet:
        try:
            return await self._compute(loader)
        except PolicyError as exc:
            raise Refused(problem("policy-load-failed", f"{len(exc.errors)} error(s) in the policy text; nothing "
                                  "was changed", **exc.to_dict())) from None
        except _SourceError as exc:
            raise Refused(problem("invalid-source", str(exc))) from None

    # -- endpoints --------------------------------------------------------------------------

    async def policies(self, _: Any) -> Response:
        """GET /v1/playground/policies"""
        served = self.current()
        revisions = await asyncio.to_thread(self.git_revisions)
        return _json({"digest": served.digest, "default": served.default, "policies": describe(served),
                      "files": [{"file": f, "text": t} for f, t in sorted(served.sources.items())],
                      "git": revisions,
                      "limits": {"max_text_bytes": self.limits.max_text_bytes, "max_cells": self.limits.max_cells,
                                 "max_seconds": self.limits.max_seconds}})

    async def lint(self, body: dict[str, Any]) -> Response:
        """POST /v1/playground/lint"""
        self._fields(body, {"files", "overlay"})
        loader = self._version({k: body[k] for k in ("files", "overlay") if k in body}, "")

        def run() -> tuple[list[Problem], PolicySet | None]:
            try:
                policies = loader()
            except PolicyError as exc:
                return exc.problems, None
            return list(policies.warnings), policies

        problems, policies = await self._compute(run)
        errors = [p for p in problems if p.severity == "error"]
        return _json({"ok": not errors, "problems": [p.to_dict() for p in problems],
                      "digest": policies.digest if policies else None,
                      "policies": describe(policies) if policies else []})

    async def decide(self, body: dict[str, Any]) -> Response:
        """POST /v1/playground/decide"""
        self._fields(body, {"version", "policy", "context", "now"})
        errors = []
        context = body.get("context")
        if not isinstance(context, dict):
            errors.append(_error("context", "expected an object" if "context" in body else "required",
                                 "invalid-field" if "context" in body else "missing-field"))
        else:
            errors += _service_only(context, "context")
        now = self._now(body, errors)
        name = self._policy_name(body, errors)
        if errors:
            raise _invalid(errors)
        policies = await self._load(self._version(body.get("version"), "version"))
        policy = self._policy(policies, name)
        assert isinstance(context, dict)  # checked above
        try:
            decision = policy.decide(context, now or datetime.now().astimezone(), explain=True)
        except ContextError as exc:
            return problem("invalid-context", f"the context violates {len(exc.problems)} declared attribute "
                           f"rule(s) of policy {policy.name}", errors=context_errors(exc.problems), policy=policy.name)
        return _json({**decision.to_dict(), "policy_set": {"digest": policies.digest}})

    async def grid(self, body: dict[str, Any]) -> Response:
        """POST /v1/playground/grid"""
        self._fields(body, {"version", "policy", "x", "y", "fixed", "now"})
        errors: list[Problem] = []
        axes = self._axes(body, errors)
        fixed = self._fixed(body, errors)
        now = self._now(body, errors)
        name = self._policy_name(body, errors)
        if errors:
            raise _invalid(errors)
        policies = await self._load(self._version(body.get("version"), "version"))
        policy = self._policy(policies, name)
        budget = self.limits.max_seconds

        def run() -> dict[str, Any]:
            x, y = (make_axis(policy, a, v, p) for (a, v), p in zip(axes, ("x", "y")))
            return heatmap(policy, x, y, fixed, now, self.limits.max_cells, budget).to_dict()

        return _json(await self._grid_result(run))

    async def diff(self, body: dict[str, Any]) -> Response:
        """POST /v1/playground/diff"""
        self._fields(body, {"base", "head", "policy", "x", "y", "fixed", "now"})
        errors: list[Problem] = []
        axes = self._axes(body, errors)
        fixed = self._fixed(body, errors)
        now = self._now(body, errors)
        name = self._policy_name(body, errors)
        if errors:
            raise _invalid(errors)
        base_loader, head_loader = self._version(body.get("base"), "base"), self._version(body.get("head"), "head")
        base, head = await self._load(base_loader), await self._load(head_loader)
        head_policy = self._policy(head, name)
        if head_policy.name not in base:
            raise Refused(problem("unknown-policy", f"policy {head_policy.name!r} is not in the base version",
                                  policy=head_policy.name, known=base.names))
        base_policy = base.get(head_policy.name)
        budget = self.limits.max_seconds
        scenarios = self.limits.max_diff_scenarios

        def run() -> dict[str, Any]:
            from ..cli.diff import report_dict  # the same groups and wording as `ttlpolicy diff --format json`
            from ..diffing import diff_policies

            x, y = (make_axis(head_policy, a, v, p) for (a, v), p in zip(axes, ("x", "y")))
            picture = change_map(base_policy, head_policy, x, y, fixed, now, self.limits.max_cells, budget)
            report = diff_policies(base, head, max_scenarios=scenarios, only=head_policy.name)
            return {"map": picture.to_dict(), "report": report_dict(report),
                    "base_digest": base.digest, "head_digest": head.digest}

        return _json(await self._grid_result(run))

    async def _grid_result(self, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return await self._compute(run)
        except GridError as exc:
            code = exc.code if exc.code in ("grid-too-large", "compute-time-exceeded") else "invalid-grid"
            if exc.code == "invalid-context":
                raise Refused(problem("invalid-context", str(exc), errors=exc.errors)) from None
            extra: dict[str, Any] = {"max_cells": self.limits.max_cells} if code == "grid-too-large" else {}
            raise Refused(problem(code, str(exc), errors=exc.errors, **extra)) from None

    # -- field checks -----------------------------------------------------------------------

    @staticmethod
    def _fields(body: Mapping[str, Any], allowed: set[str]) -> None:
        extra = [k for k in body if k not in allowed]
        if extra:
            raise _invalid([_error(k, "unknown field", "unknown-field") for k in extra])

    @staticmethod
    def _now(body: Mapping[str, Any], errors: list[Problem]) -> datetime | None:
        if "now" not in body or body["now"] is None:
            return None
        try:
            if not isinstance(body["now"], str):
                raise ValueError("expected an RFC 3339 timestamp (string)")
            return resolve_now(body["now"])
        except ValueError as exc:
            errors.append(_error("now", str(exc)))
            return None

    @staticmethod
    def _policy_name(body: Mapping[str, Any], errors: list[Problem]) -> str | None:
        name = body.get("policy")
        if name is not None and not isinstance(name, str):
            errors.append(_error("policy", "expected a policy name (string)"))
            return None
        return name

    @staticmethod
    def _policy(policies: PolicySet, name: str | None) -> Any:
        try:
            return policies.get(name)
        except UnknownPolicyError as exc:
            raise Refused(problem("unknown-policy", str(exc), policy=exc.name, known=exc.known)) from None

    @staticmethod
    def _axes(body: Mapping[str, Any], errors: list[Problem]) -> list[tuple[str, list[Any] | None]]:
        out: list[tuple[str, list[Any] | None]] = []
        for key in ("x", "y"):
            spec = body.get(key)
            if isinstance(spec, str):
                spec = {"attribute": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("attribute"), str):
                errors.append(_error(key, 'expected an attribute name or {"attribute": ..., "values": [...]}',
                                     "missing-field" if spec is None else "invalid-field"))
                out.append(("", None))
                continue
            unknown = [k for k in spec if k not in ("attribute", "values")]
            errors += [_error(f"{key}.{k}", "unknown field", "unknown-field") for k in unknown]
            values = spec.get("values")
            if values is not None and not isinstance(values, list):
                errors.append(_error(f"{key}.values", "expected a list"))
                values = None
            out.append((spec["attribute"], values))
        return out

    @staticmethod
    def _fixed(body: Mapping[str, Any], errors: list[Problem]) -> dict[str, Any]:
        fixed = body.get("fixed", {})
        if fixed is None:
            return {}
        if not isinstance(fixed, dict):
            errors.append(_error("fixed", "expected a context object"))
            return {}
        errors += _service_only(fixed, "fixed")
        return fixed

    # -- OpenAPI ----------------------------------------------------------------------------

    def openapi(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with the playground's paths and schemas added."""
        from .openapi_ui import playground_paths

        paths, schemas = playground_paths(self.settings, document)
        return {**document, "paths": {**document["paths"], **paths},
                "components": {**document["components"],
                               "schemas": {**document["components"]["schemas"], **schemas}}}


class _SourceError(Exception):
    """A version that cannot be read (an unknown git revision, not a repository)."""

