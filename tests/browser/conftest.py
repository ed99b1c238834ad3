"""Real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real
``ttlpolicy serve``. Nothing downloads a browser. A failing test leaves a screenshot and the
page's console in ``build/test-artefacts/ui/`` (or ``$TTLPOLICY_TEST_ARTEFACTS``)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import sync_playwright
from required import require_program
from server_fixtures.helpers import REPO, ServerProcess

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("TTLPOLICY_TEST_ARTEFACTS", REPO / "build" / "test-artefacts" / "ui"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


# Module scope: Playwright's sync API cannot start while another instance runs in the same thread,
# so this one must be gone before other test modules start theirs.
@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("--policies", str(REPO / "policies")) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require_program("chromium")
    shutil.rmtree(ARTEFACTS, ignore_errors=True)  # only this run's failures are left there
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=os.path.realpath(executable), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Console:
    """Every console message and uncaught error of one page."""

    def __init__(self, page: Any):
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))

    @property
    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith(("error", "pageerror"))]

    def assert_clean(self) -> None:
        assert not self.errors, self.errors


@pytest.fixture
def page(browser: Any, server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.console = Console(page)
    page.base_url = server.url + "/ui/"
    yield page
    if request.node.stash.get(_FAILED, True):
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # a crashed page still gets its console written
            page.console.messages.append(f"screenshot failed: {exc}")
        (ARTEFACTS / f"{name}.console.txt").write_text("\n".join(page.console.messages) + "\n")
    context.close()
