"""Read decision logs and event logs and sum them up into one usage report (a JSON-ready dict).

The files are JSON lines as the service writes them: decision-log lines (``decision_id``,
``time``, ``policy``, ``context``, ``result``, ``matched`` ...) and event-log lines
(``event_id``, ``type``, ``time`` ...), in any mix and order, optionally gzip-compressed. A
line that is neither is skipped and reported at its ``file:line``; it never stops the report.
Everything is streamed: memory grows with the number of distinct values (minutes, countries,
rules, lifetimes), not with the number of lines.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

FAILURE_EVENTS = ("auth.failed", "refresh.failed", "token.bad_signature")
# Bucket widths for the timeline: the first that gives at most ~96 buckets over the span.
_WIDTHS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_SKIPPED_SHOWN = 20
_UTC = timezone.utc


@dataclass
class _Distribution:
    """Exact value counts (lifetimes take few distinct values), so percentiles are exact."""

    values: Counter[int] = field(default_factory=Counter)

    def add(self, value: int) -> None:
        self.values[value] += 1

    def summary(self) -> dict[str, Any]:
        total = sum(self.values.values())
        if not total:
            return {"count": 0}
        ordered = sorted(self.values.items())

        def quantile(q: float) -> int:
            rank, seen = max(1, math.ceil(q * total)), 0
            for value, count in ordered:
                seen += count
                if seen >= rank:
                    return value
            return ordered[-1][0]  # pragma: no cover - rank <= total

        return {"count": total, "min": ordered[0][0], "p25": quantile(0.25), "median": quantile(0.5),
                "p75": quantile(0.75), "p90": quantile(0.9), "max": ordered[-1][0],
                "mean": round(sum(v * c for v, c in ordered) / total, 1)}


@dataclass
class _Lifetimes:
    """Lifetimes of allowed decisions; refresh lifetimes only where a refresh token was issued."""

    access: _Distribution = field(default_factory=_Distribution)
    refresh: _Distribution = field(default_factory=_Distribution)
    decisions: int = 0
    no_refresh: int = 0

    def add(self, access: int, refresh: int) -> None:
        self.decisions += 1
        self.access.add(access)
        if refresh > 0:
            self.refresh.add(refresh)
        else:  # 0 means "no refresh token": a share of its own, not the bottom of a distribution
            self.no_refresh += 1

    def summary(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "access_ttl": self.access.summary(), "refresh_ttl": self.refresh.summary(),
                "no_refresh_token": self.no_refresh}


@dataclass
class Collector:
    """Adds log lines to running totals; :meth:`report` turns them into the report."""

    start: datetime | None = None
    end: datetime | None = None
    known_rules: dict[str, list[str]] | None = None  # policy -> rule names, to find rules never matched
    sources: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    skipped_total: int = 0
    outside: int = 0
    first: datetime | None = None
    last: datetime | None = None
    per_minute: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    outcomes: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    countries: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_tier: dict[str, _Lifetimes] = field(default_factory=lambda: defaultdict(_Lifetimes))
    by_policy: dict[str, _Lifetimes] = field(default_factory=lambda: defaultdict(_Lifetimes))
    overall: _Lifetimes = field(default_factory=_Lifetimes)
    deny_reasons: Counter[str] = field(default_factory=Counter)
    step_up_reasons: Counter[str] = field(default_factory=Counter)
    rule_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    failure_reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    clients: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    subjects: set[str] = field(default_factory=set)

    # -- reading ------------------------------------------------------------------------------

    def read(self, path: str | Path) -> None:
        """Add every line of ``path`` (``.gz`` is decompressed). Raises ``OSError`` if unreadable."""
        name = str(path)
        counts = Counter[str]()
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                counts[self.add_line(line, name, number)] += 1
        self.sources.append({"file": name, "decisions": counts["decision"], "events": counts["event"],
                             "skipped": counts["skipped"], "outside_range": counts["outside"]})

    def add_line(self, line: bytes | str, file: str = "<input>", number: int = 0) -> str:
        """Add one line; returns what it was: ``decision``, ``event``, ``outside`` or ``skipped``."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return self._skip(file, number, f"not JSON: {exc}")
        if not isinstance(record, dict):
            return self._skip(file, number, "not a JSON object")
        kind = "decision" if "decision_id" in record else "event" if "event_id" in record else None
        if kind is None:
            return self._skip(file, number, "neither a decision (decision_id) nor an event (event_id)")
        try:
            when = datetime.fromisoformat(str(record.get("time"))).astimezone(_UTC)
        except ValueError:
            return self._skip(file, number, f"bad or missing time {str(record.get('time'))[:40]!r}")
        if (self.start is not None and when < self.start) or (self.end is not None and when >= self.end):
            self.outside += 1
            return "outside"
        try:
            if kind == "decision":
                self._decision(record, when)
            else:
                self._event(record, when)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._skip(file, number, f"unexpected shape ({type(exc).__name__}: {exc})")
        self.first = when if self.first is None or when < self.first else self.first
        self.last = when if self.last is None or when > self.last else self.last
        return kind

    def _skip(self, file: str, number: int, message: str) -> str:
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED_SHOWN:
            self.skipped.append({"file": file, "line": number, "message": message[:200]})
        return "skipped"

    def _decision(self, record: dict[str, Any], when: datetime) -> None:
        result = record["result"]
        policy = str(record["policy"]["name"])
        context = record.get("context") or {}
        access, refresh = int(result["access_ttl"]), int(result["refresh_ttl"])
        outcome = "deny" if not result["allow"] else "step_up" if result.get("step_up") else "allow"
        matched = [str(m) for m in record.get("matched") or []]
        tier = record.get("tier") or (context.get("tier") if isinstance(context, dict) else None) or "(none)"
        location = context.get("location") if isinstance(context, dict) else None
        country = location.get("country") if isinstance(location, dict) else None
        client = context.get("client") if isinstance(context, dict) else None
        client_id = client.get("id") if isinstance(client, dict) else None
        user = context.get("user") if isinstance(context, dict) else None
        # Only now, with every field read, does the record count (a bad one is skipped whole).
        self.outcomes[outcome] += 1
        self.per_minute[int(when.timestamp()) // 60][outcome] += 1
        if outcome == "deny":
            self.deny_reasons[str(result.get("deny_reason") or "(no reason given)")] += 1
        elif outcome == "step_up":
            for reason in record.get("step_up_reasons") or ["(no reason given)"]:
                self.step_up_reasons[str(reason)] += 1
        if result["allow"]:  # a denied decision's lifetimes are 0 and say nothing about lifetimes
            for bucket in (self.by_tier[str(tier)], self.by_policy[policy], self.overall):
                bucket.add(access, refresh)
        for rule in matched:
            self.rules[(policy, rule)] += 1
        for rule in record.get("rule_errors") or []:
            self.rule_errors[(policy, str(rule))] += 1
        self.countries[str(country or "(unknown)")][outcome] += 1
        if client_id:
            self.clients[str(client_id)][outcome] += 1
        if isinstance(user, dict) and isinstance(user.get("id"), str):
            self.subjects.add(user["id"])

    def _event(self, record: dict[str, Any], when: datetime) -> None:
        kind = str(record["type"])
        self.event_types[kind] += 1
        self.per_minute[int(when.timestamp()) // 60]["event:" + kind] += 1
        if record.get("country"):
            self.countries[str(record["country"])]["event:" + kind] += 1
        if record.get("client"):
            self.clients[str(record["client"])]["event:" + kind] += 1
        if kind in FAILURE_EVENTS:
            self.failure_reasons[(kind, str(record.get("reason") or "(no reason given)"))] += 1
        if isinstance(record.get("subject"), str):
            self.subjects.add(record["subject"])

    # -- the report ---------------------------------------------------------------------------

    def report(self, generated_at: datetime | None = None) -> dict[str, Any]:
        decisions = sum(self.outcomes.values())
        return {
            "generated_at": _iso(generated_at or datetime.now(_UTC)),
            "range": {"from": _iso(self.start), "to": _iso(self.end),
                      "first": _iso(self.first), "last": _iso(self.last)},
            "sources": self.sources,
            "skipped": {"total": self.skipped_total, "first": self.skipped},
            "outside_range": self.outside,
            "totals": {"decisions": decisions, "allow": self.outcomes["allow"], "step_up": self.outcomes["step_up"],
                       "deny": self.outcomes["deny"], "events": sum(self.event_types.values()),
                       "failures": sum(self.event_types[k] for k in FAILURE_EVENTS),
                       "subjects": len(self.subjects), "clients": len(self.clients),
                       "countries": len([c for c in self.countries if c != "(unknown)"]),
                       "median_access_ttl": self.overall.access.summary().get("median"),
                       "median_refresh_ttl": self.overall.refresh.summary().get("median")},
            "timeline": self._timeline(),
            "event_types": _ranked(self.event_types, "type"),
            "countries": [{"country": c, "decisions": _decisions(n), "deny": n["deny"], "step_up": n["step_up"],
                           "events": _events(n), "failures": sum(n["event:" + k] for k in FAILURE_EVENTS)}
                          for c, n in sorted(self.countries.items(),
                                             key=lambda kv: (-(_decisions(kv[1]) + _events(kv[1])), kv[0]))],
            "clients": [{"client": c, "decisions": _decisions(n), "deny": n["deny"], "step_up": n["step_up"],
                         "events": _events(n)}
                        for c, n in sorted(self.clients.items(),
                                           key=lambda kv: (-(_decisions(kv[1]) + _events(kv[1])), kv[0]))][:50],
            "lifetimes": {"by_tier": {k: v.summary() for k, v in sorted(self.by_tier.items())},
                          "by_policy": {k: v.summary() for k, v in sorted(self.by_policy.items())}},
            "deny_reasons": _ranked(self.deny_reasons, "reason"),
            "step_up_reasons": _ranked(self.step_up_reasons, "reason"),
            "errors": {
                "rule_errors": [{"policy": p, "rule": r, "count": n}
                                for (p, r), n in sorted(self.rule_errors.items(), key=lambda kv: (-kv[1], kv[0]))],
                "failures": [{"type": t, "reason": r, "count": n}
                             for (t, r), n in sorted(self.failure_reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
            },
            "rules": self._rules(),
        }

    def _timeline(self) -> dict[str, Any]:
        if not self.per_minute:
            return {"bucket_seconds": 60, "buckets": []}
        low, high = min(self.per_minute), max(self.per_minute)
        span = (high - low + 1) * 60
        width = next((w for w in _WIDTHS if span / w <= 96), _WIDTHS[-1])
        buckets: dict[int, Counter[str]] = defaultdict(Counter)
        for minute, counts in self.per_minute.items():
            buckets[minute * 60 // width * width].update(counts)
        first, last = min(buckets), max(buckets)
        out = []
        for start in range(first, last + width, width):  # empty buckets too: gaps show as gaps
            counts = buckets.get(start, Counter())
            out.append({"start": _iso(datetime.fromtimestamp(start, _UTC)), "allow": counts["allow"],
                        "step_up": counts["step_up"], "deny": counts["deny"],
                        "failures": sum(counts["event:" + k] for k in FAILURE_EVENTS),
                        "events": sum(v for k, v in counts.items() if k.startswith("event:"))})
        return {"bucket_seconds": width, "buckets": out}

    def _rules(self) -> dict[str, Any]:
        matched = [{"policy": p, "rule": r, "count": n}
                   for (p, r), n in sorted(self.rules.items(), key=lambda kv: (-kv[1], kv[0]))]
        out: dict[str, Any] = {"matched": matched, "never_matched": None}
        if self.known_rules is not None:
            seen = set(self.rules)
            out["never_matched"] = [{"policy": p, "rule": r} for p, names in sorted(self.known_rules.items())
                                    for r in sorted(names) if (p, r) not in seen]
        return out


def _decisions(counts: Counter[str]) -> int:
    return counts["allow"] + counts["step_up"] + counts["deny"]


def _events(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("event:"))


def _ranked(counter: Counter[str], key: str) -> list[dict[str, Any]]:
    return [{key: k, "count": n} for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(_UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_report(paths: Iterable[str | Path], start: datetime | None = None, end: datetime | None = None,
                 known_rules: dict[str, list[str]] | None = None, generated_at: datetime | None = None
                 ) -> dict[str, Any]:
    """The usage report over ``paths`` for ``start <= time < end``; raises ``OSError`` for an unreadable file.

    >>> report = build_report(["decisions.jsonl"], known_rules={"workforce": ["off-hours"]})  # doctest: +SKIP
    >>> report["totals"]["decisions"], report["rules"]["never_matched"]                      # doctest: +SKIP
    (1200, [{'policy': 'workforce', 'rule': 'off-hours'}])
    """
    collector = Collector(start=start, end=end, known_rules=known_rules)
    for path in paths:
        collector.read(path)
    return collector.report(generated_at)

