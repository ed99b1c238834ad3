"""Hot reload takes only whole sets and survives its directory being replaced (issue 14, defects 1-2)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from server_fixtures.delivery import CONTRACTOR, HALF_DIGEST, HEAD, TAIL, Load, digest, version, write_set
from server_fixtures.helpers import ServerProcess, client, metric_total, wait_for

from ttlpolicy import PolicyError
from ttlpolicy.bundle import MANIFEST, build_bundle, unpack
from ttlpolicy.server.reload import DirectorySource, PolicyHolder

V1, V2 = digest(version(10)), digest(version(5))


def test_a_file_written_in_two_steps_never_goes_live_half_written(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    write_set(directory, 10)
    env = {"TTLPOLICY_RELOAD__DEBOUNCE_MS": "50"}  # events arrive fast; the quiet period must still hold
    with ServerProcess("--policies", str(directory), env=env) as server, Load(server.url) as load:
        load.wait_for_more()
        with (directory / "app.yaml").open("w") as stream:  # a slow copy: a valid first half, then the rest
            stream.write(HEAD)
            stream.flush()
            time.sleep(0.6)
            stream.write(TAIL.format(minutes=5))
        with httpx.Client(base_url=server.url, timeout=5) as http:
            wait_for(lambda: http.get("/readyz").json()["digest"] == V2, 15)
        load.wait_for_more()
    load.assert_whole({V1: 600, V2: 300})
    assert HALF_DIGEST not in {r["digest"] for r in load.readiness}


def _manifest_files(tmp_path: Path, minutes: int) -> dict[str, bytes]:
    source = tmp_path / f"build-{minutes}"
    write_set(source, minutes, tests=True)
    bundle, _ = build_bundle(source, revision=f"r{minutes}")
    return unpack(bundle, "bundle")


def test_a_set_with_a_manifest_loads_only_with_exactly_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    for name, data in _manifest_files(tmp_path, 10).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    holder = PolicyHolder(DirectorySource(directory, quiet=0))
    assert holder.current.revision == "r10" and holder.current.policies.digest == V1
    v2 = _manifest_files(tmp_path, 5)

    async def reload() -> PolicyError:
        with pytest.raises(PolicyError) as info:
            await holder.reload("test")
        return info.value

    (directory / MANIFEST).write_bytes(v2[MANIFEST])  # the manifest arrives first: the files are not there yet
    error = asyncio.run(reload())
    assert {p.code for p in error.problems} == {"manifest-mismatch"}
    assert {p.location.file for p in error.problems} == {f"{directory}/app.yaml", f"{directory}/tests/app.yaml"}
    assert holder.current.policies.digest == V1  # still the last whole set
    (directory / "app.yaml").write_bytes(v2["app.yaml"])
    (directory / "tests" / "app.yaml").write_bytes(v2["tests/app.yaml"])
    (directory / "stray.yaml").write_text(version(1))  # not in the manifest: the set is not exactly what was built
    error = asyncio.run(reload())
    assert [(p.code, p.location.file) for p in error.problems] == [("manifest-mismatch", f"{directory}/stray.yaml")]
    (directory / "stray.yaml").unlink()
    loaded = asyncio.run(holder.reload("test"))
    assert (loaded.revision, loaded.policies.digest, loaded.reference) == ("r5", V2, {"digest": V2, "revision": "r5"})


def test_the_quiet_period_compares_content_not_events(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    write_set(directory, 10)
    holder = PolicyHolder(DirectorySource(directory, quiet=0.3, settle_timeout=0.5))

    async def scenario() -> None:
        async def writer() -> None:  # keeps changing the file; no quiet period ever comes
            for i in range(12):
                (directory / "app.yaml").write_text(version(10) + f"# edit {i}\n")
                await asyncio.sleep(0.1)

        task = asyncio.create_task(writer())
        with pytest.raises(PolicyError) as info:
            await holder.reload("test")
        await task
        assert [p.code for p in info.value.problems] == ["set-changing"]
        (directory / "app.yaml").write_text(version(5))
        assert (await holder.reload("test")).policies.digest == V2

    asyncio.run(scenario())


def test_the_served_digest_is_compared_with_the_disk(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    write_set(directory, 10)
    settings = {"policies": directory, "reload": {"watch": False, "quiet_ms": 50, "verify_interval_s": 0.1}}
    with client(**settings) as http:
        ready = http.get("/readyz").json()
        assert ready["digest"] == V1 and ready["watcher"]["status"] == "off"
        (directory / "app.yaml").write_text(version(5))  # no watcher, no SIGHUP: only the periodic check sees it
        wait_for(lambda: http.get("/readyz").json()["digest"] == V2, 10)
        wait_for(lambda: http.get("/readyz").json()["disk"]["in_sync"] is True, 10)
        (directory / "app.yaml").write_text("apiVersion: ttlpolicy/v1\nname: [broken\n")
        degraded = wait_for(lambda: (r := http.get("/readyz").json())["disk"]["in_sync"] is False and r, 10)
        assert degraded["status"] == "degraded" and degraded["digest"] == V2
        assert "differ" in " ".join(degraded["reasons"])
        metrics = http.get("/metrics").text
        assert metric_total(metrics, "ttlpolicy_policy_disk_in_sync") == 0
        assert metric_total(metrics, 'ttlpolicy_reloads_total') >= 2
        assert http.post("/v1/decide", json={"context": CONTRACTOR}).json()["access_ttl"] == 300


def test_the_watcher_survives_its_directory_being_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    write_set(directory, 10)
    env = {"TTLPOLICY_RELOAD__DEBOUNCE_MS": "50", "TTLPOLICY_RELOAD__QUIET_MS": "100"}
    with ServerProcess("--policies", str(directory), env=env) as server:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            wait_for(lambda: http.get("/readyz").json()["watcher"]["status"] == "watching", 10)
            shutil.rmtree(directory)  # what deployment tools do: delete, then create anew
            write_set(directory, 5)
            ready = wait_for(lambda: (r := http.get("/readyz").json())["digest"] == V2 and r, 15)
            # ... and the new directory is watched, not just read once:
            ready = wait_for(lambda: (r := http.get("/readyz").json())["watcher"]["status"] == "watching" and r, 10)
            assert ready["watcher"]["restarts"] >= 1
            (directory / "app.yaml").write_text(version(10))
            wait_for(lambda: http.get("/readyz").json()["digest"] == V1, 15)
            ready = wait_for(lambda: (r := http.get("/readyz").json())["status"] == "ready" and r, 10)
            metrics = http.get("/metrics").text
    assert ready["reasons"] == [] and ready["error"] is None
    assert metric_total(metrics, "ttlpolicy_policy_watcher_up") == 1
    assert metric_total(metrics, "ttlpolicy_policy_watcher_restarts") >= 1


def test_a_missing_directory_is_reported_not_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    write_set(directory, 10)
    env = {"TTLPOLICY_RELOAD__DEBOUNCE_MS": "50", "TTLPOLICY_RELOAD__QUIET_MS": "100"}
    with ServerProcess("--policies", str(directory), env=env) as server:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            wait_for(lambda: http.get("/readyz").json()["watcher"]["status"] == "watching", 10)
            shutil.rmtree(directory)
            degraded = wait_for(lambda: (r := http.get("/readyz").json())["watcher"]["status"] == "waiting" and r, 10)
            assert degraded["status"] == "degraded" and degraded["digest"] == V1
            assert metric_total(http.get("/metrics").text, "ttlpolicy_policy_watcher_up") == 0
            assert http.post("/v1/decide", json={"context": CONTRACTOR}).json()["access_ttl"] == 600
            write_set(directory, 10)
            wait_for(lambda: http.get("/readyz").json()["status"] == "ready", 15)
