"""Helpers for the service tests: an in-process client, a real server process, keys and tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from ttlpolicy.server import Settings, create_app

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
FINANCE = {"tier": "finance", "device": {"trust": "managed"}, "user": {"mfa": True, "id": "u-1"},
           "location": {"ip": "10.1.2.3"}}

# A policy file whose arrival changes the set's digest without depending on the bundled files' text.
EXTRA_POLICY = """apiVersion: ttlpolicy/v1
name: extra
extends: [baseline]
description: Added by a test to change the set's digest.
"""


def client(**settings: Any) -> TestClient:
    """A TestClient for an app over the bundled policies (decision log off unless given)."""
    settings.setdefault("policies", POLICIES)
    settings.setdefault("decision_log", {"sink": "off"})
    settings.setdefault("reload", {"watch": False})
    return TestClient(create_app(Settings.model_validate(settings)), raise_server_exceptions=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttlpolicy.cli.main", "serve", *args]


class ServerProcess:
    """``ttlpolicy serve`` in a subprocess on a free loopback port; ``with`` waits for /healthz."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, startup_timeout: float = 20.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ("--port", str(self.port), *args)
        self.env = {**os.environ, "TTLPOLICY_DECISION_LOG__SINK": "off", **(env or {})}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(serve_command(*self.args), cwd=REPO, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise AssertionError("server did not become healthy in time")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read().decode()
            self.proc.stderr.close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


# -- keys and tokens ---------------------------------------------------------------------------

def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT built by hand, for what PyJWT refuses to produce (alg none, HS256 keyed with a PEM)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in Prometheus exposition ``text``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        yield json.loads(line)
