"""deploy/: the Prometheus rules pass promtool (syntax and their unit tests), and every metric that
the rules and the Grafana dashboard name is one the service exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from starlette.testclient import TestClient

from required import require_program
from ttlpolicy.server import Settings, create_app

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ttlpolicy.json"
METRIC = re.compile(r"\bttlpolicy_[a-z0-9_]+")
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("_sum", "_count", "_created"), "info": ("_info",)}


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = require_program("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def exported_metrics(tmp_path: Path) -> set[str]:
    """Every sample name the service can export, from a live app's /metrics (TYPE lines included)."""
    settings = Settings.model_validate({
        "policies": str(ROOT / "examples" / "activity" / "policies"), "decision_log": {"sink": "off"},
        "reload": {"watch": False}, "state": f"sqlite:///{tmp_path}/state.db"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.post("/v1/decide", json={"context": {"user": {"id": "alice"}, "client": {"id": "web"}}})
        text = client.get("/metrics").text
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            names |= {family + suffix for suffix in _SUFFIXES[kind]}
            if kind == "counter" and family.endswith("_total"):
                names.add(family)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, list[str]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [(p["title"], [t["expr"] for t in p.get("targets", [])]) for p in panels if p["type"] != "row"]


def test_every_metric_in_the_rules_and_the_dashboard_is_exported(tmp_path: Path) -> None:
    exported = exported_metrics(tmp_path)
    for expr in rule_expressions():
        for name in METRIC.findall(expr):
            assert name in exported, f"alerts.yaml names {name}, which the service does not export"
    queries = dashboard_queries()
    assert len(queries) >= 12
    for title, exprs in queries:
        assert exprs, f"dashboard panel {title!r} has no query"
        for expr in exprs:
            names = METRIC.findall(expr)
            assert names, f"dashboard panel {title!r}: {expr!r} names no ttlpolicy metric"
            for name in names:
                assert name in exported, f"dashboard panel {title!r} names {name}, which the service does not export"


def test_the_issue_metrics_are_on_the_dashboard() -> None:
    named = {n for _, exprs in dashboard_queries() for e in exprs for n in METRIC.findall(e)}
    assert {"ttlpolicy_tokens_created_total", "ttlpolicy_active_tokens", "ttlpolicy_token_expirations_5m",
            "ttlpolicy_events_total", "ttlpolicy_detector_firings_total", "ttlpolicy_automatic_actions_total",
            "ttlpolicy_policy_reload_degraded"} <= named
