"""The HTML usage report in real headless Chromium (Debian's): no console error, no request
beyond the file itself, every chart drawn with visible marks, and a screenshot that is not blank."""

from __future__ import annotations

import io
from pathlib import Path

from required import require_program
from ttlpolicy.cli.main import main
from usage_logs import ROOT, write_logs

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
CHARTS = {"timeline", "countries", "clients", "lifetimes-tier", "lifetimes-policy", "deny-reasons",
          "step-up-reasons", "failures", "rules"}


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    chromium = require_program("chromium")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    decisions, events = write_logs(tmp_path, decisions=400, events=200)
    page_file = tmp_path / "report.html"
    assert main(["report", str(decisions), str(events), "--policies", str(ROOT / "policies"),
                 "-o", str(page_file)]) == 0
    url = page_file.as_uri()
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url, wait_until="load")
            charts = page.evaluate("""() => [...document.querySelectorAll('svg[data-chart]')].map(svg => {
                const box = svg.getBoundingClientRect();
                const marks = [...svg.querySelectorAll('rect, path.series, circle')];
                const visible = marks.filter(m => { const b = m.getBBox(); return b.width > 0 && b.height > 0; });
                return {chart: svg.dataset.chart, width: box.width, height: box.height,
                        marks: marks.length, visible: visible.length,
                        fill: visible.length ? getComputedStyle(visible[0]).fill : null};
            })""")
            screenshot = page.screenshot(full_page=True)
            chart_shot = page.locator('svg[data-chart="timeline"]').screenshot()
        finally:
            browser.close()
    assert problems == []
    assert requests == [url]  # self-contained: nothing but the file itself was requested
    drawn = {c["chart"]: c for c in charts}
    assert CHARTS <= set(drawn), f"missing charts: {CHARTS - set(drawn)}"
    for chart in CHARTS:
        info = drawn[chart]
        assert info["width"] > 300 and info["height"] > 40, info
        assert info["visible"] > 0 and info["fill"] not in (None, "none", "rgb(255, 255, 255)"), info
    for image_bytes in (screenshot, chart_shot):
        image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
        colors = image.getcolors(maxcolors=1 << 20) or []
        assert len(colors) > 50  # text, bars in several colours: not blank
    # The chart itself holds the outcome colours (Okabe-Ito green, orange, vermillion).
    chart_colors = {c for _, c in Image.open(io.BytesIO(chart_shot)).convert("RGB").getcolors(1 << 20) or []}
    assert {(0, 158, 115), (230, 159, 0), (213, 94, 0)} <= chart_colors
