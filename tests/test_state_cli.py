"""`ttlpolicy revoke`, `revocations list|lift` and `emergency start|list|end` against a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from server_fixtures.helpers import POLICIES, ServerProcess

from ttlpolicy.cli.main import main
from ttlpolicy.server.auth import hash_key

KEY = "cli-admin-key-0123456789"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_incident_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps({"auth": {"api_keys": [{"name": "soc", "hash": hash_key(KEY), "scopes": ["admin"]}]},
                                  "state": {"url": f"sqlite://{tmp_path}/state.db"}}))
    with ServerProcess("--policies", str(POLICIES), "--no-watch", "--config", str(config)) as server:
        monkeypatch.setenv("TTLPOLICY_URL", server.url)
        code, _, err = run(capsys, "revoke", "subject", "alice", "--reason", "INC-42")
        assert code == 2 and err.startswith("ttlpolicy: error[unauthorized]: ") and "credentials required" in err
        monkeypatch.setenv("TTLPOLICY_API_KEY", KEY)
        code, out, _ = run(capsys, "revoke", "subject", "alice", "--reason", "INC-42")
        assert code == 0 and out.startswith("revoked: rev_") and "subject alice" in out and "api_key:soc" in out
        # "now" again (a retried script, a second responder): the same one entry, reaching the later moment
        code, again, _ = run(capsys, "revoke", "subject", "alice", "--reason", "INC-42")
        assert code == 0 and again.startswith("already revoked: ") and again.split()[2] == out.split()[1]
        earlier = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        for word in ("revoked", "already revoked"):  # the same request twice is one revocation
            code, out, _ = run(capsys, "revoke", "client", "web", "--issued-before", earlier,
                               "--reason", "INC-42")
            assert code == 0 and out.startswith(f"{word}: rev_")
        code, _, err = run(capsys, "revoke", "all", "--issued-before", "2020-01-01T00:00:00Z", "--reason", "breach")
        assert code == 1 and "issued_before: error[invalid-field]: every token issued before this has expired already" in err
        yesterday = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
        code, out, _ = run(capsys, "revoke", "all", "--issued-before", yesterday, "--reason", "breach")
        assert code == 0
        code, _, err = run(capsys, "revoke", "subject", "bob", "--reason", "r", "--issued-before", "2999-01-01T00:00:00Z")
        assert code == 1 and "issued_before: error[invalid-field]: is in the future" in err
        listed = run_json(capsys, "revocations", "list")["revocations"]
        assert sorted((e["kind"], e["value"]) for e in listed) == [("all", None), ("client", "web"), ("subject", "alice")]
        listed = [e for e in listed if e["kind"] == "all"]
        code, out, _ = run(capsys, "revocations", "lift", listed[0]["id"], "--reason", "test")
        assert code == 0 and out.startswith("lifted:")
        assert sorted(e["kind"] for e in run_json(capsys, "revocations", "list")["revocations"]) == ["client", "subject"]

        code, _, err = run(capsys, "emergency", "start", "--scope", 'tier == "finanse"', "--access", "5m",
                           "--for", "24h", "--reason", "INC-42")
        assert code == 1 and err.startswith("ttlpolicy: error[invalid-emergency]: ")
        assert "\nscope:1:9: error[unknown-tier]: " in err
        code, out, _ = run(capsys, "emergency", "start", "--scope", 'tier == "finance"', "--access", "5m",
                           "--refresh", "0s", "--for", "24h", "--reason", "INC-42")
        assert code == 0 and "INC-42: access ≤ 5m, refresh off where tier == \"finance\"" in out
        emergencies = run_json(capsys, "emergency", "list")["emergencies"]
        assert [e["reason"] for e in emergencies] == ["INC-42"]
        code, out, _ = run(capsys, "emergency", "end", emergencies[0]["id"])
        assert code == 0 and out.startswith("ended:") and " ended " in out
        assert run(capsys, "emergency", "list")[1] == "no emergencies\n"

    code, _, err = run(capsys, "emergency", "list")  # the server is gone
    assert code == 2 and "error[service-unreachable]: cannot reach" in err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, _ = run(capsys, *args, "--format", "json")
    assert code == 0
    return json.loads(out)
