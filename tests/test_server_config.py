"""Settings: file, environment and flags in that order of precedence; `serve` refusals and --hash-key."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from server_fixtures.helpers import REPO, serve_command

from ttlpolicy.cli.main import main
from ttlpolicy.server.auth import hash_key
from ttlpolicy.server.config import ConfigError, Settings, env_overrides, load_settings


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.limits.max_body_bytes == 65536 and settings.limits.max_batch == 100
    assert settings.policies == Path("policies") and settings.decision_log.sink == "stdout"


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9000\nworkers: 2\nlimits: {max_batch: 10, max_body_bytes: 4096}\n"
                      "decision_log: {sink: off}\n")
    settings = load_settings(config, environ={"TTLPOLICY_PORT": "9001", "TTLPOLICY_LIMITS__MAX_BATCH": "20",
                                              "TTLPOLICY_RELOAD__WATCH_PATHS": '["/git"]'},
                             flags={"port": 9002, "host": None})
    assert settings.port == 9002  # flag beats env beats file
    assert settings.workers == 2  # file only
    assert settings.limits.max_batch == 20 and settings.limits.max_body_bytes == 4096  # env merges into file
    assert settings.reload.watch_paths == (Path("/git"),)
    assert settings.decision_log.sink == "off"


def test_env_names_nest_with_double_underscore() -> None:
    assert env_overrides({"TTLPOLICY_AUTH__JWT__AUDIENCE": "x", "OTHER": "y"}) == {"auth": {"jwt": {"audience": "x"}}}


def test_the_state_url_short_form_and_the_long_one_merge(tmp_path: Path) -> None:
    """`state: URL` is `state: {url: URL}` wherever it is written: each source sets what it names.
    TTLPOLICY_STATE__DEGRADED once replaced a short-form URL, silently falling back to a local
    SQLite store that no other replica shares."""
    redis, other = "redis://redis.internal:6379/0", "redis://elsewhere:6379/1"
    degraded = '{"access_ttl": "2m"}'
    # the environment alone: the URL and a setting beside it
    state = load_settings(environ={"TTLPOLICY_STATE": redis, "TTLPOLICY_STATE__DEGRADED": degraded}).state
    assert state.url == redis and state.degraded.access_ttl == 120
    # the file's short form, a setting from the environment
    short = tmp_path / "short.yaml"
    short.write_text(f"state: {redis}\n")
    state = load_settings(short, environ={"TTLPOLICY_STATE__POLL_INTERVAL": "0.5"}).state
    assert state.url == redis and state.poll_interval == 0.5
    # the file's long form, the URL from the environment: the file's other settings stay
    long = tmp_path / "long.yaml"
    long.write_text(f"state: {{url: {redis}, retention: 30d}}\n")
    state = load_settings(long, environ={"TTLPOLICY_STATE": other}).state
    assert state.url == other and state.retention == 30 * 86400
    # both spellings in the environment: the same value is fine, two values are a mistake
    assert load_settings(environ={"TTLPOLICY_STATE": redis, "TTLPOLICY_STATE__URL": redis}).state.url == redis
    with pytest.raises(ConfigError, match="TTLPOLICY_STATE and TTLPOLICY_STATE__URL name different values"):
        load_settings(environ={"TTLPOLICY_STATE": redis, "TTLPOLICY_STATE__URL": other})


def test_ttlpolicy_variables_that_are_not_settings_do_not_stop_serve() -> None:
    # docs/deployment.md documents TTLPOLICY_NO_PARSER_CACHE; it once made `serve` refuse to start.
    environ = {"TTLPOLICY_NO_PARSER_CACHE": "1", "TTLPOLICY_UPDATE_GOLDEN": "1", "TTLPOLICY_PORT": "9090"}
    assert env_overrides(environ) == {"port": "9090"}
    assert load_settings(None, environ=environ).port == 9090


@pytest.mark.parametrize("text, message", [
    ("port: many\n", "port"),
    ("unknown_setting: 1\n", "unknown_setting"),
    ("decision_log: {sink: file}\n", "needs a path"),
    ("decision_log: {mask: {user.id: hash}}\n", "salt"),
    ("- a list\n", "mapping"),
    ("port: [\n", "not valid YAML"),
])
def test_invalid_settings_are_reported(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("host, auth, insecure, refused", [
    ("127.0.0.1", {}, False, False), ("::1", {}, False, False), ("localhost", {}, False, False),
    ("0.0.0.0", {}, False, True), ("0.0.0.0", {}, True, False),
    ("0.0.0.0", {"api_keys": [{"name": "a", "hash": hash_key("k")}]}, False, False),
])
def test_bind_refusal(host: str, auth: dict, insecure: bool, refused: bool) -> None:
    settings = Settings.model_validate({"host": host, "auth": auth, "insecure_no_auth": insecure})
    assert (settings.bind_problem() is not None) == refused


def test_example_config_is_valid() -> None:
    settings = load_settings(REPO / "examples" / "serve.yaml",
                             environ={"TTLPOLICY_DECISION_LOG__SALT": "example-salt"})
    assert settings.decision_log.mask


def test_hash_key_subcommand(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-key\n"))
    assert main(["serve", "--hash-key"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("s3cret-key")
    assert hash_key("s3cret-key") == "sha256:" + __import__("hashlib").sha256(b"s3cret-key").hexdigest()


def test_serve_refuses_non_loopback_without_credentials() -> None:
    result = subprocess.run(serve_command("--host", "0.0.0.0", "--port", "1"), cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--insecure-no-auth" in result.stderr


def test_serve_fails_fast_on_a_broken_policy_set(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: ttlpolicy/v1\nname: bad\nrules:\n  - name: r\n    when: 'x +'\n")
    result = subprocess.run(serve_command("--policies", str(tmp_path), "--port", "1"), cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "bad.yaml:" in result.stderr and "not starting" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_serve_reports_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("workers: 0\n")
    result = subprocess.run(serve_command("--config", str(tmp_path / "c.yaml")), cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "workers" in result.stderr
