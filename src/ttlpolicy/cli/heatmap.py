"""``ttlpolicy heatmap``: one policy's lifetimes over two dimensions, as SVG, PNG, HTML or JSON.

::

    ttlpolicy heatmap --x time.hour --y device.trust --set tier=finance --format svg > finance.svg

Exit 0 with a picture, 2 for usage, I/O, policy or grid errors (an unknown attribute, a value
the declaration refuses, a grid over ``--max-cells``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from .. import PolicyError, UnknownPolicyError, load_policies
from ..heatmap import GridError, assign, heatmap, make_axis, parse_value, reference_now
from ..heatmap_svg import figure, heatmap_svg, html_page, svg_to_png
from ..policyset import resolve_now
from .context_input import ContextInputError, read_context
from .output import fail, report


EXAMPLES = (
    'ttlpolicy heatmap --x time.hour --y device.trust -o heatmap.svg   # access lifetimes over a day',
    'ttlpolicy heatmap --x time.hour --y tier --set time.weekday=sat --lifetime refresh --format html -o sat.html',
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "heatmap", help="draw a policy's lifetimes over two dimensions",
        description="Decide every combination of two attributes (the rest fixed) and draw the access or refresh "
                    "lifetime as a heat-map: denies dark, step-ups flagged, every cell's decision in its tooltip. "
                    "Exit 0, or 2 for usage, I/O, policy or grid errors.")
    parser.add_argument("--policies", default="policies", metavar="DIR", help="policy directory (default: policies/)")
    parser.add_argument("--policy", metavar="NAME", help="policy to draw (default: the set's default policy)")
    parser.add_argument("--x", required=True, metavar="ATTR", help="attribute across, e.g. time.hour")
    parser.add_argument("--y", required=True, metavar="ATTR", help="attribute down, e.g. device.trust")
    parser.add_argument("--x-values", metavar="V,V,...", help="values of --x (default: all its declared values)")
    parser.add_argument("--y-values", metavar="V,V,...", help="values of --y (default: all its declared values)")
    parser.add_argument("--set", action="append", default=[], metavar="ATTR=VALUE",
                        help="fix an attribute for every cell, e.g. tier=finance or time.weekday=sat; repeatable")
    parser.add_argument("--context", metavar="FILE", help="a context JSON file to start from (--set overrides it)")
    parser.add_argument("--now", metavar="RFC3339",
                        help="decision instant before the axes move it (default: a Wednesday 12:30 in the "
                             "policy's time zone)")
    parser.add_argument("--lifetime", choices=["access", "refresh"], default="access", help="what colours the cells")
    parser.add_argument("--format", choices=["svg", "png", "html", "json"], default="svg",
                        help="svg (default), png, html (with tooltips) or json (the grid's numbers)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--max-cells", type=int, default=10000, metavar="N", help="refuse larger grids (default 10000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        policies = load_policies(args.policies)
    except PolicyError as exc:
        return fail("policy-load-failed", f"cannot load policies from {args.policies}", found=exc)
    try:
        policy = policies.get(args.policy)
    except UnknownPolicyError as exc:
        return fail("unknown-policy", str(exc))
    context: dict[str, Any] = {}
    if args.context:
        try:
            context = read_context(args.context, require_object=True)
        except ContextInputError as exc:
            return report([exc.problem], sources=exc.sources)
    try:
        now = resolve_now(args.now) if args.now else reference_now(policy)
    except ValueError as exc:
        return fail("usage", f"--now: {exc}")
    try:
        for item in args.set:
            name, sep, text = item.partition("=")
            if not sep:
                return fail("usage", f"--set {item!r}: write ATTR=VALUE")
            now = assign(policy, context, now, name, parse_value(policy, name, text))
        x = make_axis(policy, args.x, _values(policy, args.x, args.x_values), "x")
        y = make_axis(policy, args.y, _values(policy, args.y, args.y_values), "y")
        grid = heatmap(policy, x, y, fixed=context, now=now, max_cells=args.max_cells)
    except GridError as exc:
        return report([replace(error, path=error.path or "grid") for error in exc.errors])
    except (ValueError, KeyError) as exc:  # a --set or --x-values value the attribute's declaration refuses
        return fail("invalid-value", str(exc).strip("'\""))
    if args.format == "json":
        return _write(args.output, json.dumps(grid.to_dict(), indent=2, default=str) + "\n")
    svg = heatmap_svg(grid, args.lifetime, context)
    if args.format == "svg":
        return _write(args.output, svg)
    if args.format == "html":
        title = f"{policy.name}: {args.lifetime} lifetime by {grid.x.attribute} and {grid.y.attribute}"
        return _write(args.output, html_page(title, figure(svg, "Hover over a cell for its decision and trace.")))
    try:
        png = svg_to_png(svg)
    except RuntimeError as exc:
        return fail("missing-dependency", str(exc))
    return _write(args.output, png)


def _values(policy: Any, attribute: str, text: str | None) -> list[Any] | None:
    if text is None:
        return None
    return [parse_value(policy, attribute, item.strip()) for item in text.split(",") if item.strip()]


def _write(path: str | None, content: str | bytes) -> int:
    try:
        if path is None:
            if isinstance(content, bytes):
                sys.stdout.buffer.write(content)
            else:
                sys.stdout.write(content)
            return 0
        with open(path, "wb") as stream:
            stream.write(content if isinstance(content, bytes) else content.encode())
    except OSError as exc:
        return fail("io-error", f"cannot write {path}: {exc.strerror or exc}")
    return 0
