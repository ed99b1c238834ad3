"""Chaos: one real server under continuous load while its policy directory goes through
everything a deployment can do to it, in one run.

Broken YAML, a file written in two steps (a valid first half first), the directory deleted and
restored, a file that cannot be read, then a good set again. Throughout: zero failed requests,
every response from one complete version (its digest and the lifetime it gives agree), readiness
never "ready" for anything but a complete version, and "degraded" while what is on disk is not
what is served. (The dying bundle server is the same assertion over HTTP, in
test_bundle_remote.py.)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from server_fixtures.delivery import HALF_DIGEST, HEAD, TAIL, Load, digest, version, write_set
from server_fixtures.helpers import ServerProcess, wait_for

VERSIONS = {minutes: digest(version(minutes)) for minutes in (10, 5, 7, 3)}
COMPLETE = {d: minutes * 60 for minutes, d in VERSIONS.items()}


def _until(load: Load, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20) -> None:
    """Wait until a readiness probe the load thread took satisfies ``predicate``."""
    start = len(load.readiness)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(r) for r in load.readiness[start:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}; last readiness: {load.readiness[-1:]}")


def _serving(minutes: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["digest"] == VERSIONS[minutes] and r["status"] == "ready"


def _degraded_on(minutes: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["digest"] == VERSIONS[minutes] and r["status"] == "degraded"


def test_reload_under_load_survives_every_bad_delivery(tmp_path: Path) -> None:
    directory = tmp_path / "policies"
    app = directory / "app.yaml"
    write_set(directory, 10)
    # The default quiet period (1 s) is longer than the writer's pause below; a pause longer than
    # the quiet period can look finished, which is what a manifest guards against.
    env = {"TTLPOLICY_RELOAD__DEBOUNCE_MS": "50"}
    with ServerProcess("--policies", str(directory), env=env) as server, Load(server.url) as load:
        wait_for(lambda: bool(load.readiness) and load.readiness[-1]["watcher"]["status"] == "watching", 10)
        load.wait_for_more()

        # 1. A broken file: refused, the last good set keeps answering, readiness says so.
        app.write_text("apiVersion: ttlpolicy/v1\nname: [broken\n")
        _until(load, _degraded_on(10), "degraded on the last good set after a broken file")
        load.wait_for_more()

        # 2. A file written in two steps: the valid first half must never go live.
        with app.open("w") as stream:
            stream.write(HEAD)
            stream.flush()
            time.sleep(0.6)
            stream.write(TAIL.format(minutes=5))
        _until(load, _serving(5), "the complete second version")
        load.wait_for_more()

        # 3. The directory deleted (readiness must notice), then restored with a new version.
        shutil.rmtree(directory)
        _until(load, _degraded_on(5), "degraded while the directory is missing")
        load.wait_for_more()
        write_set(directory, 7)
        _until(load, _serving(7), "the restored directory's version")
        load.wait_for_more()

        # 4. A policy file that cannot be read (a dangling link: even root cannot read it).
        app.unlink()
        app.symlink_to(tmp_path / "nowhere.yaml")
        _until(load, _degraded_on(7), "degraded on the last good set with an unreadable file")
        load.wait_for_more()

        # 5. Whole again.
        app.unlink()
        app.write_text(version(3))
        _until(load, _serving(3), "the final version")
        load.wait_for_more()

    load.assert_whole(COMPLETE)
    served = {digest for _, digest, _, _ in load.results}
    assert served == set(COMPLETE), served  # every complete version was served in its turn
    for probe in load.readiness:  # honest readiness throughout
        assert probe["digest"] in COMPLETE and probe["digest"] != HALF_DIGEST, probe
        assert probe["status"] in ("ready", "degraded"), probe
