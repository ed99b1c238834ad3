"""The /ui/ playground in a real browser: decide, heat-map, diff and edit, as a reviewer uses them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from server_fixtures.helpers import REPO, ServerProcess

from ttlpolicy.durations import format_duration
from ttlpolicy.server.auth import hash_key

WORKFORCE = REPO / "policies" / "workforce.yaml"


def _open(page: Any, tab: str = "") -> None:
    page.goto(page.base_url + (f"#{tab}" if tab else ""))
    page.wait_for_selector("body[data-ready=true]")


def cli_decide(context: dict[str, Any], now: str, tmp_path: Path) -> dict[str, Any]:
    """What `ttlpolicy decide` says for ``context`` at ``now``."""
    file = tmp_path / "context.json"
    file.write_text(json.dumps(context))
    done = subprocess.run([sys.executable, "-m", "ttlpolicy.cli.main", "decide", "--policies", str(REPO / "policies"),
                           "--context", str(file), "--now", now], capture_output=True, text=True, check=True)
    decision: dict[str, Any] = json.loads(done.stdout)
    return decision


def test_fill_the_form_and_read_the_decision(page: Any, tmp_path: Path) -> None:
    _open(page, "decide")
    page.select_option("#f-tier", "finance")
    page.select_option("#f-device-trust", "unmanaged")
    page.fill("#f-user-risk", "0.2")
    page.check("#f-user-mfa")
    page.fill("#now", "2025-01-08T23:30")
    page.get_by_role("button", name="Decide", exact=True).click()
    access = page.locator("[data-testid=access]").inner_text()
    expected = cli_decide({"tier": "finance", "device": {"trust": "unmanaged"}, "user": {"risk": 0.2, "mfa": True}},
                          "2025-01-08T23:30:00+01:00", tmp_path)
    assert access == f"access {format_duration(expected['access_ttl'])}"
    assert page.locator("[data-testid=refresh]").inner_text() == f"refresh {format_duration(expected['refresh_ttl'])}"
    # The waterfall has one row per trace step of each lifetime.
    rows = page.locator("table.waterfall").first.locator("tbody tr")
    assert rows.count() == len([s for s in expected["trace"] if s["target"] == "access_ttl"])
    # A matched rule links to its line in the source; following it selects that line in the editor.
    link = page.locator("li.matched a.source", has_text="workforce.yaml").first
    line = int(link.get_attribute("data-line"))
    link.click()
    assert page.locator("#tab-edit").get_attribute("aria-selected") == "true"
    selected = page.evaluate("() => { const e = document.getElementById('editor'); "
                             "return e.value.slice(0, e.selectionStart).split('\\n').length; }")
    assert selected == line and WORKFORCE.read_text().splitlines()[line - 1].lstrip().startswith("- name:")
    page.console.assert_clean()


def test_heatmap_cells_agree_with_decide(page: Any, tmp_path: Path) -> None:
    _open(page)
    cells = page.locator("#heatmap [data-testid=cell]")
    assert cells.count() == 24 * 4  # hours × device trust levels, drawn on arrival
    page.select_option("#hm-y", "user.risk")
    assert page.locator("#f-user-risk").is_disabled()  # the axis is not a fixed value any more
    page.select_option("#f-tier", "finance")
    page.click("#heatmap-button")
    expect(cells).to_have_count(24 * 11)
    cell = page.locator('#heatmap [data-testid=cell][data-x="3"][data-y="2"]')  # 03:30, risk 0.2
    expected = cli_decide({"tier": "finance", "user": {"risk": 0.2}}, "2025-01-08T03:30:00+01:00", tmp_path)
    label = cell.get_attribute("aria-label")
    assert label.startswith("time.hour = 03, user.risk = 0.2: ")
    assert f"access {format_duration(expected['access_ttl'])}, refresh {format_duration(expected['refresh_ttl'])}" \
        in label
    cell.hover()
    assert page.locator("#tooltip").is_visible() and "time.hour = 03" in page.locator("#tooltip").inner_text()
    cell.click()
    detail = page.locator("#heatmap-detail")
    assert f"access {format_duration(expected['access_ttl'])}" in detail.locator("[data-testid=access]").inner_text()
    assert detail.locator("table.waterfall").count() == 2
    # Keyboard: one tab stop in the grid, arrows move, Enter opens.
    first = page.locator('#heatmap [data-testid=cell][data-x="0"][data-y="0"]')
    first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.x + ',' + document.activeElement.dataset.y") == "1,1"
    page.keyboard.press("Enter")
    assert "time.hour = 01, user.risk = 0.1" in detail.inner_text()
    # Refresh colouring redraws from the same answer; every label is readable on its colour (WCAG AA).
    page.check("input[name=hm-lifetime][value=refresh]")
    ratios = page.evaluate("""() => [...document.querySelectorAll('#heatmap [data-testid=cell]')].map((b) => {
        const rgb = (s) => s.match(/\\d+/g).slice(0, 3).map(Number);
        const lum = ([r, g, b]) => [r, g, b].map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92
            : ((c + 0.055) / 1.055) ** 2.4; }).reduce((s, c, i) => s + c * [0.2126, 0.7152, 0.0722][i], 0);
        const [a, z] = [lum(rgb(getComputedStyle(b).color)), lum(rgb(getComputedStyle(b).backgroundColor))];
        return (Math.max(a, z) + 0.05) / (Math.min(a, z) + 0.05); })""")
    assert len(ratios) == 24 * 11 and min(ratios) >= 4.5
    page.console.assert_clean()


def test_diff_between_two_versions(page: Any, tmp_path: Path) -> None:
    _open(page, "diff")
    changed = WORKFORCE.read_text().replace("access_ttl: {multiply: 0.5}\n    refresh_ttl: {cap: 12h}",
                                            "access_ttl: {multiply: 0.8}\n    refresh_ttl: {cap: 12h}")
    upload = tmp_path / "workforce.yaml"
    upload.write_text(changed)
    page.click("details.paste summary")
    page.select_option("#paste-file", label="workforce.yaml")
    page.set_input_files("#upload", str(upload))  # an uploaded file lands in the text area
    expect(page.locator("#paste-text")).to_have_value(changed)
    page.click("#paste-button")
    page.wait_for_selector("[data-testid=change-cell]")
    assert page.locator("[data-testid=change-cell]").count() == 96
    assert page.locator("[data-testid=changed-cells]").inner_text() == "32 of 96 cells change"
    night = page.locator('[data-testid=change-cell][data-x="2"][data-y="0"]')
    assert night.inner_text().startswith("+") and "access longer" in night.get_attribute("aria-label")
    noon = page.locator('[data-testid=change-cell][data-x="12"][data-y="0"]')
    assert noon.inner_text() == "" and "unchanged" in noon.get_attribute("aria-label")
    groups = page.locator("#diff-groups table.groups tbody tr")
    assert groups.count() >= 1 and "access longer" in groups.first.inner_text()
    assert "loosens" in groups.first.inner_text().lower()
    # The edited draft now drives Decide and the heat-map too, without changing what is served.
    assert page.locator("#use-draft").is_checked() and "draft" in page.locator("#version").inner_text()
    page.console.assert_clean()


def test_a_broken_condition_is_reported_at_its_line(page: Any) -> None:
    _open(page, "edit")
    page.select_option("#edit-file", label="workforce.yaml")
    lints: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: lints.append(r.url) if r.url.endswith("/lint") else None)
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.endswith("/lint") else None)
    text = WORKFORCE.read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == 'when: device.trust == "unmanaged"')
    column = text.splitlines()[line - 1].index('"unmanaged"') + len('"unmanaged"') + 1
    offset = sum(len(t) + 1 for t in text.splitlines()[:line - 1]) + column - 1
    editor = page.locator("#editor")
    editor.click()
    page.evaluate(f"document.getElementById('editor').setSelectionRange({offset}, {offset})")
    page.keyboard.type(" && user.mfa ==", delay=15)  # typing: linted once it pauses
    problem = page.locator("#problems li.error")
    problem.first.wait_for()
    assert problem.first.get_attribute("data-code") == "cel-syntax"
    assert int(problem.first.get_attribute("data-line")) == line
    assert re.match(rf"^{line}:\d+$", problem.first.locator(".where").inner_text())
    assert page.locator(f"#gutter .err:text-is('{line}')").count() == 1
    assert "cannot be used" in page.locator("#lint-state").inner_text()
    assert len(lints) < len(" && user.mfa ==")  # debounced: far fewer requests than keystrokes
    page.keyboard.type(" true")
    expect(page.locator("#lint-state")).to_contain_text("no errors")
    assert page.locator("#problems li.error").count() == 0
    assert not page.locator("#use-draft").is_disabled()
    page.console.assert_clean()


def test_narrow_screens_and_labels(page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    _open(page)
    aside = page.locator("aside.context").bounding_box()
    main = page.locator("main").bounding_box()
    assert main["y"] + main["height"] <= aside["y"] + 1  # one column: the views first, the context below
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter((e) => e.type !== 'radio' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map((e) => e.id || e.name)""")
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # only the grid scrolls, inside itself
    page.console.assert_clean()


def test_credentials_are_asked_for_before_any_call(page: Any) -> None:
    key = "browser-test-key-0123456789"
    keys = json.dumps([{"name": "ui", "hash": hash_key(key), "scopes": ["decide"]}])
    with ServerProcess(env={"TTLPOLICY_AUTH__API_KEYS": keys}) as secured:
        page.goto(secured.url + "/ui/")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#credentials").is_visible()
        assert page.locator("#heatmap [data-testid=cell]").count() == 0
        page.fill("#credential", key)
        page.click("#credentials button[type=submit]")
        expect(page.locator("#heatmap [data-testid=cell]")).to_have_count(96)
        assert not page.locator("#credentials").is_visible()
        page.console.assert_clean()  # no 401 on the way: the page asked first
