"""Heat-maps and change maps: axes, bounds, cells that agree with ``decide``, and the CLI pictures."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from ttlpolicy import load_policies
from ttlpolicy.cli.main import main
from ttlpolicy.heatmap import (DENY_COLOR, LONGER_COLOR, SAME_COLOR, GridError, GridTimeout, change_direction,
                               change_map, heatmap, make_axis, short_duration)
from ttlpolicy.policyset import load_sources

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


@pytest.fixture(scope="module")
def bundled():
    return load_policies(POLICIES)


def test_every_cell_is_the_decision_for_its_context(bundled):
    policy = bundled.get()
    grid = heatmap(policy, "time.hour", "device.trust", fixed={"tier": "finance"})
    assert len(grid.cells) == 24 * 4
    assert grid.x.values == tuple(range(24)) and grid.y.values == ("managed", "compliant", "known", "unmanaged")
    for cell in grid.cells:
        assert cell.now.astimezone(policy.context.default_zone).hour == grid.x.values[cell.x]
        assert cell.context["device"]["trust"] == grid.y.values[cell.y]
        again = bundled.decide(cell.context, now=cell.now)
        assert cell.decision is not None
        assert (cell.decision.allow, cell.decision.access_ttl, cell.decision.refresh_ttl) == \
            (again.allow, again.access_ttl, again.refresh_ttl)
    night, day = grid.cell(3, 3).decision, grid.cell(12, 3).decision
    assert night.access_ttl < day.access_ttl and "off-hours" in night.matched


def test_derived_axes_move_the_instant_and_the_address(bundled):
    policy = bundled.get()
    grid = heatmap(policy, "time.weekday", "location.zone")
    zones = [*policy.document.zones, "none"]
    assert list(grid.y.values) == zones
    for cell in grid.cells:
        activation = policy.context.activation(cell.context, cell.now)
        assert activation["time"]["weekday"] == grid.x.values[cell.x]
        assert activation["location"]["zone"] == grid.y.values[cell.y]


def test_denies_and_step_ups_are_kept_and_coloured(bundled):
    policy = bundled.get()
    grid = heatmap(policy, "tier", "device.trust", fixed={"resource": {"sensitivity": "restricted"}})
    data = grid.to_dict()
    government = grid.y.values.index("unmanaged"), grid.x.values.index("government")
    cell = data["cells"][government[0] * len(grid.x.values) + government[1]]
    assert cell["decision"]["allow"] is False and cell["colors"]["access"] == DENY_COLOR
    assert any(c["decision"]["step_up"] for c in data["cells"] if c["decision"]["allow"])  # restricted without MFA
    assert data["legend"]["access"]["ticks"] == [{"seconds": 300, "label": "5m", "position": 1.0}]  # one value
    ticks = heatmap(policy, "tier", "resource.sensitivity").to_dict()["legend"]["access"]["ticks"]
    assert ticks[0]["position"] == 0.0 and ticks[-1]["position"] == 1.0 and ticks[0]["seconds"] == 300


@pytest.mark.parametrize("x, y, values, code, path", [
    ("time.hour", "nope", None, "unknown-attribute", "y.attribute"),
    ("time.hour", "location.country", None, "values-required", "y.values"),
    ("time.hour", "user.risk", [0.5, 2.0], "invalid-value", "y.values[1]"),
    ("time.hour", "time.now", None, "values-required", "y.values"),
    ("time.hour", "time.hour", None, "invalid-value", "y.attribute"),
    ("time.hour", "device.trust", ["managed", "rooted"], "invalid-value", "y.values[1]"),
])
def test_bad_axes_are_refused_with_their_path(bundled, x, y, values, code, path):
    policy = bundled.get()
    with pytest.raises(GridError) as caught:
        axis = make_axis(policy, y, values, "y") if values is not None else y
        heatmap(policy, x, axis)
    assert (caught.value.errors[0].code, caught.value.errors[0].path) == (code, path)


def test_bounds_cells_fixed_context_and_time(bundled):
    policy = bundled.get()
    with pytest.raises(GridError) as too_big:
        heatmap(policy, "time.hour", "device.trust", max_cells=95)
    assert too_big.value.code == "grid-too-large" and "96 cells" in str(too_big.value)
    with pytest.raises(GridError) as bad_fixed:
        heatmap(policy, "time.hour", "device.trust", fixed={"user": {"risk": 7}})
    assert bad_fixed.value.code == "invalid-context" and bad_fixed.value.errors[0].path == "fixed.user.risk"
    with pytest.raises(GridTimeout) as slow:
        heatmap(policy, "time.hour", "device.trust", time_budget=0.0)
    assert slow.value.code == "compute-time-exceeded"


def test_numeric_axes_default_to_eleven_steps(bundled):
    axis = make_axis(bundled.get(), "user.risk")
    assert axis.values[0] == 0.0 and axis.values[-1] == 1.0 and len(axis.values) == 11


def test_short_labels():
    assert short_duration(450) == "7m30s" and short_duration(23040) == "6h24m"
    assert short_duration(3 * 86400 + 3600 + 61) == "~3d"


CHANGED = """\
  - name: unmanaged-device
    description: Personal or unknown devices get short access tokens and short sessions.
    when: device.trust == "unmanaged"
    access_ttl: {multiply: 0.5, cap: 30m}
"""


def _edited(bundled, old: str, new: str):
    sources = dict(bundled.sources)
    file = next(f for f in sources if f.endswith("workforce.yaml"))
    assert old in sources[file]
    sources[file] = sources[file].replace(old, new)
    return load_sources(sources)


def test_change_map_marks_longer_and_shorter(bundled):
    head = _edited(bundled, "access_ttl: {multiply: 0.5}\n    refresh_ttl: {cap: 12h}",
                   "access_ttl: {multiply: 0.8}\n    refresh_ttl: {cap: 12h}")  # off-hours is gentler
    grid = change_map(bundled.get(), head.get(), "time.hour", "device.trust")
    data = grid.to_dict()
    night, noon = grid.cell(2, 0), grid.cell(12, 0)
    assert change_direction(night.base, night.head, "access") == "longer"
    assert "access longer" in [k for k, _ in night.kinds]
    assert noon.kinds == [] and data["cells"][12]["colors"]["access"] == SAME_COLOR
    assert data["changed"] == 8 * 4  # 22:00-05:59 on every device
    assert data["cells"][2]["colors"]["access"] != SAME_COLOR
    assert change_direction(night.base, night.head, "refresh") == "same"


def test_change_map_deny_to_allow_is_a_loosening(bundled):
    head = _edited(bundled, 'deny: government tenants require a managed device', 'step_up: managed device advised')
    grid = change_map(bundled.get(), head.get(), "tier", "device.trust")
    cell = grid.cell(grid.x.values.index("government"), grid.y.values.index("unmanaged"))
    assert [k for k, _ in cell.kinds] == ["deny→allow"]
    assert grid.to_dict()["cells"][cell.y * len(grid.x.values) + cell.x]["colors"]["access"] == LONGER_COLOR


# -- the CLI --------------------------------------------------------------------------------

def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["heatmap", "--policies", str(POLICIES), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_svg_has_one_cell_per_decision_with_a_tooltip(capsys):
    code, out, _ = _run(capsys, "--x", "time.hour", "--y", "device.trust", "--set", "tier=finance")
    assert code == 0 and out.startswith("<svg")
    assert len(re.findall(r'<g class="cell"', out)) == 96
    assert "tier=finance" in out and "<title>time.hour=03, device.trust=unmanaged" in out


def test_cli_json_cell_matches_decide(capsys, tmp_path):
    code, out, _ = _run(capsys, "--x", "time.hour", "--y", "user.risk", "--y-values", "0,0.5",
                        "--set", "tier=finance", "--set", "device.trust=managed", "--set", "user.mfa=true",
                        "--format", "json")
    data = json.loads(out)
    cell = data["cells"][1 * 24 + 23]
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps(cell["context"]))
    assert main(["decide", "--policies", str(POLICIES), "--context", str(ctx), "--now", cell["now"]]) == 0
    decided = json.loads(capsys.readouterr().out)
    assert decided["access_ttl"] == cell["decision"]["access_ttl"] and decided["matched"] == cell["decision"]["matched"]
    assert cell["context"] == {"tier": "finance", "device": {"trust": "managed"}, "user": {"mfa": True, "risk": 0.5}}


def test_cli_png_and_html(capsys, tmp_path):
    pytest.importorskip("cairosvg")
    png = tmp_path / "h.png"
    code, _, _ = _run(capsys, "--x", "tier", "--y", "resource.sensitivity", "--format", "png", "-o", str(png),
                      "--lifetime", "refresh")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = _run(capsys, "--x", "tier", "--y", "resource.sensitivity", "--format", "html")
    assert code == 0 and out.startswith("<!doctype html>") and "<svg" in out and "<script" not in out
    assert "http://" not in out.replace("http://www.w3.org/2000/svg", "")


@pytest.mark.parametrize("argv, message", [
    (["--x", "time.hour", "--y", "nope"], "unknown-attribute"),
    (["--x", "time.hour", "--y", "user.risk", "--y-values", "a"], "'a' is not a double"),
    (["--x", "time.hour", "--y", "device.trust", "--set", "tier"], "ATTR=VALUE"),
    (["--x", "time.hour", "--y", "device.trust", "--set", "tier=mars"], "fixed.tier"),
    (["--x", "time.hour", "--y", "device.trust", "--max-cells", "10"], "grid-too-large"),
    (["--x", "time.hour", "--y", "device.trust", "--policy", "nope"], "unknown policy"),
])
def test_cli_errors_exit_2_with_the_reason(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and message in err


def test_cli_set_moves_derived_time(capsys):
    code, out, _ = _run(capsys, "--x", "tier", "--y", "device.trust", "--set", "time.hour=3", "--format", "json")
    data = json.loads(out)
    assert code == 0 and all(datetime.fromisoformat(c["now"]).hour == 3 for c in data["cells"])
    assert all("off-hours" in c["decision"]["matched"] for c in data["cells"] if c["decision"]["allow"])


def test_cli_diff_html_draws_a_change_map_per_group(capsys, tmp_path):
    head = tmp_path / "head"
    head.mkdir()
    for file in POLICIES.glob("*.yaml"):
        text = file.read_text()
        if file.name == "workforce.yaml":
            text = text.replace("access_ttl: {multiply: 0.5}\n    refresh_ttl: {cap: 12h}",
                                "access_ttl: {multiply: 0.8}\n    refresh_ttl: {cap: 12h}")
        (head / file.name).write_text(text)
    code = main(["diff", str(POLICIES), str(head), "--format", "html", "--max-scenarios", "500"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("<!doctype html>") and "<script" not in out
    maps = out.count("<svg")
    assert maps >= 1 and out.count('<g class="cell"') == 96 * maps
    assert "LOOSENS" in out and "access longer" in out and "No decision changes in the scenario grid." in out
    assert "+" in re.search(r'<g class="cell" data-x="2" data-y="0">.*?</g>', out, re.S).group(0)  # 02:30 longer
    code = main(["diff", str(POLICIES), str(head), "--format", "html", "--max-scenarios", "500", "--y", "nope"])
    assert code == 0 and "no change map over time.hour × nope" in capsys.readouterr().out
