"""Activity per subject and per client, kept in the state store over sliding windows.

Writes come from events (``POST /v1/events``) and from decisions (the country, IP and time of
each request); reads compute the ``activity.*`` values a policy sees. A decision costs one
store round trip: one batch reads every window and map the values need (and the automatic
actions in force for the subject), then records the request. Values are those *before* the
request being decided.

Keys (every one expires; a subject or client id is used as given):

=============================  ==========================================================
``act:s:{subject}:{kind}``     sliding window of one event kind (refresh, auth_fail, ...)
``act:c:{client}:{kind}``      the same per client
``act:s:{subject}:countries``  map country -> last seen (epoch seconds), kept 90 days
``act:s:{subject}:ips``        map IP -> last seen, kept 1 day
``act:s:{subject}:sessions``   map session -> last seen, or "ended" after a logout
``act:s:{subject}:last``       the subject's last activity (epoch seconds)
``act:event:{id}``             an event id already counted (idempotency), kept 8 days
=============================  ==========================================================
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..state import Batch, StateStore
from .events import MAX_AGE, Event

DAY = 86_400.0
COUNTRY_MEMORY = 90 * DAY  # how long a country counts as "seen" for activity.new_country
SESSION_IDLE = DAY  # a session without activity for a day no longer counts as active
IDEMPOTENCY = MAX_AGE.total_seconds() + DAY  # an event id is remembered longer than events are accepted
# Which event type feeds which window, how long each window keeps its events.
KINDS: Mapping[str, tuple[str, float]] = MappingProxyType({
    "token.refreshed": ("refresh", 3600.0),
    "auth.failed": ("auth_fail", 900.0),
    "refresh.failed": ("refresh_fail", 3600.0),
    "token.bad_signature": ("bad_sig", 3600.0),
    "token.issued": ("issued", DAY),
})
CLIENT_KINDS = frozenset({"refresh", "auth_fail"})



def subject_key(subject: str, kind: str) -> str:
    return f"act:s:{subject}:{kind}"


def client_key(client: str, kind: str) -> str:
    return f"act:c:{client}:{kind}"


class Request(NamedTuple):
    """What a decision tells the tracker: whose request, from where, when (epoch seconds).

    A named tuple, not a frozen dataclass: one is made per decision on the event loop, and a
    frozen dataclass's ``__init__`` costs several times a tuple's."""

    subject: str | None
    client: str | None
    country: str | None
    ip: str | None
    now: float


class _Reads:
    """Queues the reads of one request on a batch and turns their results into values."""

    def __init__(self, batch: Batch, request: Request, offset: int):
        self.request = request
        self.offset = offset  # how many operations were queued on the batch before these
        subject, client = request.subject, request.client
        now = request.now
        self.subject_ops = 0
        if subject is not None:
            for kind, seconds in (("refresh", 3600.0), ("auth_fail", 900.0), ("refresh_fail", 3600.0),
                                  ("bad_sig", 3600.0)):
                batch.window_count(subject_key(subject, kind), now, seconds)
            batch.map_get_all(subject_key(subject, "countries"))
            batch.map_get_all(subject_key(subject, "ips"))
            batch.map_get_all(subject_key(subject, "sessions"))
            batch.get(subject_key(subject, "last"))
            self.subject_ops = 8
        self.client_ops = 0
        if client is not None:
            batch.window_count(client_key(client, "refresh"), now, 3600.0)
            batch.window_count(client_key(client, "auth_fail"), now, 900.0)
            self.client_ops = 2

    @property
    def count(self) -> int:
        return self.subject_ops + self.client_ops

    def values(self, results: Sequence[Any]) -> dict[str, Any]:
        """The activity values from the batch's results (all of them, in order)."""
        results = results[self.offset:self.offset + self.count]
        out: dict[str, Any] = {}
        request, now = self.request, self.request.now
        if self.subject_ops:
            refresh, auth_fail, refresh_fail, bad_sig, countries, ips, sessions, last = results[:8]
            out.update(refreshes_1h=refresh, failed_auth_15m=auth_fail, refresh_failures_1h=refresh_fail,
                       bad_signatures_1h=bad_sig)
            out["countries_24h"] = sum(1 for seen in countries.values() if _recent(seen, now, DAY))
            out["ips_24h"] = sum(1 for seen in ips.values() if _recent(seen, now, DAY))
            out["sessions"] = sum(1 for seen in sessions.values() if _recent(seen, now, SESSION_IDLE))
            if request.country is not None:
                out["new_country"] = not _recent(countries.get(request.country), now, COUNTRY_MEMORY)
            if last is not None:
                out["idle_seconds"] = max(0, int(now - float(last)))
        if self.client_ops:
            client_refresh, client_fail = results[self.subject_ops:self.subject_ops + 2]
            out.update(client_refreshes_1h=client_refresh, client_failed_auth_15m=client_fail)
        return out


def _recent(seen: str | None, now: float, seconds: float) -> bool:
    """A map value (last seen, epoch seconds; "ended" for a closed session) within ``seconds`` before ``now``."""
    if seen is None or seen == "ended":
        return False
    try:
        return now - seconds < float(seen) <= now
    except ValueError:
        return False


class ActivityTracker:
    """Records activity in a :class:`~ttlpolicy.state.StateStore` and computes ``activity.*`` values.

    >>> tracker = ActivityTracker(open_store("sqlite:///tmp/state.db"))          # doctest: +SKIP
    >>> tracker.record_events([event])                                           # doctest: +SKIP
    >>> tracker.observe(Request("alice", "web", "DE", "203.0.113.9", time.time()))  # doctest: +SKIP
    {'refreshes_1h': 1, 'failed_auth_15m': 0, ..., 'new_country': True}
    """

    def __init__(self, store: StateStore):
        self.store = store

    # -- decisions --------------------------------------------------------------------------

    def queue_observe(self, batch: Batch, request: Request, offset: int = 0) -> _Reads:
        """Queue the reads for ``request`` (after ``offset`` operations already on ``batch``) and then
        its recording; call ``.values(results)`` on what the batch returns."""
        reads = _Reads(batch, request, offset)
        self._queue_request_writes(batch, request)
        return reads

    def observe(self, request: Request) -> dict[str, Any]:
        """The activity values before ``request``, which is then recorded; one round trip.

        Raises :class:`~ttlpolicy.state.StoreUnavailable` when the store cannot answer.
        """
        batch = self.store.batch()
        reads = self.queue_observe(batch, request)
        return reads.values(batch.execute())

    def queue_requests(self, batch: Batch, requests: Iterable[Request]) -> int:
        """Queue the recording of decided requests (no reads) on ``batch``; returns how many
        operations. Each map field and last-activity time keeps only its newest stamp, whatever
        order the requests arrive in, so it is written once per batch, not per request."""
        latest: dict[tuple[str, str], float] = {}  # (key, map field or "") -> newest time
        for r in requests:
            if r.subject is None:
                continue
            fields = [(subject_key(r.subject, "last"), "")]
            if r.country is not None:
                fields.append((subject_key(r.subject, "countries"), r.country))
            if r.ip is not None:
                fields.append((subject_key(r.subject, "ips"), r.ip))
            for name in fields:
                if latest.get(name, float("-inf")) < r.now:
                    latest[name] = r.now
        keeps = {"countries": COUNTRY_MEMORY, "ips": DAY}
        for (key, field), at in latest.items():
            if field:
                batch.map_put(key, field, repr(at), keeps[key.rsplit(":", 1)[1]])
            else:
                batch.put(key, repr(at), COUNTRY_MEMORY)
        return len(latest)

    def _queue_request_writes(self, batch: Batch, request: Request) -> None:
        subject, now = request.subject, request.now
        if subject is None:
            return
        stamp = repr(now)
        if request.country is not None:
            batch.map_put(subject_key(subject, "countries"), request.country, stamp, COUNTRY_MEMORY)
        if request.ip is not None:
            batch.map_put(subject_key(subject, "ips"), request.ip, stamp, DAY)
        batch.put(subject_key(subject, "last"), stamp, COUNTRY_MEMORY)

    # -- events -----------------------------------------------------------------------------

    def claim(self, events: Sequence[Event]) -> list[bool]:
        """Claim each event id (one round trip): True for an id seen for the first time."""
        batch = self.store.batch()
        for event in events:
            batch.put_if_absent(f"act:event:{event.id}", event.type, IDEMPOTENCY)
        return [bool(r) for r in batch.execute()]

    def queue_events(self, batch: Batch, events: Iterable[Event]) -> int:
        """Queue the recording of ``events`` (already claimed) on ``batch``; returns how many operations.

        Windows get one entry per event. The maps and the last-activity time keep only their
        latest value per subject and field, so a batch writes each of those once, not per event.
        """
        windows: list[tuple[str, float, float]] = []
        latest: dict[tuple[str, str, str], tuple[float, str]] = {}  # (key, field, map or "") -> (time, value)
        for event in sorted(events, key=lambda e: e.time):
            now = event.time.timestamp()
            kind = KINDS.get(event.type)
            subject, client = event.subject, event.client
            if kind is not None:
                name, keep = kind
                if subject is not None:
                    windows.append((subject_key(subject, name), now, keep))
                if client is not None and name in CLIENT_KINDS:
                    windows.append((client_key(client, name), now, keep))
            if subject is None:
                continue
            stamp = repr(now)
            if event.country is not None:
                latest[(subject_key(subject, "countries"), event.country, "map")] = (now, stamp)
            if event.ip is not None:
                latest[(subject_key(subject, "ips"), event.ip, "map")] = (now, stamp)
            if event.session is not None:
                ended = event.type == "logout"
                latest[(subject_key(subject, "sessions"), event.session, "map")] = (now, "ended" if ended else stamp)
            if event.type != "logout":
                latest[(subject_key(subject, "last"), "", "")] = (now, stamp)
        for key, at, keep in windows:
            batch.window_add(key, at, keep)
        keeps = {"countries": COUNTRY_MEMORY, "ips": DAY, "sessions": SESSION_IDLE}
        for (key, field, how), (_, value) in latest.items():
            if how == "map":
                batch.map_put(key, field, value, keeps[key.rsplit(":", 1)[1]])
            else:
                batch.put(key, value, COUNTRY_MEMORY)
        return len(windows) + len(latest)

    def record_events(self, events: Sequence[Event]) -> list[Event]:
        """Record the events whose ids are new; returns those (duplicates are skipped). Two round trips."""
        fresh = [e for e, new in zip(events, self.claim(events)) if new]
        if fresh:
            batch = self.store.batch()
            self.queue_events(batch, fresh)
            batch.execute()
        return fresh
