"""Activity windows on both store backends with a fixed clock: exact counts at the window edges,
distinct countries and IPs, sessions, idle time, idempotent events."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from ttlpolicy.activity.events import Event
from ttlpolicy.activity.tracker import ActivityTracker, Request
from ttlpolicy.state import open_store

T0 = 1_800_000_000.0  # all times are fixed: the windows are driven by event times, not the clock


@pytest.fixture(params=["sqlite", "redis"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ActivityTracker]:
    url = f"sqlite:///{tmp_path}/state.db" if request.param == "sqlite" else str(request.getfixturevalue("redis_url"))
    with open_store(url) as store:
        yield ActivityTracker(store)


_ids = iter(range(10**9))


def event(kind: str, at: float, **kw: Any) -> Event:
    kw.setdefault("subject", "alice")
    return Event(id=f"e{next(_ids)}", type=kind, time=datetime.fromtimestamp(at, timezone.utc), **kw)


def observe(tracker: ActivityTracker, at: float, **kw: Any) -> dict[str, Any]:
    args = {"subject": "alice", "client": "web", "country": None, "ip": None, **kw}
    return tracker.observe(Request(now=at, **args))


def test_refresh_window_edges(tracker: ActivityTracker) -> None:
    tracker.record_events([event("token.refreshed", T0), event("token.refreshed", T0 + 10, client="web")])
    assert observe(tracker, T0)["refreshes_1h"] == 1
    assert observe(tracker, T0 + 3599.999)["refreshes_1h"] == 2
    # An event at t stops counting at exactly t + 1h.
    assert observe(tracker, T0 + 3600)["refreshes_1h"] == 1
    assert observe(tracker, T0 + 3610)["refreshes_1h"] == 0
    assert observe(tracker, T0 + 20)["client_refreshes_1h"] == 1  # only the one that named the client


def test_failed_auth_window_is_15_minutes(tracker: ActivityTracker) -> None:
    tracker.record_events([event("auth.failed", T0 + i, client="web") for i in range(5)])
    values = observe(tracker, T0 + 899.5)
    assert values["failed_auth_15m"] == 5 and values["client_failed_auth_15m"] == 5
    assert observe(tracker, T0 + 902)["failed_auth_15m"] == 2  # T0+3 and T0+4 are left


def test_other_failure_kinds(tracker: ActivityTracker) -> None:
    tracker.record_events([event("refresh.failed", T0), event("token.bad_signature", T0), event("logout", T0)])
    values = observe(tracker, T0 + 1)
    assert (values["refresh_failures_1h"], values["bad_signatures_1h"], values["refreshes_1h"]) == (1, 1, 0)


def test_countries_ips_and_new_country(tracker: ActivityTracker) -> None:
    day = 86_400
    tracker.record_events([event("token.refreshed", T0, country="DE", ip="198.51.100.1"),
                           event("token.refreshed", T0 + 60, country="FR", ip="198.51.100.2"),
                           event("token.refreshed", T0 + 120, country="FR", ip="198.51.100.2")])
    values = observe(tracker, T0 + 200, country="DE")
    assert (values["countries_24h"], values["ips_24h"], values["new_country"]) == (2, 2, False)
    assert observe(tracker, T0 + 300, country="BR")["new_country"] is True
    # The decision from BR above was recorded: BR is known now, and counts for the day.
    values = observe(tracker, T0 + 400, country="BR")
    assert values["new_country"] is False and values["countries_24h"] == 3
    # A day later the day's countries have aged out of countries_24h but are still "seen" (90 days).
    later = observe(tracker, T0 + 400 + day, country="DE")
    assert later["countries_24h"] == 0 and later["new_country"] is False and later["ips_24h"] == 0
    assert "new_country" not in observe(tracker, T0 + 500)  # no country in the request: absent


def test_sessions_and_idle_time(tracker: ActivityTracker) -> None:
    assert "idle_seconds" not in observe(tracker, T0 - 10, subject="bob")  # nothing known about bob yet
    tracker.record_events([event("token.issued", T0, session="s1"), event("token.issued", T0 + 5, session="s2")])
    values = observe(tracker, T0 + 65)
    assert values["sessions"] == 2 and values["idle_seconds"] == 60  # the last activity was T0+5
    tracker.record_events([event("logout", T0 + 70, session="s1")])
    assert observe(tracker, T0 + 80)["sessions"] == 1


def test_events_are_idempotent_by_id(tracker: ActivityTracker) -> None:
    first = event("token.refreshed", T0)
    assert tracker.record_events([first, event("token.refreshed", T0 + 1)]) != []
    again = tracker.record_events([first])
    assert again == []
    assert observe(tracker, T0 + 2)["refreshes_1h"] == 2


def test_no_subject_no_client_no_values(tracker: ActivityTracker) -> None:
    assert tracker.observe(Request(None, None, "DE", None, T0)) == {}
    only_client = tracker.observe(Request(None, "web", None, None, T0))
    assert set(only_client) == {"client_refreshes_1h", "client_failed_auth_15m"}


def test_subjects_are_kept_apart(tracker: ActivityTracker) -> None:
    tracker.record_events([event("token.refreshed", T0, subject="a:refresh"), event("token.refreshed", T0)])
    assert observe(tracker, T0 + 1, subject="a")["refreshes_1h"] == 0
    assert observe(tracker, T0 + 1, subject="a:refresh")["refreshes_1h"] == 1


