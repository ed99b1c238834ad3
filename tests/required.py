"""Required external programs for tests.

Tests that drive a real external program (``redis-server``, ``chromium``, ``promtool``) ask for
it with :func:`require_program`. On a developer machine without it they skip; in CI
(``CI=true``, where ``.ci/run`` installs the Debian packages) they fail, so a missing service
can never turn a green run into one that tested nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str) -> str:
    """The path of ``name`` on PATH; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install {_DEBIAN_PACKAGES.get(name, name)})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI must run this test")
    pytest.skip(message)


_DEBIAN_PACKAGES = {"redis-server": "redis-server", "chromium": "chromium", "promtool": "prometheus", "zsh": "zsh",
                    "fish": "fish", "curl": "curl", "jq": "jq"}
