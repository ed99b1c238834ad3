"""The usage report as one self-contained HTML file: inline CSS and inline SVG charts.

No script, no external stylesheet, font or image: the file opens offline, in a mail client's
viewer, or attached to a ticket, and shows the same thing everywhere. Every chart is an SVG
with a ``<title>`` (screen readers, and hover tooltips on each bar without JavaScript) and the
numbers behind it in a collapsible table. Colours are the Okabe-Ito palette, distinguishable
with the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape
from typing import Any, Sequence

from ..durations import format_duration

COLORS = {"allow": "#009E73", "step_up": "#E69F00", "deny": "#D55E00", "events": "#0072B2",
          "failures": "#CC79A7", "access": "#0072B2", "refresh": "#56B4E9", "neutral": "#5B6770"}
_LABELS = {"allow": "allow", "step_up": "step-up", "deny": "deny"}
_OUTCOMES = ("allow", "step_up", "deny")
WIDTH = 920

_CSS = """
:root { color-scheme: light; --ink: #1d2329; --muted: #5b6770; --rule: #d8dde2; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--ink); background: var(--bg); }
main { max-width: 980px; margin: 0 auto; padding: 28px 24px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-top: 12px; border-top: 1px solid var(--rule); }
p.lead, p.note { color: var(--muted); margin: 4px 0 12px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 18px 0; }
.tile { background: #fff; border: 1px solid var(--rule); border-radius: 8px; padding: 10px 12px; }
.tile b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
.tile span { color: var(--muted); font-size: 13px; }
figure.chart { background: #fff; border: 1px solid var(--rule); border-radius: 8px; margin: 12px 0;
               padding: 12px 12px 6px; }
figure.chart svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin: 4px 2px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; color: var(--muted); margin: 0 2px 6px; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px;
            vertical-align: -1px; }
details { margin: 6px 2px 4px; font-size: 13px; }
summary { cursor: pointer; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid var(--rule); vertical-align: top; }
td.n, th.n { text-align: right; }
ul.never { columns: 2; font-size: 14px; }
.empty { color: var(--muted); font-style: italic; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: #3b454e; }
svg .axis line, svg .grid line { stroke: #e3e7eb; }
svg .axis path { stroke: #9aa4ad; }
"""


def _n(value: float) -> str:
    """A number for an SVG attribute: two decimals at most."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _count(value: int | float) -> str:
    return f"{value:,}".replace(",", "\u202f")  # a narrow no-break space groups thousands


def _ttl(seconds: int | float | None) -> str:
    return "—" if seconds is None else format_duration(int(seconds))


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


class _Svg:
    """A tiny SVG builder: elements are strings, every text escaped."""

    def __init__(self, width: int, height: int, title: str, chart: str):
        self.width, self.height, self.parts = width, height, [f"<title>{escape(title)}</title>"]
        self.chart, self.title = chart, title

    def rect(self, x: float, y: float, w: float, h: float, color: str, tip: str, cls: str = "bar") -> None:
        self.parts.append(f'<rect class="{cls}" x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0))}" '
                          f'height="{_n(max(h, 0))}" fill="{color}"><title>{escape(tip)}</title></rect>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#9aa4ad", width: float = 1) -> None:
        self.parts.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
                          f'stroke-width="{_n(width)}"/>')

    def text(self, x: float, y: float, content: str, anchor: str = "start", cls: str = "") -> None:
        klass = f' class="{cls}"' if cls else ""
        self.parts.append(f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{klass}>{escape(content)}</text>')

    def path(self, points: Sequence[tuple[float, float]], color: str, tip: str) -> None:
        d = " ".join(f"{'M' if i == 0 else 'L'}{_n(x)},{_n(y)}" for i, (x, y) in enumerate(points))
        self.parts.append(f'<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="2">'
                          f'<title>{escape(tip)}</title></path>')

    def circle(self, x: float, y: float, color: str, tip: str) -> None:
        self.parts.append(f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="3" fill="{color}">'
                          f'<title>{escape(tip)}</title></circle>')

    def render(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
                f'width="{self.width}" height="{self.height}" role="img" data-chart="{self.chart}">'
                + "".join(self.parts) + "</svg>")


def _legend(keys: Sequence[str]) -> str:
    names = {**_LABELS, "failures": "failed auth / refresh / signature", "events": "events",
             "access": "access token", "refresh": "refresh token"}
    return '<div class="legend">' + "".join(f'<span><i style="background:{COLORS[k]}"></i>{escape(names[k])}</span>'
                                            for k in keys) + "</div>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{escape(str(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<details><summary>The numbers</summary><table><tr>{head}</tr>{body}</table></details>"


def _figure(svg: _Svg | None, caption: str, legend: str = "", table: str = "") -> str:
    if svg is None:
        return f'<p class="empty">{escape(caption)} — nothing in this range.</p>'
    return (f'<figure class="chart">{legend}{svg.render()}<figcaption>{escape(caption)}</figcaption>'
            f"{table}</figure>")


# -- charts ---------------------------------------------------------------------------------------


def timeline_chart(timeline: dict[str, Any]) -> str:
    buckets = timeline["buckets"]
    if not buckets:
        return _figure(None, "Decisions over time")
    left, right, top, bottom, height = 52, 52, 14, 44, 280
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    peak = _nice_max(max(b["allow"] + b["step_up"] + b["deny"] for b in buckets))
    peak_fail = _nice_max(max(b["failures"] for b in buckets))
    svg = _Svg(WIDTH, height, "Decisions per interval (stacked by outcome) and failures", "timeline")
    for i in range(5):  # grid and left axis
        y = top + plot_h * i / 4
        svg.line(left, y, left + plot_w, y, "#e3e7eb")
        svg.text(left - 6, y + 4, _count(round(peak * (4 - i) / 4)), "end")
        if any(b["failures"] for b in buckets):
            svg.text(left + plot_w + 6, y + 4, _count(round(peak_fail * (4 - i) / 4)))
    slot = plot_w / len(buckets)
    bar = max(1.0, slot * 0.78)
    width = timeline["bucket_seconds"]
    fmt = "%d %b" if width >= 86400 else "%d %b %H:%M"
    points: list[tuple[float, float]] = []
    for i, bucket in enumerate(buckets):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        start = datetime.fromisoformat(bucket["start"])
        for key in _OUTCOMES:
            h = plot_h * bucket[key] / peak
            if h > 0:
                svg.rect(x, y - h, bar, h, COLORS[key], f"{start:{fmt}} UTC: {_count(bucket[key])} {_LABELS[key]}")
            y -= h
        points.append((left + i * slot + slot / 2, top + plot_h - plot_h * bucket["failures"] / peak_fail))
    label_every = max(1, math.ceil(len(buckets) / 8))
    for i in range(0, len(buckets), label_every):
        start = datetime.fromisoformat(buckets[i]["start"])
        svg.text(left + i * slot + slot / 2, height - bottom + 18, f"{start:{fmt}}", "middle")
    svg.line(left, top + plot_h, left + plot_w, top + plot_h)
    keys = list(_OUTCOMES)
    if any(b["failures"] for b in buckets):
        svg.path(points, COLORS["failures"], "failed authentications, refreshes and bad signatures")
        for (x, y), bucket in zip(points, buckets):
            if bucket["failures"]:
                svg.circle(x, y, COLORS["failures"], f"{bucket['start']}: {_count(bucket['failures'])} failures")
        keys.append("failures")
    table = _table(["interval start (UTC)", "allow", "step-up", "deny", "events", "failures"],
                   [[b["start"], b["allow"], b["step_up"], b["deny"], b["events"], b["failures"]] for b in buckets],
                   numeric=(1, 2, 3, 4, 5))
    caption = (f"Decisions per {format_duration(width)} (left axis), stacked by outcome; failures reported as "
               "events (right axis).")
    return _figure(svg, caption, _legend(keys), table)


def stacked_bars(rows: Sequence[dict[str, Any]], label_key: str, title: str, chart: str, caption: str,
                 limit: int = 15, extra: str | None = None) -> str:
    """Horizontal bars, one per row, stacked by outcome; ``extra`` (e.g. events) as a number at the end."""
    rows = [r for r in rows if r["decisions"] or (extra and r.get(extra))][:limit]
    if not rows:
        return _figure(None, caption)
    label_w, row_h, top = 150, 24, 8
    plot_w = WIDTH - label_w - 170  # room for "1 234 · 567 events" after the longest bar
    height = top + row_h * len(rows) + 8
    peak = max(r["decisions"] for r in rows) or 1
    svg = _Svg(WIDTH, height, title, chart)
    for i, row in enumerate(rows):
        y = top + i * row_h
        svg.text(label_w - 8, y + 16, str(row[label_key])[:24], "end")
        x = float(label_w)
        for key in _OUTCOMES:
            value = row[key] if key != "allow" else row["decisions"] - row["deny"] - row["step_up"]
            w = plot_w * value / peak
            if w > 0:
                svg.rect(x, y + 4, w, row_h - 8, COLORS[key], f"{row[label_key]}: {_count(value)} {_LABELS[key]}")
            x += w
        note = f"{_count(row['decisions'])}" + (f" · {_count(row[extra])} events" if extra and row.get(extra) else "")
        svg.text(x + 6, y + 16, note)
    headers = [label_key, "decisions", "step-up", "deny"] + ([extra] if extra else [])
    table = _table(headers, [[r[label_key], r["decisions"], r["step_up"], r["deny"]] + ([r.get(extra, 0)] if extra else [])
                             for r in rows], numeric=tuple(range(1, len(headers))))
    return _figure(svg, caption, _legend(_OUTCOMES), table)


def ranked_bars(rows: Sequence[dict[str, Any]], label: Any, title: str, chart: str, caption: str, color: str,
                limit: int = 15) -> str:
    """Horizontal bars of ``count`` per row, largest first; ``label(row)`` names a row."""
    rows = list(rows)[:limit]
    if not rows:
        return _figure(None, caption)
    label_w, row_h, top = 390, 24, 8
    plot_w = WIDTH - label_w - 70
    height = top + row_h * len(rows) + 8
    peak = max(r["count"] for r in rows) or 1
    svg = _Svg(WIDTH, height, title, chart)
    for i, row in enumerate(rows):
        y = top + i * row_h
        name = label(row)
        svg.text(label_w - 8, y + 16, name if len(name) <= 60 else name[:59] + "…", "end")
        w = plot_w * row["count"] / peak
        svg.rect(label_w, y + 4, w, row_h - 8, color, f"{name}: {_count(row['count'])}")
        svg.text(label_w + w + 6, y + 16, _count(row["count"]))
    table = _table(["", "count"], [[label(r), r["count"]] for r in rows], numeric=(1,))
    return _figure(svg, caption, "", table)


def lifetime_chart(groups: dict[str, dict[str, Any]], title: str, chart: str, caption: str) -> str:
    """Box plots on a logarithmic time axis: per group, access and refresh lifetimes (min, quartiles, max)."""
    rows = [(name, kind, stats) for name, summary in groups.items() for kind in ("access", "refresh")
            if (stats := summary[f"{kind}_ttl"]).get("count")]
    if not rows:
        return _figure(None, caption)
    ticks = [60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400, 90 * 86400]
    low = min(max(1, s["min"]) for _, _, s in rows)
    high = max(s["max"] for _, _, s in rows)
    ticks = [t for t in ticks if low / 5 <= t <= high * 5] or [low, high]
    lo, hi = math.log10(min(low, ticks[0])), math.log10(max(high, ticks[-1]))
    hi = hi if hi > lo else lo + 1
    label_w, row_h, top, bottom = 230, 22, 8, 30
    plot_w = WIDTH - label_w - 30
    height = top + row_h * len(rows) + bottom
    svg = _Svg(WIDTH, height, title, chart)

    def x_of(seconds: float) -> float:
        return label_w + plot_w * (math.log10(max(seconds, 1)) - lo) / (hi - lo)

    for tick in ticks:
        svg.line(x_of(tick), top, x_of(tick), height - bottom, "#e3e7eb")
        svg.text(x_of(tick), height - bottom + 16, format_duration(tick), "middle")
    for i, (name, kind, s) in enumerate(rows):
        y = top + i * row_h
        if kind == "access":
            label = f"{name[:20]} ({_count(groups[name]['decisions'])}) access"
        else:
            none = groups[name]["no_refresh_token"]
            label = "refresh" + (f" (none for {100 * none / groups[name]['decisions']:.0f}%)" if none else "")
        svg.text(label_w - 8, y + 15, label, "end")
        color = COLORS[kind]
        mid = y + row_h / 2
        tip = (f"{name}, {kind} token: min {_ttl(s['min'])}, quartiles {_ttl(s['p25'])} / {_ttl(s['median'])} / "
               f"{_ttl(s['p75'])}, max {_ttl(s['max'])} ({_count(s['count'])} decisions)")
        svg.line(x_of(s["min"]), mid, x_of(s["max"]), mid, color, 1.5)
        svg.rect(x_of(s["p25"]), y + 4, max(2.0, x_of(s["p75"]) - x_of(s["p25"])), row_h - 8, color, tip, "box")
        svg.line(x_of(s["median"]), y + 3, x_of(s["median"]), y + row_h - 3, "#1d2329", 2)
    table = _table(["group", "token", "decisions", "min", "p25", "median", "p75", "p90", "max"],
                   [[n, k, s["count"], _ttl(s["min"]), _ttl(s["p25"]), _ttl(s["median"]), _ttl(s["p75"]),
                     _ttl(s["p90"]), _ttl(s["max"])] for n, k, s in rows], numeric=(2,))
    return _figure(svg, caption, _legend(("access", "refresh")), table)


# -- the page -------------------------------------------------------------------------------------


def _tiles(totals: dict[str, Any]) -> str:
    decisions = totals["decisions"] or 0

    def share(n: int) -> str:
        return f"{100 * n / decisions:.1f}%" if decisions else "—"

    tiles = [(_count(decisions), "decisions"), (share(totals["deny"]), f"denied ({_count(totals['deny'])})"),
             (share(totals["step_up"]), f"step-up ({_count(totals['step_up'])})"),
             (_ttl(totals["median_access_ttl"]), "median access lifetime"),
             (_ttl(totals["median_refresh_ttl"]), "median refresh lifetime"),
             (_count(totals["events"]), "events reported"), (_count(totals["failures"]), "failures reported"),
             (_count(totals["subjects"]), "distinct subjects"), (_count(totals["countries"]), "countries")]
    return '<div class="tiles">' + "".join(f'<div class="tile"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
                                           for v, k in tiles) + "</div>"


def render_html(report: dict[str, Any]) -> str:
    """The whole report page for a :func:`~ttlpolicy.report.collect.build_report` result."""
    rng = report["range"]
    span = f"{rng['from'] or rng['first'] or '—'} to {rng['to'] or rng['last'] or '—'}"
    files = ", ".join(s["file"] for s in report["sources"]) or "no files"
    never = report["rules"]["never_matched"]
    if never is None:
        never_html = ('<p class="note">Which rules never matched needs the policies: run '
                      "<code>ttlpolicy report --policies DIR …</code>.</p>")
    elif never:
        never_html = ('<p class="note">Rules that matched no decision in this range (candidates for review):</p>'
                      '<ul class="never">' + "".join(f"<li>{escape(r['policy'])} / <b>{escape(r['rule'])}</b></li>"
                                                     for r in never) + "</ul>")
    else:
        never_html = '<p class="note">Every rule matched at least once.</p>'
    skipped = report["skipped"]
    skipped_html = ""
    if skipped["total"]:
        skipped_html = (f"<h2>Lines skipped</h2><p class=\"note\">{_count(skipped['total'])} line(s) were neither a "
                        "decision nor an event and were left out:</p><table>"
                        + "".join(f"<tr><td>{escape(s['file'])}:{s['line']}</td><td>{escape(s['message'])}</td></tr>"
                                  for s in skipped["first"]) + "</table>")
    errors = report["errors"]
    sections = [
        "<h2>Usage over time</h2>", timeline_chart(report["timeline"]),
        "<h2>Where from</h2>",
        stacked_bars(report["countries"], "country", "Decisions by country", "countries",
                     "Decisions per country (location.country; events by their country), top 15.", extra="events"),
        stacked_bars(report["clients"], "client", "Decisions by client", "clients",
                     "Decisions per client (client.id), top 15.", extra="events"),
        "<h2>Lifetimes</h2>",
        lifetime_chart(report["lifetimes"]["by_tier"], "Lifetimes by tier", "lifetimes-tier",
                       "Allowed lifetimes by sector tier: the box spans the middle half, the dark mark is the "
                       "median, the whisker runs from the shortest to the longest (logarithmic axis). Refresh "
                       "lifetimes count issued refresh tokens only; the label says how often none was issued."),
        lifetime_chart(report["lifetimes"]["by_policy"], "Lifetimes by policy", "lifetimes-policy",
                       "Allowed lifetimes by policy."),
        "<h2>Denials and step-up</h2>",
        ranked_bars(report["deny_reasons"], lambda r: r["reason"], "Deny reasons", "deny-reasons",
                    "Why decisions were denied.", COLORS["deny"]),
        ranked_bars(report["step_up_reasons"], lambda r: r["reason"], "Step-up reasons", "step-up-reasons",
                    "Why a second factor was demanded.", COLORS["step_up"]),
        "<h2>Errors</h2>",
        ranked_bars(errors["failures"], lambda r: f"{r['type']}: {r['reason']}", "Failures reported",
                    "failures", "Failed authentications, refreshes and bad signatures, by reason.", COLORS["failures"]),
        ranked_bars(errors["rule_errors"], lambda r: f"{r['policy']} / {r['rule']}", "Rule evaluation errors",
                    "rule-errors", "Rules whose condition could not be evaluated (their tightening effects applied).",
                    COLORS["neutral"]),
        "<h2>Rules</h2>",
        ranked_bars(report["rules"]["matched"], lambda r: f"{r['policy']} / {r['rule']}", "Rules matched most",
                    "rules", "The rules that matched most often, top 15.", COLORS["events"]),
        never_html,
        skipped_html,
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ttlpolicy usage report, {escape(span)}</title><style>{_CSS}</style></head><body><main>"
            f"<h1>Token lifetimes: usage report</h1><p class=\"lead\">{escape(span)} (UTC) · from {escape(files)} · "
            f"generated {escape(report['generated_at'])}</p>"
            + _tiles(report["totals"]) + "".join(sections) + "</main></body></html>\n")
