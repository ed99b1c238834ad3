"""The store contract, run against both backends: SQLite (a file in tmp) and Redis (a real
redis-server on a free loopback port). Every test here runs twice; a backend that disagrees
with the contract fails here, not in production."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Iterator

import pytest

from ttlpolicy.state import StateStore, StoreUnavailable, StoreURLError, Window, open_store
from ttlpolicy.state.store import redact_url

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    with open_store(store_url) as opened:
        yield opened


def test_key_value(store: StateStore) -> None:
    assert store.get("a") is None
    store.put("a", "1", ttl=60)
    assert store.get("a") == "1"
    store.put("a", "2", ttl=60)
    assert store.get("a") == "2"
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None


def test_put_if_absent_is_a_claim(store: StateStore) -> None:
    assert store.put_if_absent("claim", "first", ttl=60) is True
    assert store.put_if_absent("claim", "second", ttl=60) is False
    assert store.get("claim") == "first"


def test_everything_expires(store: StateStore) -> None:
    store.put("kv", "x", ttl=0.3)
    store.put_if_absent("claim", "x", ttl=0.3)
    store.incr("counter", 5, ttl=0.3)
    store.set_add("set", ["a", "b"], ttl=0.3)
    store.map_put("map", "f", "v", ttl=0.3)
    assert store.get("kv") == "x" and store.set_size("set") == 2 and store.map_get("map", "f") == "v"
    time.sleep(0.45)
    assert store.get("kv") is None
    assert store.get("counter") is None
    assert store.set_members("set") == frozenset() and store.set_size("set") == 0
    assert store.map_get_all("map") == {} and store.map_get("map", "f") is None
    # An expired claim can be claimed again; an expired counter starts afresh.
    assert store.put_if_absent("claim", "y", ttl=60) is True
    assert store.incr("counter", 1, ttl=60) == 1


def test_ttl_must_be_positive(store: StateStore) -> None:
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            store.put("k", "v", ttl=bad)


def test_counter_keeps_its_first_expiry(store: StateStore) -> None:
    assert store.incr("c", 1, ttl=0.4) == 1
    time.sleep(0.2)
    assert store.incr("c", 2, ttl=60) == 3  # a live counter keeps the expiry it was created with
    time.sleep(0.3)
    assert store.incr("c", 1, ttl=60) == 1


def test_sets(store: StateStore) -> None:
    assert store.set_add("s", ["a", "b", "a"], ttl=60) == 2
    assert store.set_add("s", ["b", "c"], ttl=60) == 1
    assert store.set_members("s") == {"a", "b", "c"}
    assert store.set_remove("s", ["a", "zz"]) == 1
    assert store.set_size("s") == 2


def test_set_write_moves_expiry_of_the_whole_set(store: StateStore) -> None:
    store.set_add("s", ["a"], ttl=0.3)
    store.set_add("s", ["b"], ttl=60)
    time.sleep(0.4)
    assert store.set_members("s") == {"a", "b"}


def test_maps(store: StateStore) -> None:
    assert store.map_put("m", "x", "1", ttl=60) is True
    assert store.map_put("m", "x", "2", ttl=60) is False
    assert store.map_put("m", "y", "3", ttl=60) is True
    assert store.map_get_all("m") == {"x": "2", "y": "3"}
    assert store.map_delete("m", "x") is True
    assert store.map_delete("m", "x") is False
    assert store.map_get_all("m") == {"y": "3"}


def test_namespaces_are_separate(store: StateStore) -> None:
    store.put("same", "kv", ttl=60)
    store.set_add("same", ["member"], ttl=60)
    store.map_put("same", "field", "value", ttl=60)
    store.window_add("same", T0, keep=60)
    assert store.get("same") == "kv"
    assert store.set_members("same") == {"member"}
    assert store.map_get_all("same") == {"field": "value"}
    assert store.window_count("same", T0, 60) == 1


def test_window_counts_exactly_at_the_edges(store: StateStore) -> None:
    windows = [Window(3, 60)]
    for offset in (0.0, 10.0, 20.0):
        assert store.window_hit("w", T0 + offset, windows).allowed
    refused = store.window_hit("w", T0 + 59.999, windows)
    assert not refused.allowed and refused.counts == (3,) and refused.exceeded == (0,)
    assert refused.retry_after == pytest.approx(0.001, abs=1e-6)
    # The event at T0 stops counting at exactly T0 + 60.
    allowed = store.window_hit("w", T0 + 60.0, windows)
    assert allowed.allowed and allowed.counts == (3,) and allowed.retry_after == 0.0
    assert store.window_count("w", T0 + 60.0, 60) == 3


def test_refused_hits_are_not_recorded(store: StateStore) -> None:
    windows = [Window(1, 10)]
    assert store.window_hit("w", T0, windows).allowed
    for step in range(5):
        assert not store.window_hit("w", T0 + 1 + step, windows).allowed
    assert store.window_hit("w", T0 + 10, windows).allowed


def test_several_windows(store: StateStore) -> None:
    windows = [Window(2, 10), Window(3, 3600)]
    assert store.window_hit("w", T0, windows).allowed
    assert store.window_hit("w", T0 + 1, windows).allowed
    short = store.window_hit("w", T0 + 2, windows)
    assert not short.allowed and short.exceeded == (0,) and short.retry_after == pytest.approx(8.0)
    assert store.window_hit("w", T0 + 10, windows).allowed  # the short window has room again
    long = store.window_hit("w", T0 + 30, windows)
    assert not long.allowed and long.exceeded == (1,) and long.counts == (0, 3)
    assert long.retry_after == pytest.approx(3600 - 30)


def test_window_cost_and_impossible_cost(store: StateStore) -> None:
    assert store.window_hit("w", T0, [Window(5, 60)], cost=3).counts == (3,)
    assert not store.window_hit("w", T0 + 1, [Window(5, 60)], cost=3).allowed
    never = store.window_hit("other", T0, [Window(2, 60)], cost=3)
    assert not never.allowed and never.retry_after == float("inf")


def test_window_add_and_count(store: StateStore) -> None:
    store.window_add("events", T0, keep=3600)
    store.window_add("events", T0 + 100, keep=3600, cost=2)
    assert store.window_count("events", T0 + 100, 3600) == 3
    assert store.window_count("events", T0 + 100, 100) == 2  # (T0, T0+100]: the first is out
    assert store.window_count("events", T0 + 3700, 3600) == 0


def test_batch_is_one_call_with_results_in_order(store: StateStore) -> None:
    batch = store.batch()
    batch.put("k", "v", 60)
    batch.get("k")
    batch.incr("n", 2, 60)
    batch.window_hit("w", T0, [Window(1, 60)])
    batch.set_members("nothing")
    put, got, count, hit, members = batch.execute()
    assert (put, got, count, hit.allowed, members) == (None, "v", 2, True, frozenset())
    assert store.batch().execute() == []


def _hammer(url: str, key: str, rounds: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    allowed = 0
    with open_store(url) as store:
        for _ in range(rounds):
            store.incr(f"{key}:n", 1, ttl=60)
            if store.window_hit(f"{key}:w", T0, [Window(50, 60)]).allowed:
                allowed += 1
            store.put_if_absent(f"{key}:claim", "x", ttl=60)
    queue.put(allowed)


def test_concurrent_writers_in_two_processes(store_url: str) -> None:
    """Two processes hammer the same counter and window: no lost update, no limit overshoot."""
    context = multiprocessing.get_context("fork")  # the parent holds no store connection
    queue = context.Queue()
    processes = [context.Process(target=_hammer, args=(store_url, "shared", 40, queue)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    allowed = [queue.get(timeout=5), queue.get(timeout=5)]
    assert sum(allowed) == 50  # 80 attempts at a limit of 50: exactly 50 got through
    with open_store(store_url) as store:
        assert store.get("shared:n") == "80"
        assert store.window_count("shared:w", T0, 60) == 50


def test_urls(tmp_path: Path) -> None:
    for bad in ("mysql://x", "sqlite://relative.db", "sqlite:///", "redis://h:1/0?timeout=abc", "nothing"):
        with pytest.raises(StoreURLError):
            open_store(bad)
    assert redact_url("redis://user:secret@h:6379/0") == "redis://user:***@h:6379/0"
    with open_store(f"sqlite:///{tmp_path}/deep/dir/state.db") as store:
        store.put("k", "v", 60)
        assert store.display_url.endswith("deep/dir/state.db")


def test_state_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    with open_store(url) as store:
        store.put("k", "v", 60)
    with open_store(url) as store:
        assert store.get("k") == "v"


def test_unreachable_redis_raises_store_unavailable() -> None:
    from redis_server import free_port

    with open_store(f"redis://127.0.0.1:{free_port()}/0?timeout=0.2") as store:
        with pytest.raises(StoreUnavailable):
            store.get("k")
        with pytest.raises(StoreUnavailable):
            store.ping()


def test_a_write_costs_the_same_however_large_the_set_or_map(store: StateStore) -> None:
    """Work, not time: the last 50 of 300 writes to one map (and one set) change as many rows
    (SQLite) or send as many commands (Redis) as the first 50. An expiry kept per member made
    every write rewrite the whole map: 1,000 revocations were ~500,000 row updates."""
    from store_work import counting

    store.get("warm-up")  # the connection's own set-up is not the writes' work
    samples = []
    for start in range(0, 300, 50):
        with counting(store) as work:
            for i in range(start, start + 50):
                store.map_put("big-map", f"field-{i}", "value", ttl=60)
                store.set_add("big-set", [f"member-{i}"], ttl=60)
        samples.append(work)
    first, last = samples[0], samples[-1]
    assert first.round_trips == last.round_trips == 100
    assert last.changes == first.changes <= 100 * 3
    assert store.set_size("big-set") == 300 and len(store.map_get_all("big-map")) == 300


def test_a_batch_with_scripts_is_one_round_trip(store: StateStore) -> None:
    """Rate-limit hits and counters are Lua scripts on Redis: sent with the batch, never after
    a `SCRIPT EXISTS` check of their own."""
    from store_work import counting

    store.get("warm-up")
    for size in (1, 3):
        with counting(store) as work:
            batch = store.batch()
            for i in range(size):
                batch.window_hit(f"w{i}", T0, [Window(5, 60)])
            batch.incr("n", 1, 60)
            batch.get("k")
            batch.execute()
        assert work.round_trips == 1, size


def test_an_older_database_is_moved_over(tmp_path: Path) -> None:
    """A state.db written before sets, maps and windows were reorganised opens with its data."""
    import sqlite3

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    far = time.time() + 3600
    old.executescript(f"""
        PRAGMA journal_mode=WAL;
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE sets (key TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL,
                           PRIMARY KEY (key, member)) WITHOUT ROWID;
        CREATE TABLE maps (key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
                           expires_at REAL NOT NULL, PRIMARY KEY (key, field)) WITHOUT ROWID;
        CREATE TABLE windows (key TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL);
        INSERT INTO kv VALUES ('k', 'v', {far});
        INSERT INTO sets VALUES ('s', 'a', {far}), ('s', 'b', {far}), ('gone', 'x', 1);
        INSERT INTO maps VALUES ('m', 'f', '1', {far}), ('m', 'g', '2', {far});
        INSERT INTO windows VALUES ('w', {T0}, {far}), ('w', {T0}, {far}), ('w', {T0 + 1}, {far});
    """)
    old.close()
    for _ in range(2):  # the second opening finds nothing left to do
        with open_store(f"sqlite://{path}") as store:
            assert store.get("k") == "v"
            assert store.set_members("s") == {"a", "b"} and store.set_members("gone") == frozenset()
            assert store.map_get_all("m") == {"f": "1", "g": "2"}
            assert store.window_count("w", T0 + 1, 60) == 3
    check = sqlite3.connect(path)
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"sets", "maps", "windows"} and check.execute("PRAGMA user_version").fetchone() == (1,)
    check.close()


def test_a_script_runs_after_the_server_forgot_it(redis_url: str) -> None:
    """After a restart or failover the script cache is empty: the next hit still counts once."""
    with open_store(redis_url) as store:
        assert store.window_hit("w", T0, [Window(2, 60)]).allowed
        store.client.script_flush()  # type: ignore[attr-defined]
        second = store.window_hit("w", T0 + 1, [Window(2, 60)])
        assert second.allowed and second.counts == (2,)
        assert not store.window_hit("w", T0 + 2, [Window(2, 60)]).allowed
