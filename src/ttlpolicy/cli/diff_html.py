"""``ttlpolicy diff --format html``: the diff as one self-contained page a CI job can attach to a
pull request: per policy, change maps of the access and refresh lifetimes over two dimensions,
then every group of changes with its example (the same groups as the text and JSON reports)."""

from __future__ import annotations

import html
import json
from typing import Any

from ..diffing import DiffReport, Group
from ..heatmap import GridError, change_map
from ..heatmap_svg import change_svg, figure, html_page
from ..policyset import PolicySet


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


MAX_MAPS = 6  # change maps per policy: one per group of changes, largest and loosening first


def _without(context: dict[str, Any], attribute: str) -> dict[str, Any]:
    """``context`` without ``attribute`` (and the IP, for ``location.zone``), so an axis can vary it."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in context.items()}
    for name in (attribute, "location.ip") if attribute == "location.zone" else (attribute,):
        namespace, _, leaf = name.partition(".")
        if leaf and isinstance(out.get(namespace), dict):
            out[namespace].pop(leaf, None)
        elif not leaf:
            out.pop(namespace, None)
    return out


def _group_map(number: int, group: Group, base: PolicySet, head: PolicySet, x: str, y: str) -> str:
    """The change map around one group's example: its context fixed, ``x`` and ``y`` varying."""
    example = group.example()
    lifetime = "refresh" if group.kind.startswith("refresh") else "access"
    fixed = _without(_without(example.context, x), y)
    try:
        grid = change_map(base.get(group.policy), head.get(group.policy), x, y, fixed, example.now)
    except GridError as exc:
        return f"<p>{number}. {_e(group.kind)}: no change map over {_e(x)} × {_e(y)} ({_e(exc)})</p>"
    caption = (f"{number}. {group.kind} ({group.count} scenarios): the {lifetime} lifetime around this group's "
               f"example, {x} and {y} varying; hover a cell for both decisions")
    return figure(change_svg(grid, lifetime, fixed), caption)


def html_report(report: DiffReport, base: PolicySet, head: PolicySet, x: str, y: str,
                summary: list[str], outcome_text: object) -> str:
    """The page. ``summary`` are the report's summary lines; ``outcome_text`` renders an outcome."""
    render = outcome_text if callable(outcome_text) else str
    parts = []
    if report.loosening:
        parts.append('<p class="loosen">⚠ This change makes some tokens live longer or allows what was denied.</p>')
    parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in summary) + "</ul>")
    for p in report.policies:
        parts.append(f"<h2>Policy {_e(p.policy)}</h2>")
        groups = [g for g in report.groups if g.policy == p.policy]
        if not groups:
            parts.append("<p>No decision changes in the scenario grid.</p>")
            continue
        for number, g in enumerate(groups[:MAX_MAPS], 1):
            parts.append(_group_map(number, g, base, head, x, y))
        rows = []
        for number, g in enumerate(groups, 1):
            ex = g.example()
            when = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in g.common.items()) or "—"
            rows.append(f'<tr><td>{number}</td><td class="{"loosen" if g.loosening else "tighten"}">'
                        f'{"LOOSENS" if g.loosening else "tightens"}: {_e(g.kind)}</td><td>{g.count}</td>'
                        f"<td><code>{_e(' '.join(g.rules) or '—')}</code></td><td>{_e(when)}</td>"
                        f"<td>{_e(render(ex.base))} → {_e(render(ex.head))}<br><code>"
                        f"{_e(json.dumps(ex.context, sort_keys=True))}</code> at {_e(ex.now.isoformat())}</td></tr>")
        parts.append("<table><thead><tr><th>#</th><th>change</th><th>scenarios</th><th>rules</th><th>when</th>"
                     "<th>example (before → after)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    for name in report.added:
        parts.append(f"<h2>Policy {_e(name)}</h2><p>Added: every decision is new.</p>")
    for name in report.removed:
        parts.append(f"<h2>Policy {_e(name)}</h2><p>Removed.</p>")
    return html_page("ttlpolicy diff", "\n".join(parts))
