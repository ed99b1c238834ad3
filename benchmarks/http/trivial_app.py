"""The baseline for the HTTP numbers: a Starlette ``POST /v1/decide`` that reads and parses the
JSON body (the least any endpoint must do) and returns a fixed, hand-written decision; and a
``POST /v1/tokens/check`` that does the same and answers ``{"active": true}`` (for
benchmarks/state.py).

Served by uvicorn with the same settings as ``ttlpolicy serve`` (uvloop and httptools when
installed, no access log, no server header), so the difference to ttlpolicy is the policy service
itself: authentication, validation, the decision, metrics and the decision log.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# What ttlpolicy returns for a typical workforce request (trace included), written out by hand.
DECISION = orjson.dumps({
    "allow": True, "access_ttl": 5400, "refresh_ttl": 86400,
    "refresh": {"rotation": False, "idle_timeout": 604800, "max_session": 2592000},
    "step_up": False, "step_up_reasons": [], "deny_reason": None,
    "matched": ["managed-device-with-mfa", "outside-corporate-network"], "errors": [], "tier": "standard",
    "trace": [
        {"target": "access_ttl", "step": "base", "value": 3600, "result": 3600, "source": "tier standard"},
        {"target": "access_ttl", "step": "multiply", "value": 1.5, "result": 5400, "rule": "managed-device-with-mfa"},
        {"target": "refresh_ttl", "step": "base", "value": 1209600, "result": 1209600, "source": "tier standard"},
        {"target": "refresh_ttl", "step": "floor", "value": 86400, "result": 1209600, "rule": "managed-device-with-mfa"},
        {"target": "refresh_ttl", "step": "cap", "value": 86400, "result": 86400, "rule": "outside-corporate-network"},
    ],
    "policy": {"name": "workforce", "digest": "sha256:" + "0" * 64},
    "policy_set": {"digest": "sha256:" + "0" * 64},
})


async def decide(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(DECISION, media_type="application/json")


ACTIVE = orjson.dumps({"active": True})


async def check(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(ACTIVE, media_type="application/json")


app = Starlette(routes=[Route("/v1/decide", decide, methods=["POST"]),
                        Route("/v1/tokens/check", check, methods=["POST"])])
