"""The service loads signed bundles over HTTP from a real local server that misbehaves (issue 14)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from server_fixtures.bundle_server import BundleServer
from server_fixtures.delivery import CONTRACTOR, digest, version, write_set
from server_fixtures.helpers import client, metric_total, public_pem, wait_for

from ttlpolicy import PolicyError
from ttlpolicy.bundle import MANIFEST, build_bundle, pack, sign_bundle, unpack
from ttlpolicy.server import Settings, create_app

V1, V2 = digest(version(10)), digest(version(5))


def make_bundle(tmp_path: Path, minutes: int, revision: str, key: Any | None) -> bytes:
    source = tmp_path / f"src-{revision}"
    write_set(source, minutes, tests=True)
    data = build_bundle(source, revision=revision)[0]
    time.sleep(0.002)  # build times order bundles (millisecond resolution)
    return sign_bundle(data, key) if key is not None else data


def failing_tests_bundle(tmp_path: Path, key: Any) -> bytes:
    """Signed by the right key, but the manifest lies: its own tests fail."""
    files = unpack(make_bundle(tmp_path, 5, "r-broken", None), "b")
    files["tests/app.yaml"] = files["tests/app.yaml"].replace(b"5m", b"7m")
    manifest = json.loads(files[MANIFEST])
    manifest["files"]["tests/app.yaml"] = "sha256:" + hashlib.sha256(files["tests/app.yaml"]).hexdigest()
    files[MANIFEST] = json.dumps(manifest).encode()
    return sign_bundle(pack(files), key)


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _settings(tmp_path: Path, url: str, key: Any) -> dict[str, Any]:
    (tmp_path / "key.pub").write_bytes(public_pem(key))
    return {"bundle": {"source": url, "public_keys": [str(tmp_path / "key.pub")], "poll_interval_s": 0.05,
                       "max_backoff_s": 0.3, "timeout_s": 2, "cache_dir": str(tmp_path / "cache")}}


def test_a_remote_bundle_is_polled_verified_and_kept_through_every_failure(tmp_path: Path, key: Any) -> None:
    r1 = make_bundle(tmp_path, 10, "r1", key)
    r2 = make_bundle(tmp_path, 5, "r2", key)
    refusals = [
        ("garbage", r2, "bundle-invalid"),
        ("truncated", r2, "bundle-fetch-failed"),
        ("error", r2, "bundle-fetch-failed"),
        ("ok", r1, "bundle-rollback"),  # an old revision: a replay or a stale mirror
        ("ok", make_bundle(tmp_path, 1, "r-unsigned", None), "signature-missing"),
        ("ok", make_bundle(tmp_path, 1, "r-other-key", ec.generate_private_key(ec.SECP256R1())),
         "signature-invalid"),
        ("ok", failing_tests_bundle(tmp_path, key), "set-tests-failed"),
    ]
    settings = _settings(tmp_path, "", key)
    with BundleServer(r1) as server:
        settings["bundle"]["source"] = server.url
        with client(**settings) as http:
            def decide() -> dict[str, Any]:
                response = http.post("/v1/decide", json={"context": CONTRACTOR})
                assert response.status_code == 200
                return response.json()

            assert decide()["policy_set"] == {"digest": V1, "revision": "r1"}
            ready = http.get("/readyz").json()
            assert (ready["status"], ready["revision"], ready["source"]["type"]) == ("ready", "r1", "bundle")
            assert 'ttlpolicy_bundle_info{revision="r1"} 1.0' in http.get("/metrics").text
            wait_for(lambda: any(status == 304 for _, status in server.requests), 10)  # ETag polling
            server.body = r2
            wait_for(lambda: http.get("/readyz").json()["revision"] == "r2", 10)
            assert decide()["policy_set"] == {"digest": V2, "revision": "r2"}
            for mode, body, code in refusals:
                server.mode, server.body = mode, body
                degraded = wait_for(lambda: (r := http.get("/readyz").json())["error"]
                                    and r["error"]["problems"][0]["code"] == code and r, 10)
                assert degraded["status"] == "degraded" and degraded["revision"] == "r2", code
                assert decide()["policy_set"] == {"digest": V2, "revision": "r2"}, code
                server.mode, server.body = "ok", r2
                wait_for(lambda: http.get("/readyz").json()["status"] == "ready", 10)
            server.die()
            dead = wait_for(lambda: (r := http.get("/readyz").json())["source"]["last_fetch"]
                            ["consecutive_failures"] >= 3 and r, 10)
            assert dead["error"]["problems"][0]["code"] == "bundle-fetch-failed"
            assert decide()["policy_set"]["revision"] == "r2"
            assert metric_total(http.get("/metrics").text, "ttlpolicy_bundle_fetch_consecutive_failures") >= 3
            # Backoff: failing polls slow down towards max_backoff_s (0.3 s ± 20%), from every 0.05 s.
            failures = dead["source"]["last_fetch"]["consecutive_failures"]
            start = time.monotonic()
            wait_for(lambda: http.get("/readyz").json()["source"]["last_fetch"]["consecutive_failures"]
                     >= failures + 2, 10)
            assert (time.monotonic() - start) / 2 > 0.15
    # A restart while the server is still dead serves the last good bundle, verified again.
    with client(**settings) as http:
        ready = http.get("/readyz").json()
        assert (ready["revision"], ready["source"]["last_fetch"]["result"]) == ("r2", "cached")
        assert http.post("/v1/decide", json={"context": CONTRACTOR}).json()["access_ttl"] == 300


def test_start_up_without_a_server_or_a_good_cache_is_refused(tmp_path: Path, key: Any) -> None:
    with BundleServer() as server:
        url = server.url
    settings = _settings(tmp_path, url, key)
    with pytest.raises(PolicyError) as info:
        create_app(Settings.model_validate({**settings, "decision_log": {"sink": "off"}}))
    assert [p.code for p in info.value.problems] == ["bundle-fetch-failed"]
    cache = Path(settings["bundle"]["cache_dir"])
    cache.mkdir()
    from ttlpolicy.server.remote import BundleSource

    BundleSource(Settings.model_validate(settings).bundle).cache_file.write_bytes(
        make_bundle(tmp_path, 10, "r1", None))  # an unsigned bundle planted in the cache
    with pytest.raises(PolicyError) as info:
        create_app(Settings.model_validate({**settings, "decision_log": {"sink": "off"}}))
    assert [p.code for p in info.value.problems] == ["signature-missing"]


def test_a_bundle_file_is_served_and_reread(tmp_path: Path, key: Any) -> None:
    path = tmp_path / "set.tar.gz"
    path.write_bytes(make_bundle(tmp_path, 10, "r1", key))
    settings = _settings(tmp_path, str(path), key)
    with client(**settings) as http:
        assert http.post("/v1/decide", json={"context": CONTRACTOR}).json()["policy_set"]["revision"] == "r1"
        path.write_bytes(make_bundle(tmp_path, 5, "r2", key))
        wait_for(lambda: http.get("/readyz").json()["revision"] == "r2", 10)
        path.write_bytes(b"\x1f\x8b half a bundle")
        wait_for(lambda: http.get("/readyz").json()["status"] == "degraded", 10)
        assert http.post("/v1/decide", json={"context": CONTRACTOR}).json()["access_ttl"] == 300
