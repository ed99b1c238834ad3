"""Heat-maps as files: SVG (every cell with a ``<title>`` tooltip), a self-contained HTML page, PNG.

The colours come from :mod:`ttlpolicy.heatmap`, so the CLI's pictures and the service's page
show the same thing. Nothing here fetches anything: fonts are the reader's own, styles inline.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

from .durations import format_duration
from .heatmap import (CHANGE_LEGEND, DENY_COLOR, LIFETIMES, NO_TOKEN_COLOR, REFUSED_COLOR, ChangeMap, Heatmap,
                      LogScale, cell_color, change_color, change_direction, short_duration, text_color)

CELL_W, CELL_H = 44, 30
CHANGE_CELL_W = 52  # room for a sign and five characters: "+2m29s"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
STEP_UP_COLOR = "#ff9f1c"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ttl(seconds: int) -> str:
    return format_duration(seconds) if seconds else "0s"


def _fixed_text(fixed: dict[str, Any] | None) -> str:
    if not fixed:
        return ""
    parts = []
    for key, value in fixed.items():
        if isinstance(value, dict):
            parts += [f"{key}.{k}={_plain(v)}" for k, v in value.items()]
        else:
            parts.append(f"{key}={_plain(value)}")
    return ", ".join(parts)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after ", " or " · " where possible."""
    lines: list[str] = []
    while len(text) > width:
        cut = max(text.rfind(", ", 0, width), text.rfind(" · ", 0, width))
        cut = cut + 1 if cut > 0 else width
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip(" ·")
    return lines + [text]


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class _Canvas:
    """The frame both pictures share: title, axis labels, a cell grid, a legend row below."""

    def __init__(self, title: str, subtitle: str, x_name: str, x_labels: Sequence[str], y_name: str,
                 y_labels: Sequence[str], cell_w: int = CELL_W):
        self.cell_w = w = cell_w
        self.left = 24 + max([len(y_name) * 7] + [len(label) * 7 + 12 for label in y_labels])
        self.cols, self.rows = len(x_labels), len(y_labels)
        self.width = max(self.left + self.cols * w + 24, 640)
        lines = _wrap(subtitle, (self.width - 32) // 6)
        self.top = 86 + 15 * (len(lines) - 1)
        self.grid_bottom = self.top + self.rows * CELL_H
        self.parts: list[str] = [
            f'<text x="16" y="24" font-size="16" font-weight="bold">{_e(title)}</text>',
            *(f'<text x="16" y="{44 + 15 * i}" font-size="11.5" fill="#444444">{_e(line)}</text>'
              for i, line in enumerate(lines)),
            f'<text x="{self.left}" y="{self.top - 26}" font-size="12" font-weight="bold">{_e(x_name)} →</text>',
            f'<text x="16" y="{self.top - 8}" font-size="12" font-weight="bold">{_e(y_name)} ↓</text>',
        ]
        for i, label in enumerate(x_labels):
            self.parts.append(f'<text x="{self.left + i * w + w / 2}" y="{self.top - 8}" font-size="11" '
                              f'text-anchor="middle">{_e(label)}</text>')
        for j, label in enumerate(y_labels):
            self.parts.append(f'<text x="{self.left - 8}" y="{self.top + j * CELL_H + CELL_H / 2 + 4}" '
                              f'font-size="11" text-anchor="end">{_e(label)}</text>')

    def cell(self, x: int, y: int, fill: str, label: str, tooltip: str, step_up: bool = False) -> None:
        w = self.cell_w
        cx, cy = self.left + x * w, self.top + y * CELL_H
        out = [f'<g class="cell" data-x="{x}" data-y="{y}"><title>{_e(tooltip)}</title>',
               f'<rect x="{cx}" y="{cy}" width="{w}" height="{CELL_H}" fill="{fill}" stroke="#ffffff"/>']
        if step_up:
            out.append(f'<path d="M{cx + w - 12},{cy + 1} L{cx + w - 1},{cy + 1} L{cx + w - 1},'
                       f'{cy + 12} Z" fill="{STEP_UP_COLOR}" stroke="#000000" stroke-width="0.6"/>')
        out.append(f'<text x="{cx + w / 2}" y="{cy + CELL_H / 2 + 4}" font-size="10.5" text-anchor="middle" '
                   f'fill="{text_color(fill)}">{_e(label)}</text></g>')
        self.parts.append("".join(out))

    def swatches(self, y: int, items: Sequence[tuple[str, str, bool]], x: int = 16) -> None:
        for label, color, triangle in items:
            if triangle:
                self.parts.append(f'<path d="M{x},{y} L{x + 14},{y} L{x + 14},{y + 14} Z" fill="{color}" '
                                  'stroke="#000000" stroke-width="0.6"/>')
            else:
                self.parts.append(f'<rect x="{x}" y="{y}" width="14" height="14" fill="{color}" stroke="#999999"/>')
            self.parts.append(f'<text x="{x + 20}" y="{y + 11}" font-size="11">{_e(label)}</text>')
            x += 34 + len(label) * 6

    def svg(self, height: int) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
                f'viewBox="0 0 {self.width} {height}" font-family="{FONT}" role="img">'
                f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(self.parts) + "</svg>\n")


def heatmap_svg(grid: Heatmap, lifetime: str = "access", fixed: dict[str, Any] | None = None) -> str:
    """One policy's lifetimes as SVG: viridis on a log scale, denies dark, step-ups flagged."""
    if lifetime not in LIFETIMES:
        raise ValueError(f"lifetime must be one of {LIFETIMES}")
    scale = LogScale.spanning(grid.lifetimes(lifetime))
    subtitle = f"{lifetime} token lifetime · {grid.policy.digest[:19]}"
    if fixed:
        subtitle += f" · {_fixed_text(fixed)}"
    canvas = _Canvas(f"ttlpolicy heat-map: policy {grid.policy.name}", subtitle, grid.x.attribute,
                     grid.x.labels, grid.y.attribute, grid.y.labels)
    x_labels, y_labels = grid.x.labels, grid.y.labels
    for c in grid.cells:
        where = f"{grid.x.attribute}={x_labels[c.x]}, {grid.y.attribute}={y_labels[c.y]}"
        d = c.decision
        if d is None:
            reasons = "; ".join(f"{p.path}: {p.message}" for p in c.refused or ())
            canvas.cell(c.x, c.y, REFUSED_COLOR, "—", f"{where}\ncontext refused: {reasons}")
            continue
        if not d.allow:
            canvas.cell(c.x, c.y, DENY_COLOR, "deny", f"{where}\nDENY: {d.deny_reason}\nmatched: "
                        f"{', '.join(d.matched)}")
            continue
        seconds = d.access_ttl if lifetime == "access" else d.refresh_ttl
        lines = [where, f"access {_ttl(d.access_ttl)}, refresh {_ttl(d.refresh_ttl)}"]
        if d.step_up:
            lines.append(f"step-up: {'; '.join(d.step_up_reasons)}")
        lines.append(f"matched: {', '.join(d.matched) or '(none)'}")
        lines += [f"  {s.target} {s.step} {s.value if s.value is not None else ''} → {_ttl(s.result)}"
                  f"{' (' + s.rule + ')' if s.rule else ''}" for s in d.trace if s.target.endswith("_ttl")]
        canvas.cell(c.x, c.y, cell_color(d, lifetime, scale), short_duration(seconds) if seconds else "0",
                    "\n".join(lines), d.step_up)
    y = canvas.grid_bottom + 24
    legend = scale.legend()
    bar_w = 320
    stops = "".join(f'<stop offset="{s["offset"]:.3f}" stop-color="{s["color"]}"/>' for s in legend["stops"])
    canvas.parts.append(f'<defs><linearGradient id="scale">{stops}</linearGradient></defs>'
                        f'<text x="16" y="{y + 11}" font-size="11">{_e(lifetime)} lifetime</text>'
                        f'<rect x="110" y="{y}" width="{bar_w}" height="14" fill="url(#scale)" stroke="#999999"/>')
    for tick in legend["ticks"]:
        tx = 110 + tick["position"] * bar_w
        canvas.parts.append(f'<line x1="{tx:.1f}" y1="{y + 14}" x2="{tx:.1f}" y2="{y + 19}" stroke="#000000"/>'
                            f'<text x="{tx:.1f}" y="{y + 31}" font-size="10.5" text-anchor="middle">'
                            f'{_e(tick["label"])}</text>')
    items = [("deny", DENY_COLOR, False), ("step-up required", STEP_UP_COLOR, True),
             ("context refused", REFUSED_COLOR, False)]
    if lifetime == "refresh":
        items.insert(1, ("no refresh token", NO_TOKEN_COLOR, False))
    canvas.swatches(y + 44, items)
    return canvas.svg(y + 70)


def _delta_label(a: int, b: int) -> str:
    if a == b:
        return ""
    return ("+" if b > a else "−") + short_duration(abs(b - a))


def change_svg(grid: ChangeMap, lifetime: str = "access", fixed: dict[str, Any] | None = None) -> str:
    """Two versions as SVG: red where a token may live longer (or a deny became an allow), blue
    where it got shorter or stricter, purple where both happen; each cell says by how much."""
    changed = sum(1 for c in grid.cells if change_direction(c.base, c.head, lifetime) != "same")
    subtitle = f"{lifetime} token lifetime: {changed} of {len(grid.cells)} cells change"
    if fixed:
        subtitle += f" · {_fixed_text(fixed)}"
    canvas = _Canvas(f"ttlpolicy diff: policy {grid.head.name}", subtitle, grid.x.attribute, grid.x.labels,
                     grid.y.attribute, grid.y.labels, cell_w=CHANGE_CELL_W)
    for c in grid.cells:
        where = f"{grid.x.attribute}={grid.x.labels[c.x]}, {grid.y.attribute}={grid.y.labels[c.y]}"
        before, after = c.base, c.head
        if before.allow != after.allow:
            label = "allow" if after.allow else "deny"
        elif not after.allow:
            label = "deny"
        else:
            a, b = (before.access_ttl, after.access_ttl) if lifetime == "access" else (before.refresh_ttl,
                                                                                       after.refresh_ttl)
            label = _delta_label(a, b)
        tooltip = (f"{where}\nbefore: {_outcome(before)}\nafter: {_outcome(after)}"
                   + (f"\n{', '.join(k for k, _ in c.kinds)}" if c.kinds else "\nunchanged"))
        canvas.cell(c.x, c.y, change_color(before, after, lifetime), label, tooltip,
                    after.step_up and not before.step_up)
    items = [(str(item["label"]), str(item["color"]), False) for item in CHANGE_LEGEND]
    items.append(("step-up added", STEP_UP_COLOR, True))
    canvas.swatches(canvas.grid_bottom + 24, items)
    return canvas.svg(canvas.grid_bottom + 52)


def _outcome(o: Any) -> str:
    if o.refused:
        return f"context refused ({o.refused})"
    if not o.allow:
        return "DENY"
    return f"access {_ttl(o.access_ttl)}, refresh {_ttl(o.refresh_ttl)}" + (" + step-up" if o.step_up else "")


_PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
figure { margin: 1rem 0; overflow-x: auto; } figure svg { max-width: 100%; height: auto; } svg .cell:hover rect { stroke: #000; stroke-width: 2; }
table { border-collapse: collapse; font-size: .9rem; } th, td { text-align: left; padding: .3rem .6rem;
border-bottom: 1px solid #ddd; vertical-align: top; } .loosen { color: #a02618; font-weight: 600; }
.tighten { color: #17508a; } code { font-size: .85rem; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (inline style, no scripts, nothing fetched)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_PAGE_STYLE}</style></head><body>\n"
            f"<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def svg_to_png(svg: str) -> bytes:
    """PNG bytes of ``svg``, drawn by cairosvg (the ``png`` extra); raises ``RuntimeError`` without it."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: cairocffi found no libcairo
        raise RuntimeError("PNG output needs cairosvg and the cairo library: pip install 'ttlpolicy[png]' "
                           f"(and apt-get install libcairo2) ({exc})") from None
    png: bytes = cairosvg.svg2png(bytestring=svg.encode(), scale=2.0)
    return png
