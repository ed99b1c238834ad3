"""Issue 10's "done when", end to end on one machine: a burst of refreshes for one user from new
countries shortens that user's next tokens, trips a detector that disables refresh and posts a
signed webhook, shows on the dashboard's metrics, and appears in the next usage report."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from ttlpolicy.cli.main import main
from ttlpolicy.server import Settings, create_app
from webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BURST_COUNTRIES = ["BR", "NG", "VN", "RU", "ID"]


def iso(offset: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def decide(client: TestClient, user: str, country: str) -> dict[str, Any]:
    response = client.post("/v1/decide", json={"context": {
        "user": {"id": user}, "client": {"id": "web"}, "location": {"country": country, "ip": "198.51.100.7"}}})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_refresh_burst_from_new_countries_end_to_end(tmp_path: Path) -> None:
    decisions_log, events_log = tmp_path / "decisions.jsonl", tmp_path / "events.jsonl"
    with Receiver(SECRET) as receiver:
        settings = Settings.model_validate({
            "policies": str(ROOT / "examples" / "activity" / "policies"), "reload": {"watch": False},
            "state": f"sqlite:///{tmp_path}/state.db",
            "decision_log": {"sink": "file", "path": str(decisions_log)},
            "activity": {"event_log": {"sink": "file", "path": str(events_log)}, "detectors": [{
                "name": "refresh-burst", "events": ["token.refreshed"], "per": "subject",
                "threshold": {"count": 10, "within": "10m"}, "respond": ["disable_refresh"], "for": "1h"}]},
            "webhooks": {"endpoints": [{"name": "soc", "url": receiver.url, "secret": SECRET}],
                         "retry_delays": [0.1, 0.2], "dead_letter": str(tmp_path / "dead.jsonl")}})
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            # Before: alice signs in from Germany, as usual.
            decide(client, "alice", "DE")
            before = decide(client, "alice", "DE")
            assert before["matched"] == ["calm-regular-user"]
            assert (before["access_ttl"], before["refresh_ttl"]) == (5400, 86400)
            # The burst: 25 refreshes in four minutes from five countries alice was never seen in.
            burst = [{"id": f"burst-{i}", "type": "token.refreshed", "subject": "alice", "client": "web",
                      "session": "fam-1", "country": BURST_COUNTRIES[i % 5], "ip": f"203.0.113.{i + 1}",
                      "time": iso(-240 + i * 9)} for i in range(25)]
            answer = client.post("/v1/events", json={"events": burst}).json()
            assert answer["accepted"] == 25
            [detection] = answer["detections"]
            assert detection["detector"] == "refresh-burst" and detection["key"] == "alice"
            # After: alice's next tokens are short, her refresh is off, and the trace says why.
            after = decide(client, "alice", "BR")
            values = after["activity"]["values"]
            assert values["refreshes_1h"] == 25 and values["countries_24h"] == 6 and "ips_24h" not in values
            assert {"refresh-burst", "many-countries"} <= set(after["matched"])
            assert after["access_ttl"] == 300 and after["refresh_ttl"] == 0
            assert after["access_ttl"] < before["access_ttl"]
            automatic = [s for s in after["trace"] if s["step"] == "automatic"]
            assert automatic and automatic[0]["source"].startswith(f"action {detection['actions'][0]}")
            # Nobody else is affected.
            decide(client, "bob", "DE")
            assert decide(client, "bob", "DE")["refresh_ttl"] == 86400
            # The signed webhook.
            deadline = time.monotonic() + 10
            while len(receiver.delivered()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            metrics = client.get("/metrics").text
        hooks = receiver.delivered()
        assert [h.body["type"] for h in hooks if h.body] == ["action.applied", "detector.fired"]
        assert all(h.verified for h in receiver.attempts)
        fired = hooks[1].body["data"] if hooks[1].body else {}
        assert fired["detector"] == "refresh-burst" and fired["evidence"]["count"] == 25

    # On the dashboard: the panels for refresh rate, detector firings and automatic actions have data.
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ttlpolicy.json").read_text())
    queries = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]}
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line and not line.startswith("#")}
    for title, sample in [("Refresh rate", 'ttlpolicy_events_total{type="token.refreshed"}'),
                          ("Detector firings", 'ttlpolicy_detector_firings_total{detector="refresh-burst"}'),
                          ("Automatic actions",
                           'ttlpolicy_automatic_actions_total{action="disable_refresh",cause="detector"}')]:
        assert re.search(re.escape(sample.split("{")[0]), queries[title]), title
        assert samples[sample] >= 1, sample
    assert samples['ttlpolicy_events_total{type="token.refreshed"}'] == 25

    # In the next usage report.
    report_file = tmp_path / "report.json"
    assert main(["report", str(decisions_log), str(events_log), "--format", "json", "-o", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert report["totals"]["decisions"] == 5 and report["totals"]["events"] == 25
    assert {"type": "token.refreshed", "count": 25} in report["event_types"]
    countries = {c["country"]: c for c in report["countries"]}
    assert all(countries[c]["events"] == 5 for c in BURST_COUNTRIES)
    matched = {r["rule"]: r["count"] for r in report["rules"]["matched"]}
    assert matched["refresh-burst"] == 1 and matched["many-countries"] == 1
    assert report["lifetimes"]["by_policy"]["adaptive"]["no_refresh_token"] == 1
    assert sum(b["events"] for b in report["timeline"]["buckets"]) == 25
