"""The shared store: Redis (or Valkey) through the ``redis`` client, for many replicas.

A batch is one pipeline (one round trip). Operations that read and then write — a sliding-window
hit, a counter that must be created with its expiry — are small Lua scripts, so each is atomic
on the server whatever other replicas do at the same moment. A script costs no round trip of its
own: redis-py makes sure a pipeline's ``EVALSHA`` scripts are loaded by asking ``SCRIPT EXISTS``
first, a second round trip on every batch (measured: +30 µs per rate-limited decision on
loopback), so a pipeline sends its scripts whole with ``EVAL`` (~1 KB more on the wire, and
always one round trip, also right after a restart or a failover emptied the script cache); a
batch of one script — a decision's rate-limit hit — sends ``EVALSHA`` and, only when the server
answers ``NOSCRIPT`` (nothing ran), the same call with ``EVAL``, which caches it again. Keys are namespaced by kind under a
prefix (``ttlpolicy:kv:…``, ``:set:``, ``:map:``, ``:win:``); everything is written with an
expiry (``PX``/``PEXPIRE``), so Redis cleans up by itself.

A timeout is short on purpose (``?timeout=``, default 0.5 s): a store that does not answer in
time is unavailable, and the service's degraded mode takes over instead of queueing requests.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .store import (Batch, StateStore, StoreUnavailable, StoreURLError, Window, WindowHit, check_ttl,
                    check_windows, redact_url)

DEFAULT_TIMEOUT = 0.5
DEFAULT_PREFIX = "ttlpolicy:"

_INCR = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return tonumber(ARGV[1])
"""

# ARGV: now, cost, member token, keep (ms), cutoff (drop events at or before), then per window:
# limit, lower bound (exclusive), seconds. Numbers go back as strings: Lua numbers returned to
# Redis are truncated to integers.
_WINDOW_HIT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[5])
local counts, exceeded, retry = {}, {}, 0
local n = (#ARGV - 5) / 3
for i = 1, n do
  local limit = tonumber(ARGV[3 + 3 * i])
  local low = ARGV[4 + 3 * i]
  local seconds = tonumber(ARGV[5 + 3 * i])
  local c = redis.call('ZCOUNT', key, '(' .. low, ARGV[1])
  counts[i] = c
  if c + cost > limit then
    exceeded[#exceeded + 1] = i - 1
    local must = c + cost - limit
    if must > c then
      retry = -1
    elseif retry >= 0 then
      local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. low, ARGV[1], 'WITHSCORES', 'LIMIT', must - 1, 1)
      local r = tonumber(oldest[2]) + seconds - now
      if r > retry then retry = r end
    end
  end
end
if #exceeded > 0 then return {0, counts, string.format('%.17g', retry), exceeded} end
for j = 1, cost do redis.call('ZADD', key, ARGV[1], ARGV[3] .. ':' .. j) end
redis.call('PEXPIRE', key, ARGV[4])
return {1, counts, '0', exceeded}
"""

_WINDOW_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
for j = 1, tonumber(ARGV[2]) do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3] .. ':' .. j) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


class RedisStore(StateStore):
    """The Redis store. ``RedisStore(redis.Redis(...), prefix="ttlpolicy:")`` or :meth:`from_url`."""

    backend = "redis"

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, display_url: str = "redis"):
        self.client = client
        self.prefix = prefix
        self.display_url = display_url

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        parts = urlsplit(url)
        scheme = {"valkey": "redis", "valkeys": "rediss"}.get(parts.scheme.lower(), parts.scheme.lower())
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        try:
            timeout = float(options.pop("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise StoreURLError("redis URL option ?timeout= must be a number of seconds") from None
        if not 0 < timeout <= 60:
            raise StoreURLError("redis URL option ?timeout= must be between 0 and 60 seconds")
        clean = urlunsplit(parts._replace(scheme=scheme, query=urlencode(options)))
        try:
            client = redis.Redis.from_url(
                clean, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
                # One immediate retry covers a pooled connection that a Redis restart closed;
                # more would only make a dead store slower to notice.
                retry=Retry(NoBackoff(), 1))
        except (ValueError, redis.RedisError) as exc:
            raise StoreURLError(f"redis URL {redact_url(url)!r}: {exc}") from None
        return cls(client, prefix=prefix, display_url=redact_url(url))

    def batch(self, atomic: bool = False) -> RedisBatch:
        return RedisBatch(self, atomic)

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{self.display_url}: {exc}") from exc

    def close(self) -> None:
        self.client.close()


_Decode = Callable[[list[Any]], Any]
_SHA1 = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_INCR, _WINDOW_HIT, _WINDOW_ADD)}


def _execute_one(client: redis.Redis, command: tuple[Any, ...]) -> Any:
    if command[0] != "EVAL":
        return client.execute_command(*command)
    try:
        return client.execute_command("EVALSHA", _SHA1[command[1]], *command[2:])
    except NoScriptError:  # a restarted or failed-over server: nothing ran; EVAL runs it and caches it
        return client.execute_command(*command)


class RedisBatch(Batch):
    """Commands queued as they are; :meth:`execute` sends them as one pipeline, or — one command
    outside a transaction, the common case on the decision path — as that command alone, which
    spares redis-py's pipeline machinery (about a PING's worth of client time) for the same one
    round trip."""

    def __init__(self, store: RedisStore, atomic: bool = False):
        self._store = store
        self._atomic = atomic
        self._commands: list[tuple[Any, ...]] = []
        # For each operation: how many replies it produced and how to turn them into its result.
        self._decoders: list[tuple[int, _Decode]] = []

    def _key(self, kind: str, key: str) -> str:
        return f"{self._store.prefix}{kind}:{key}"

    def _add(self, replies: int, decode: _Decode) -> None:
        self._decoders.append((replies, decode))

    def execute(self) -> list[Any]:
        if not self._decoders:
            return []
        commands, self._commands = self._commands, []
        client = self._store.client
        try:
            if len(commands) == 1 and not self._atomic:
                replies = [_execute_one(client, commands[0])]
            else:
                pipe = client.pipeline(transaction=self._atomic)
                for command in commands:
                    pipe.execute_command(*command)
                replies = pipe.execute()
        except redis.RedisError as exc:
            self._decoders = []
            raise StoreUnavailable(f"{self._store.display_url}: {exc}") from exc
        results, at = [], 0
        for count, decode in self._decoders:
            results.append(decode(replies[at:at + count]))
            at += count
        self._decoders = []
        return results

    # key-value
    def get(self, key: str) -> None:
        self._commands.append(("GET", self._key("kv", key)))
        self._add(1, lambda r: r[0])

    def put(self, key: str, value: str, ttl: float) -> None:
        self._commands.append(("SET", self._key("kv", key), value, "PX", _ms(check_ttl(ttl))))
        self._add(1, lambda r: None)

    def put_if_absent(self, key: str, value: str, ttl: float) -> None:
        self._commands.append(("SET", self._key("kv", key), value, "PX", _ms(check_ttl(ttl)), "NX"))
        self._add(1, lambda r: bool(r[0]))

    def delete(self, key: str) -> None:
        self._commands.append(("DEL", self._key("kv", key)))
        self._add(1, lambda r: r[0] == 1)

    # counters
    def incr(self, key: str, amount: int, ttl: float) -> None:
        self._commands.append(("EVAL", _INCR, 1, self._key("kv", key), int(amount), _ms(check_ttl(ttl))))
        self._add(1, lambda r: int(r[0]))

    # sets
    def set_add(self, key: str, members: Iterable[str], ttl: float) -> None:
        items = list(members)
        ttl_ms = _ms(check_ttl(ttl))
        name = self._key("set", key)
        if items:
            self._commands.append(("SADD", name, *items))
            self._commands.append(("PEXPIRE", name, ttl_ms))
            self._add(2, lambda r: int(r[0]))
        else:
            self._commands.append(("PEXPIRE", name, ttl_ms))
            self._add(1, lambda r: 0)

    def set_remove(self, key: str, members: Iterable[str]) -> None:
        items = list(members)
        if not items:
            self._commands.append(("EXISTS", self._key("set", key)))
            self._add(1, lambda r: 0)
            return
        self._commands.append(("SREM", self._key("set", key), *items))
        self._add(1, lambda r: int(r[0]))

    def set_members(self, key: str) -> None:
        self._commands.append(("SMEMBERS", self._key("set", key)))
        self._add(1, lambda r: frozenset(r[0]))

    def set_size(self, key: str) -> None:
        self._commands.append(("SCARD", self._key("set", key)))
        self._add(1, lambda r: int(r[0]))

    # maps
    def map_put(self, key: str, field: str, value: str, ttl: float) -> None:
        name = self._key("map", key)
        self._commands.append(("HSET", name, field, value))
        self._commands.append(("PEXPIRE", name, _ms(check_ttl(ttl))))
        self._add(2, lambda r: r[0] == 1)

    def map_get(self, key: str, field: str) -> None:
        self._commands.append(("HGET", self._key("map", key), field))
        self._add(1, lambda r: r[0])

    def map_get_all(self, key: str) -> None:
        self._commands.append(("HGETALL", self._key("map", key)))
        self._add(1, lambda r: dict(r[0]))

    def map_delete(self, key: str, field: str) -> None:
        self._commands.append(("HDEL", self._key("map", key), field))
        self._add(1, lambda r: r[0] == 1)

    # sliding windows
    def window_hit(self, key: str, now: float, windows: Sequence[Window], cost: int = 1) -> None:
        check_windows(windows, cost)
        longest = max(w.seconds for w in windows)
        args: list[Any] = [repr(float(now)), int(cost), secrets.token_hex(8), _ms(longest), repr(now - longest)]
        for window in windows:
            args += [int(window.limit), repr(now - window.seconds), repr(float(window.seconds))]
        self._commands.append(("EVAL", _WINDOW_HIT, 1, self._key("win", key), *args))

        def decode(r: list[Any]) -> WindowHit:
            allowed, counts, retry, exceeded = r[0]
            retry_after = float(retry)
            if retry_after < 0:
                retry_after = float("inf")
            if allowed:
                return WindowHit(True, tuple(int(c) + cost for c in counts), 0.0)
            return WindowHit(False, tuple(int(c) for c in counts), retry_after, tuple(int(i) for i in exceeded))
        self._add(1, decode)

    def window_add(self, key: str, now: float, keep: float, cost: int = 1) -> None:
        keep = check_ttl(keep)
        if cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost}")
        self._commands.append(("EVAL", _WINDOW_ADD, 1, self._key("win", key), repr(float(now)), int(cost),
                               secrets.token_hex(8), repr(now - keep), _ms(keep)))
        self._add(1, lambda r: None)

    def window_count(self, key: str, now: float, seconds: float) -> None:
        self._commands.append(("ZCOUNT", self._key("win", key), f"({now - seconds!r}", repr(float(now))))
        self._add(1, lambda r: int(r[0]))
