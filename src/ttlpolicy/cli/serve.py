"""``ttlpolicy serve``: run the decision service (Starlette under uvicorn).

Settings come from ``--config`` (YAML), then ``TTLPOLICY_*`` environment variables, then
flags. Everything that can be wrong (settings, keys, the policy set, an unsafe bind) is
checked before the port is bound, and reported with exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from .output import fail, missing_policies_hint, warn


EXAMPLES = (
    'ttlpolicy serve                                 # policies/ on http://127.0.0.1:8080, no credentials needed',
    'ttlpolicy serve --config examples/serve.yaml --host 0.0.0.0 --workers 4   # production-like: credentials required',
    'printf \'%s\' "$KEY" | ttlpolicy serve --hash-key   # the sha256:... form of an API key, for the config',
)


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the HTTP decision service",
                            description="Serve POST /v1/decide and friends (see docs/service.md). Settings: "
                                        "--config file, then TTLPOLICY_* environment variables, then flags.")
    parser.add_argument("--policies", metavar="DIR", help="policy directory (default: policies/)")
    parser.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (default: 1)")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (see examples/serve.yaml)")
    parser.add_argument("--insecure-no-auth", action="store_true", default=None,
                        help="allow a non-loopback bind without credentials (never in production)")
    parser.add_argument("--no-watch", action="store_true", help="do not reload when policy files change")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                        help="server log level (default: info)")
    parser.add_argument("--hash-key", action="store_true",
                        help="read an API key on stdin, print its sha256:<hex> form for the config, and exit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.hash_key:
        return _hash_key()
    # Only the settings module here: prometheus-client must not be imported before the
    # multiprocess directory is chosen.
    from ..server.config import ConfigError, is_loopback

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        return fail("invalid-settings", str(exc))
    refusal = settings.bind_problem()
    if refusal is not None:
        return fail("insecure-bind", refusal)

    multiproc_dir = None
    if settings.workers > 1:
        multiproc_dir = tempfile.mkdtemp(prefix="ttlpolicy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        return _serve(settings, multiproc_dir, is_loopback(settings.host))
    finally:
        if multiproc_dir is not None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The service settings: ``--config`` file, then ``TTLPOLICY_*`` variables, then these flags."""
    from ..server.config import load_settings

    flags = {"policies": args.policies, "host": args.host, "port": args.port, "workers": args.workers,
             "insecure_no_auth": args.insecure_no_auth, "log_level": args.log_level,
             "reload.watch": False if args.no_watch else None}
    return load_settings(args.config, flags=flags)


def _serve(settings: Any, multiproc_dir: str | None, loopback: bool) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from .. import PolicyError
    from ..server.app import create_app, freeze_heap, policy_source
    from ..server.auth import Authenticator
    from ..server.config import INTERNAL_ENV, ConfigError
    from ..server.decisionlog import sink_problem
    from ..server.protocol import protocol_class

    try:
        Authenticator(settings.auth)  # unreadable keys fail here, before the bind
    except ConfigError as exc:
        return fail("invalid-settings", str(exc))
    log_problem = sink_problem(settings.decision_log)  # an unwritable log path is a usage error (exit 2)
    if log_problem is not None:
        return fail("io-error", log_problem)
    source = policy_source(settings)
    try:
        # One worker: build the app now, so it serves exactly the set checked here. Several: check
        # the set once here (each worker then loads it itself).
        if settings.workers == 1:
            app = create_app(settings)
            freeze_heap()  # the loaded service out of the cyclic GC's way (p99)
        else:
            source.load_now()
    except PolicyError as exc:
        return fail("policy-load-failed", f"cannot load policies from {source.description}; not starting"
                    f"{missing_policies_hint(settings.policies)}", found=exc)

    if not settings.auth.enabled:
        where = "loopback only" if loopback else "WITHOUT AUTHENTICATION (--insecure-no-auth)"
        warn("auth-disabled", f"no credentials configured; serving {settings.host}:{settings.port} {where}")
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["ttlpolicy"] = {"handlers": ["default"], "level": settings.log_level.upper(),
                                          "propagate": False}
    common: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": settings.log_level,
                              "access_log": settings.access_log, "log_config": log_config,
                              "server_header": False, "loop": "auto",
                              # header/body/idle timeouts, header size and connection cap (server/protocol.py)
                              "http": protocol_class(settings.limits) if settings.workers == 1
                              else "ttlpolicy.server.protocol:FromEnvironment",
                              "timeout_keep_alive": settings.limits.idle_timeout}
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it; turn that into exit 0
    # (so the temporary metrics directory is removed) instead of death by signal.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        if settings.workers == 1:
            uvicorn.run(app, **common)
        else:
            # Workers are fresh processes: they rebuild the app from the resolved settings.
            os.environ[INTERNAL_ENV] = settings.model_dump_json()
            uvicorn.run("ttlpolicy.server.app:create_app_from_env", factory=True, workers=settings.workers,
                        **common)
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class _Stopped(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _hash_key() -> int:
    from ..server.auth import hash_key

    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        return fail("usage", "--hash-key reads the API key on stdin; got nothing")
    print(hash_key(key))
    return 0
