"""Ships like a real tool: the wheel runs outside the repository; the container's entrypoint works.

No container engine runs on the test machines, so the image is not built here: the Dockerfile
and compose file are parsed, and the command the container would run is run locally with the
environment they give it (policies read-only, the healthcheck's own command against it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from ttlpolicy.server.config import load_settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
KEY = "test-key-for-the-container"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (wheel and sdist) from a clean copy of what the package is made of."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the test environment's setuptools instead of downloading one
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True)
    return out


def test_the_distributions_pass_twine_check(dist: Path) -> None:
    files = sorted(map(str, dist.iterdir()))
    assert any(f.endswith(".whl") for f in files) and any(f.endswith(".tar.gz") for f in files)
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_license_is_an_spdx_expression(dist: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
        names = archive.namelist()
    assert "License-Expression: Apache-2.0" in metadata
    assert "ttlpolicy/policy.schema.json" in names and "ttlpolicy/scaffold/default.yaml" in names


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (its dependencies borrowed from the test environment
    through a .pth file, so nothing is downloaded); returns its bin directory."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                   "'purelib'))"], capture_output=True, text=True, check=True).stdout.strip())
    # A directory named by a .pth file gets no .pth processing of its own, so the test
    # environment's editable install of ttlpolicy is not visible: only the wheel is.
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(next(dist.glob("*.whl")))], check=True, capture_output=True)
    return venv / "bin"


def test_the_wheel_runs_init_lint_decide_and_serve_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{installed}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)

    def ttlpolicy(*args: str, cwd: Path = tmp_path) -> str:
        done = subprocess.run([str(installed / "ttlpolicy"), *args], cwd=cwd, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, f"ttlpolicy {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    where = subprocess.run([str(installed / "python"), "-c", "import ttlpolicy; print(ttlpolicy.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.parent)), where  # the wheel's copy, not the repository's
    ttlpolicy("init", "project")
    project = tmp_path / "project"
    assert "ok: policy default" in ttlpolicy("lint", cwd=project)
    assert "5 passed, 0 failed" in ttlpolicy("test", cwd=project)
    decision = json.loads(ttlpolicy("decide", "--context", "contexts/office-laptop.json", "--now",
                                    "2025-01-08T13:00:00+01:00", cwd=project))
    assert decision["access_ttl"] == 3600
    assert json.loads(ttlpolicy("schema"))["$schema"].startswith("https://json-schema.org/")
    with _serving([str(installed / "ttlpolicy"), "serve", "--no-watch"], project, env) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}


@contextmanager
def _serving(command: list[str], cwd: Path, env: dict[str, str], port: int | None = None) -> Iterator[int]:
    port = port or _free_port()
    env = {**env, "TTLPOLICY_PORT": str(port)}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


# -- the container -------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def _final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def _exec_form(stage: list[tuple[str, str]], op: str) -> list[str]:
    args = next(a for o, a in stage if o == op)
    return list(json.loads(args))


def test_the_image_is_small_non_root_and_checks_its_health() -> None:
    stage = _final_stage()
    assert stage[0][1].startswith("python:3.11-slim")
    user = next(a for o, a in stage if o == "USER")
    assert user not in ("0", "root") and int(user) >= 1000
    healthcheck = next(a for o, a in stage if o == "HEALTHCHECK")
    assert "/healthz" in healthcheck and "CMD [" in healthcheck
    assert _exec_form(stage, "ENTRYPOINT") + _exec_form(stage, "CMD") == ["ttlpolicy", "serve"]
    assert _env(stage)["TTLPOLICY_POLICIES"] == "/policies" and ("VOLUME", '["/policies"]') in stage
    assert "--no-cache-dir" in next(a for o, a in stage if o == "RUN" and "pip install" in a)


def _compose_environment() -> dict[str, str]:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["ttlpolicy"]
    values = {"TTLPOLICY_API_KEY_HASH": "sha256:" + __import__("hashlib").sha256(KEY.encode()).hexdigest(),
              "TTLPOLICY_DECISION_LOG__SALT": "test-salt"}
    return {name: re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: values[m.group(1)], str(value))
            for name, value in service["environment"].items()}


def test_compose_runs_two_replicas_with_read_only_policies_and_documented_settings() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["ttlpolicy"]
    assert service["deploy"]["replicas"] == 2 and service["read_only"] is True
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    (volume,) = service["volumes"]
    assert volume["target"] == "/policies" and volume["read_only"] is True
    assert (COMPOSE.parent / volume["source"]).resolve() == REPO / "policies"
    environment = {**_env(_final_stage()), **_compose_environment()}
    settings = load_settings(environ=environment)  # an unknown or misspelt setting would raise here
    assert settings.auth.enabled and settings.host == "0.0.0.0" and settings.decision_log.salt == "test-salt"


def test_the_entrypoint_refuses_to_serve_openly_without_credentials(tmp_path: Path) -> None:
    stage = _final_stage()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TTLPOLICY_")}, **_env(stage),
           "TTLPOLICY_POLICIES": str(REPO / "policies")}
    done = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", *_exec_form(stage, "CMD")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "credentials" in done.stderr


def test_the_entrypoint_serves_read_only_policies_and_passes_its_healthcheck(tmp_path: Path) -> None:
    stage = _final_stage()
    policies = tmp_path / "policies"  # the read-only mount
    shutil.copytree(REPO / "policies", policies)
    for path in [policies, *policies.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TTLPOLICY_")}, **_env(stage),
           **_compose_environment(), "TTLPOLICY_POLICIES": str(policies),
           "TTLPOLICY_HOST": "127.0.0.1"}  # tests bind loopback; the image binds 0.0.0.0
    command = [sys.executable, "-m", "ttlpolicy.cli.main", *_exec_form(stage, "CMD")]
    try:
        with _serving(command, tmp_path, env) as port:
            healthcheck = next(a for o, a in stage if o == "HEALTHCHECK")
            probe = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
            probe = [sys.executable if part == "python" else part.replace("8080", str(port)) for part in probe]
            assert subprocess.run(probe, timeout=30).returncode == 0
            body = {"context": {"tier": "finance"}}
            assert httpx.post(f"http://127.0.0.1:{port}/v1/decide", json=body).status_code == 401
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/decide", json=body, headers={"X-API-Key": KEY})
            assert answer.status_code == 200 and answer.json()["tier"] == "finance"
    finally:
        for path in [policies, *policies.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
