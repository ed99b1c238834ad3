"""The CI contract for tests that need an external program: skip locally, fail in CI."""

from __future__ import annotations

import pytest

from required import require_program


def test_present_program_is_found() -> None:
    assert require_program("sh").endswith("/sh")


def test_missing_program_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_program("ttlpolicy-no-such-program")


def test_missing_program_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        require_program("ttlpolicy-no-such-program")
