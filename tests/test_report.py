"""`ttlpolicy report`: exact sums over decision and event logs, ranges, bad lines at their line,
and one self-contained HTML file."""

from __future__ import annotations

import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ttlpolicy.cli.main import main
from ttlpolicy.report import build_report, render_html
from usage_logs import ROOT, write_logs


def decision(time: str, *, allow: bool = True, step_up: bool = False, access: int = 900, refresh: int = 3600,
             tier: str = "standard", policy: str = "workforce", country: str | None = "DE",
             matched: list[str] | None = None, **extra: Any) -> str:
    context: dict[str, Any] = {"tier": tier, "client": {"id": "web"}, "user": {"id": "alice"}}
    if country:
        context["location"] = {"country": country}
    line = {"decision_id": f"d-{time}", "time": time, "caller": {"kind": "anonymous", "id": "anonymous"},
            "policy": {"name": policy, "digest": "sha256:x"}, "context": context,
            "result": {"allow": allow, "access_ttl": access if allow else 0, "refresh_ttl": refresh if allow else 0,
                       "step_up": step_up, "deny_reason": None if allow else extra.pop("reason", "no")},
            "matched": matched or [], "latency_ms": 0.1, "tier": tier, **extra}
    return json.dumps(line)


def event(time: str, kind: str, **extra: Any) -> str:
    return json.dumps({"event_id": f"e-{time}-{kind}", "type": kind, "time": time, "subject": "alice", **extra})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_exact_sums(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [
        decision("2026-03-02T10:00:00Z", access=600, refresh=0, matched=["a", "b"]),
        decision("2026-03-02T10:01:00Z", access=900, refresh=7200, step_up=True, step_up_reasons=["new country"],
                 matched=["a"]),
        decision("2026-03-02T10:02:00Z", allow=False, reason="risk too high", tier="finance", country="US",
                 matched=["c"], rule_errors=["broken"]),
        decision("2026-03-02T10:03:00Z", access=1800, refresh=3600, tier="finance", country=None),
        event("2026-03-02T10:04:00Z", "auth.failed", reason="bad_password", country="US"),
        event("2026-03-02T10:05:00Z", "auth.failed", reason="bad_password"),
        event("2026-03-02T10:06:00Z", "token.refreshed", client="web"),
    ])
    report = build_report([log], known_rules={"workforce": ["a", "b", "c", "d"]})
    totals = report["totals"]
    assert (totals["decisions"], totals["allow"], totals["step_up"], totals["deny"]) == (4, 2, 1, 1)
    assert (totals["events"], totals["failures"], totals["subjects"]) == (3, 2, 1)
    assert totals["median_access_ttl"] == 900  # of the allowed ones: 600, 900, 1800
    standard = report["lifetimes"]["by_tier"]["standard"]
    assert standard["decisions"] == 2 and standard["no_refresh_token"] == 1
    assert standard["access_ttl"]["min"] == 600 and standard["access_ttl"]["max"] == 900
    assert standard["refresh_ttl"] == {"count": 1, "min": 7200, "p25": 7200, "median": 7200, "p75": 7200,
                                       "p90": 7200, "max": 7200, "mean": 7200.0}
    assert report["lifetimes"]["by_tier"]["finance"]["decisions"] == 1  # the denied one has no lifetimes
    assert report["deny_reasons"] == [{"reason": "risk too high", "count": 1}]
    assert report["step_up_reasons"] == [{"reason": "new country", "count": 1}]
    assert report["errors"]["rule_errors"] == [{"policy": "workforce", "rule": "broken", "count": 1}]
    assert report["errors"]["failures"] == [{"type": "auth.failed", "reason": "bad_password", "count": 2}]
    assert report["rules"]["matched"] == [{"policy": "workforce", "rule": "a", "count": 2},
                                          {"policy": "workforce", "rule": "b", "count": 1},
                                          {"policy": "workforce", "rule": "c", "count": 1}]
    assert report["rules"]["never_matched"] == [{"policy": "workforce", "rule": "d"}]
    countries = {c["country"]: c for c in report["countries"]}
    assert countries["DE"]["decisions"] == 2 and countries["US"]["deny"] == 1 and countries["US"]["failures"] == 1
    assert countries["(unknown)"]["decisions"] == 1
    timeline = report["timeline"]
    assert timeline["bucket_seconds"] == 60 and len(timeline["buckets"]) == 7
    assert [b["allow"] + b["step_up"] + b["deny"] for b in timeline["buckets"]] == [1, 1, 1, 1, 0, 0, 0]
    assert [b["failures"] for b in timeline["buckets"]] == [0, 0, 0, 0, 1, 1, 0]


def test_range_is_half_open_and_counts_what_it_left_out(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [decision(f"2026-03-02T1{h}:00:00Z") for h in range(5)])
    from datetime import datetime, timezone
    start, end = datetime(2026, 3, 2, 11, tzinfo=timezone.utc), datetime(2026, 3, 2, 13, tzinfo=timezone.utc)
    report = build_report([log], start, end)
    assert report["totals"]["decisions"] == 2 and report["outside_range"] == 3
    assert report["range"]["first"] == "2026-03-02T11:00:00Z" and report["range"]["last"] == "2026-03-02T12:00:00Z"


def test_bad_lines_are_skipped_and_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "log.jsonl", [decision("2026-03-02T10:00:00Z"), "{not json", "[1, 2]",
                                         json.dumps({"hello": "world"}),
                                         json.dumps({"decision_id": "x", "time": "yesterday"}),
                                         json.dumps({"decision_id": "y", "time": "2026-03-02T10:00:00Z", "result": 3})])
    assert main(["report", str(log), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["totals"]["decisions"] == 1 and report["skipped"]["total"] == 5
    lines = err.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{log}:{n}:1" for n in (2, 3, 4, 5, 6)]
    assert all("warning[report-skipped-line]" in line for line in lines)
    assert "bad or missing time 'yesterday'" in lines[3]


def test_gzip_and_several_files(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.jsonl", [decision("2026-03-02T10:00:00Z")])
    packed = tmp_path / "b.jsonl.gz"
    with gzip.open(packed, "wt") as file:
        file.write(event("2026-03-02T10:00:00Z", "logout") + "\n")
    report = build_report([plain, packed])
    assert [(s["decisions"], s["events"]) for s in report["sources"]] == [(1, 0), (0, 1)]


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "log.jsonl", [decision("2026-03-02T10:00:00Z")])
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", str(log), "--from", "last tuesday"]) == 2
    assert "--from:" in capsys.readouterr().err
    assert main(["report", str(log), "--from", "2026-03-03T00:00:00Z", "--to", "2026-03-02T00:00:00Z"]) == 2
    assert main(["report", str(log), "--policies", str(tmp_path)]) == 2


def test_html_is_self_contained_and_escapes_everything(tmp_path: Path) -> None:
    hostile = '<script>alert(1)</script><img src="https://evil.example/x.png">'
    log = write(tmp_path / "log.jsonl", [
        decision("2026-03-02T10:00:00Z", allow=False, reason=hostile, country="DE"),
        decision("2026-03-02T10:05:00Z", matched=[hostile]),
    ])
    out = tmp_path / "report.html"
    assert main(["report", str(log), "--policies", str(ROOT / "policies"), "-o", str(out)]) == 0
    html = out.read_text()
    assert "&lt;script&gt;" in html

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
            self.styles: list[str] = []
            self._in_style = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append((tag, attrs))
            self._in_style = tag == "style"

        def handle_data(self, data: str) -> None:
            if self._in_style:
                self.styles.append(data)

    parsed = Tags()
    parsed.feed(html)
    names = {tag for tag, _ in parsed.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed"}
    # Nothing is loaded from anywhere: no src/href attribute, no url() or @import in the styles.
    assert not [a for _, attrs in parsed.tags for a, _ in attrs if a in ("src", "href", "xlink:href")]
    assert not re.search(r"url\(|@import|@font-face", "".join(parsed.styles))
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") >= 3


def test_empty_range_renders_without_charts(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [decision("2026-03-02T10:00:00Z")])
    from datetime import datetime, timezone
    report = build_report([log], start=datetime(2027, 1, 1, tzinfo=timezone.utc))
    html = render_html(report)
    assert "<svg" not in html and "nothing in this range" in html


def test_realistic_logs_from_the_bundled_policies(tmp_path: Path) -> None:
    decisions, events = write_logs(tmp_path, decisions=300, events=100)
    report = build_report([decisions, events])
    assert report["totals"]["decisions"] == 300 and report["totals"]["events"] == 100
    assert sum(b["allow"] + b["step_up"] + b["deny"] for b in report["timeline"]["buckets"]) == 300
    assert set(report["lifetimes"]["by_tier"]) <= {"standard", "finance", "healthcare", "public", "government"}
    # The decision log carries what the report groups by.
    first = json.loads(decisions.read_text().splitlines()[0])
    assert "tier" in first
