"""The shared state store: the same Protocol on Redis, for workers and replicas that share state.

Every operation is one round trip: a Lua script for each read-modify-write (run atomically by Redis, so
two processes incrementing one counter never lose an increment), a single command otherwise. Keys are
namespaced (``<namespace>:<kind>:<key>``) and every key that can expire carries a Redis expiry, so the
server forgets what nobody needs any more; a sliding window is a hash of time buckets
(``proxy.state.buckets``) that drops its expired buckets whenever it opens a new one.

Expiry has two clocks. What the Protocol promises (a counter's fixed window, a member's TTL) is decided
against the store's clock and stored next to the value, so every process agrees on it and tests can move
time; the Redis expiry, relative to the server's own time, only reclaims memory.

A connection failure, timeout or server error is raised as ``StateUnavailable``; what to do then is the
caller's policy (``proxy.state.fallback``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxy.state.buckets import BUCKETS_PER_RETENTION, WIDTHS
from proxy.state.keys import capped, kind
from proxy.state.store import KEYS_PER_KIND, SET_CAPACITY, Clock, JSONValue, StateUnavailable

# Keeps a kind of expiring keys within its cap (proxy.state.caps says how): per kind, a sorted set of its
# keys by expiry and a hash of the entries each holds (the total under the empty name). Called with the
# two, the key written, its expiry (store clock), its entries, now, the cap (nil for a freeze, which is
# never accounted for: proxy.state.keys.capped) and the namespace prefix, and how long the account must
# outlive this call; returns how many keys it forgot.
_TRACK = """
local function track(by_expiry, entries_of, key, expires, entries, now, cap, prefix, keep_ms)
    if not cap then return 0 end
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', by_expiry, '-inf', now, 'LIMIT', 0, 64)) do
        local held = tonumber(redis.call('HGET', entries_of, gone) or '0')
        redis.call('HDEL', entries_of, gone)
        redis.call('HINCRBY', entries_of, '', -held)
        redis.call('ZREM', by_expiry, gone)
    end
    local before = redis.call('ZSCORE', by_expiry, key)
    if not before or tonumber(before) < expires then
        redis.call('ZADD', by_expiry, expires, key)
    end
    local held = tonumber(redis.call('HGET', entries_of, key) or '0')
    local total = tonumber(redis.call('HINCRBY', entries_of, '', entries - held))
    redis.call('HSET', entries_of, key, entries)
    local forgotten = 0
    while total > cap do
        local oldest = redis.call('ZRANGE', by_expiry, 0, 1)
        local victim = oldest[1]
        if victim == key then victim = oldest[2] end
        if not victim then break end
        local victim_entries = tonumber(redis.call('HGET', entries_of, victim) or '0')
        redis.call('ZREM', by_expiry, victim)
        redis.call('HDEL', entries_of, victim)
        total = tonumber(redis.call('HINCRBY', entries_of, '', -victim_entries))
        redis.call('DEL', prefix .. 'c:' .. victim, prefix .. 'b:' .. victim, prefix .. 'wr:' .. victim,
            prefix .. 'v:' .. victim, prefix .. 'm:' .. victim)
        forgotten = forgotten + 1
    end
    for _, name in ipairs({by_expiry, entries_of}) do
        if redis.call('PTTL', name) < keep_ms then redis.call('PEXPIRE', name, keep_ms) end
    end
    return forgotten
end
"""

# KEYS: counter, then the kind's account. ARGV: amount, now, expires ("" for none), ttl in ms ("" for
# none), the cap and the namespace prefix. Returns the value and the keys forgotten.
_INCR = (
    _TRACK
    + """
local expires = redis.call('HGET', KEYS[1], 'e')
if expires and expires ~= '' and tonumber(expires) <= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1])
end
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('HINCRBY', KEYS[1], 'v', ARGV[1])
local forgotten = 0
if fresh and ARGV[3] ~= '' then
    redis.call('HSET', KEYS[1], 'e', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    forgotten = track(KEYS[2], KEYS[3], ARGV[7], tonumber(ARGV[3]), 1, tonumber(ARGV[2]), tonumber(ARGV[5]),
        ARGV[6], tonumber(ARGV[4]))
end
return {value, forgotten}
"""
)

# KEYS: value, then the kind's account. ARGV: the stored value, ttl in ms, now, expires, the cap, the
# namespace prefix, the key. Returns 1 and the keys forgotten.
_PUT = (
    _TRACK
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, track(KEYS[2], KEYS[3], ARGV[7], tonumber(ARGV[4]), 1, tonumber(ARGV[3]), tonumber(ARGV[5]),
    ARGV[6], tonumber(ARGV[2]))}
"""
)

# KEYS: buckets (a hash of "width:start" -> events), retention, then the kind's account. ARGV: now, window,
# "1" to record an event (or "" to only count), the cap, the namespace prefix, the key, then the bucket
# widths of proxy.state.buckets.WIDTHS and the buckets per retention. Returns the count and the keys
# forgotten.
_WINDOW = (
    _TRACK
    + """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local retention = tonumber(redis.call('GET', KEYS[2]) or '0')
local stored = redis.call('HGETALL', KEYS[1])
local forgotten = 0
if ARGV[3] ~= '' then
    if window > retention then retention = window end
    local target = retention / tonumber(ARGV[#ARGV])
    local width = tonumber(ARGV[7])
    local largest = tonumber(ARGV[#ARGV - 1])
    if target >= largest then
        width = math.floor(target / largest) * largest
    else
        for i = 7, #ARGV - 1 do
            if tonumber(ARGV[i]) <= target then width = tonumber(ARGV[i]) end
        end
    end
    local start = math.floor(now / width) * width
    local slot = width .. ':' .. start
    local keep_ms = math.ceil((retention + width) * 1000)
    redis.call('SET', KEYS[2], string.format('%.17g', retention), 'PX', keep_ms)
    if redis.call('HINCRBY', KEYS[1], slot, 1) == 1 then
        forgotten = track(KEYS[3], KEYS[4], ARGV[6], start + width + retention, 1, now, tonumber(ARGV[4]),
            ARGV[5], keep_ms)
        table.insert(stored, slot)
        table.insert(stored, '1')
    else
        for i = 1, #stored, 2 do
            if stored[i] == slot then stored[i + 1] = tostring(tonumber(stored[i + 1]) + 1) end
        end
    end
    redis.call('PEXPIRE', KEYS[1], keep_ms)
end
local oldest = now - math.min(window, retention)
local found = 0
for i = 1, #stored, 2 do
    local cut = string.find(stored[i], ':', 1, true)
    local width = tonumber(string.sub(stored[i], 1, cut - 1))
    local start = tonumber(string.sub(stored[i], cut + 1))
    if start + width <= now - retention then
        if ARGV[3] ~= '' then redis.call('HDEL', KEYS[1], stored[i]) end
    elseif start + width > oldest and start <= now then
        found = found + tonumber(stored[i + 1])
    end
end
return {found, forgotten}
"""
)

# KEYS: member, the set's members by expiry (a sorted set). ARGV: now, expires, ttl in ms, member, capacity,
# the prefix of the set's member keys. Beyond the capacity, the members that expire first are forgotten.
_ADD_IF_NEW = """
local expires = redis.call('GET', KEYS[1])
if expires and tonumber(expires) > tonumber(ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[2], excess)
    for i = 1, #gone, 2 do
        redis.call('DEL', ARGV[6] .. gone[i])
    end
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: map (a hash of field -> "expires\ntext"), then the kind's account. ARGV: now, expires, ttl in ms, the
# map's capacity ("" for none), the cap, the namespace prefix, the key, then field, text pairs. Returns the
# live fields before the write as field, text pairs (it drops the expired ones) and the keys forgotten.
_MERGE = (
    _TRACK
    + """
local now = tonumber(ARGV[1])
local before = {}
local stored = redis.call('HGETALL', KEYS[1])
for i = 1, #stored, 2 do
    local cut = string.find(stored[i + 1], '\\n', 1, true)
    if tonumber(string.sub(stored[i + 1], 1, cut - 1)) > now then
        table.insert(before, stored[i])
        table.insert(before, string.sub(stored[i + 1], cut + 1))
    else
        redis.call('HDEL', KEYS[1], stored[i])
    end
end
local forgotten = 0
if #ARGV > 7 then
    for i = 8, #ARGV, 2 do
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[2] .. '\\n' .. ARGV[i + 1])
    end
    local held = redis.call('HLEN', KEYS[1])
    if ARGV[4] ~= '' and held > tonumber(ARGV[4]) then
        local by_expiry = {}
        local fields = redis.call('HGETALL', KEYS[1])
        for i = 1, #fields, 2 do
            local cut = string.find(fields[i + 1], '\\n', 1, true)
            table.insert(by_expiry, {tonumber(string.sub(fields[i + 1], 1, cut - 1)), fields[i]})
        end
        table.sort(by_expiry, function(a, b) return a[1] < b[1] end)
        for i = 1, held - tonumber(ARGV[4]) do
            redis.call('HDEL', KEYS[1], by_expiry[i][2])
        end
        held = tonumber(ARGV[4])
    end
    if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
    end
    forgotten = track(KEYS[2], KEYS[3], ARGV[7], tonumber(ARGV[2]), held, now, tonumber(ARGV[5]), ARGV[6],
        tonumber(ARGV[3]))
end
return {before, forgotten}
"""
)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach the server. ``url`` is ``redis://`` or ``rediss://`` (TLS); a password or user may be
    in the URL or given here; ``ca_file`` (and a client certificate) apply to TLS."""

    url: str = field(repr=False)
    namespace: str = "egressguard"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout_s: float = 1.0

    def client(self) -> redis.Redis:
        options: dict[str, Any] = {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            # A server that is down is the caller's decision (fallback or refusal), taken at once: no
            # retries that would hold every request for seconds.
            "retry": Retry(NoBackoff(), 0),
        }
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.url.startswith("rediss://"):
            options["ssl_cert_reqs"] = "required"
            if self.ca_file is not None:
                options["ssl_ca_certs"] = self.ca_file
            if self.cert_file is not None:
                options["ssl_certfile"] = self.cert_file
                options["ssl_keyfile"] = self.key_file
        return redis.Redis.from_url(self.url, **options)


def _ms(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s * 1000))


def _time(value: float) -> str:
    return repr(float(value))


class RedisStateStore:
    """A ``StateStore`` on a Redis server, shared by every process pointed at the same namespace."""

    def __init__(
        self, settings: RedisSettings, *, clock: Clock = time.time, keys_per_kind: int = KEYS_PER_KIND
    ) -> None:
        self._clock = clock
        self._prefix = settings.namespace + ":"
        self._keys_per_kind = keys_per_kind
        self._forgotten = 0
        self._client = settings.client()
        self._incr = self._client.register_script(_INCR)
        self._put = self._client.register_script(_PUT)
        self._window = self._client.register_script(_WINDOW)
        self._add_if_new = self._client.register_script(_ADD_IF_NEW)
        self._merge = self._client.register_script(_MERGE)
        self._closed = False

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    def _account(self, key: str) -> tuple[list[str], list[str | int]]:
        """The keys of ``key``'s kind account, and the arguments every tracking script takes after its own:
        the cap (none for a freeze), the namespace prefix, the key."""
        name = kind(key)
        cap: int | str = self._keys_per_kind if capped(key) else ""
        return [self._key("t", name), self._key("tw", name)], [cap, self._prefix, key]

    def _tracked(self, reply: list[Any]) -> Any:
        """A tracking script's own result, counting the keys it forgot."""
        self._forgotten += int(reply[1])
        return reply[0]

    @property
    def forgotten(self) -> int:
        return self._forgotten

    def _run[T](self, operation: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the state store is closed")
        try:
            return operation()
        except (redis.RedisError, OSError) as error:
            raise StateUnavailable(f"redis: {type(error).__name__}: {error}"[:300]) from error

    # --- counters ---------------------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        now = self._clock()
        expiry: list[str | int] = ["", ""] if ttl_s is None else [_time(now + ttl_s), _ms(ttl_s)]
        account, tracking = self._account(key)
        keys, args = [self._key("c", key), *account], [amount, _time(now), *expiry, *tracking]
        return int(self._tracked(self._run(lambda: self._incr(keys=keys, args=args))))

    def counter(self, key: str) -> int:
        now = self._clock()
        value, expires = self._run(lambda: self._client.hmget(self._key("c", key), ["v", "e"]))
        if value is None or (expires and float(expires) <= now):
            return 0
        return int(value)

    # --- sliding windows --------------------------------------------------------------------------------

    def hit(self, key: str, window_s: float, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        return self._count(key, window_s, at, "1")

    def tally(self, key: str, window_s: float) -> None:
        self.hit(key, window_s)

    def count(self, key: str, window_s: float, now: float | None = None) -> int:
        return self._count(key, window_s, self._clock() if now is None else now, "")

    def tally_and_count(
        self, tallies: Sequence[tuple[str, float]], counts: Sequence[tuple[str, float]]
    ) -> list[int]:
        at = self._clock()

        def send() -> list[Any]:
            # MULTI/EXEC: no other client's command runs between the scripts, and two round trips (redis-py
            # asks SCRIPT EXISTS first) where each script took one.
            with self._client.pipeline(transaction=True) as pipe:
                for key, window_s in tallies:
                    self._window(*self._window_call(key, window_s, at, "1"), client=pipe)
                for key, window_s in counts:
                    self._window(*self._window_call(key, window_s, at, ""), client=pipe)
                return pipe.execute()

        replies = [int(self._tracked(reply)) for reply in self._run(send)]
        return replies[len(tallies) :]

    def _count(self, key: str, window_s: float, at: float, record: str) -> int:
        keys, args = self._window_call(key, window_s, at, record)
        return int(self._tracked(self._run(lambda: self._window(keys=keys, args=args))))

    def _window_call(self, key: str, window_s: float, at: float, record: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the window script for one hit (``record`` "1") or count ("")."""
        account, tracking = self._account(key)
        keys = [self._key("b", key), self._key("wr", key), *account]
        return keys, [_time(at), _time(window_s), record, *tracking, *WIDTHS, BUCKETS_PER_RETENTION]

    # --- expiring sets ----------------------------------------------------------------------------------

    def add_if_new(self, set_name: str, member: str, ttl_s: float, now: float | None = None) -> bool:
        at = self._clock() if now is None else now
        # The set's name is length-prefixed so that no (set, member) pair can spell another's key.
        members = f"{len(set_name)}:{set_name}:"
        keys = [self._key("s", members + member), self._key("so", members)]
        args: list[str | int] = [
            _time(at),
            _time(at + ttl_s),
            _ms(ttl_s),
            member,
            SET_CAPACITY,
            self._key("s", members),
        ]
        return bool(self._run(lambda: self._add_if_new(keys=keys, args=args)))

    # --- key/values -------------------------------------------------------------------------------------

    def put(self, key: str, value: JSONValue, ttl_s: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if ttl_s is None:
            self._run(lambda: self._client.set(self._key("v", key), "\n" + text))
        else:
            now = self._clock()
            expires = _time(now + ttl_s)
            account, tracking = self._account(key)
            keys = [self._key("v", key), *account]
            args = [expires + "\n" + text, _ms(ttl_s), _time(now), expires, *tracking]
            self._tracked(self._run(lambda: self._put(keys=keys, args=args)))

    def get(self, key: str) -> JSONValue | None:
        now = self._clock()
        return _live_value(self._run(lambda: self._client.get(self._key("v", key))), now)

    def delete(self, key: str) -> None:
        self._run(lambda: self._client.delete(self._key("v", key)))

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        name = self._key("v", key)
        text = "\n" + json.dumps(value, separators=(",", ":"), ensure_ascii=False)

        def watched() -> bool:
            # WATCH, then MULTI/EXEC: the write is dropped (WatchError) where another client wrote the
            # key after it was read, and the value it holds then is not the one expected.
            with self._client.pipeline() as pipe:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]  # redis-py leaves watch unannotated
                    if _live_value(pipe.get(name), self._clock()) != expected:
                        return False
                    pipe.multi()
                    pipe.set(name, text)
                    pipe.execute()
                except redis.WatchError:
                    return False
                return True

        return self._run(watched)

    def merge(
        self, key: str, fields: dict[str, JSONValue], ttl_s: float, *, capacity: int | None = None
    ) -> dict[str, JSONValue]:
        now = self._clock()
        account, tracking = self._account(key)
        args: list[str | int] = [_time(now), _time(now + ttl_s), _ms(ttl_s), capacity or "", *tracking]
        for name, value in fields.items():
            args += [name, json.dumps(value, separators=(",", ":"), ensure_ascii=False)]
        keys = [self._key("m", key), *account]
        pairs = self._tracked(self._run(lambda: self._merge(keys=keys, args=args)))
        return {
            pairs[index].decode("utf-8"): cast(JSONValue, json.loads(pairs[index + 1]))
            for index in range(0, len(pairs), 2)
        }

    def items(self, prefix: str) -> dict[str, JSONValue]:
        now = self._clock()
        start = self._key("v", "")
        pattern = start + re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"

        def scan() -> list[tuple[bytes, object]]:
            keys = list(self._client.scan_iter(match=pattern, count=500))
            return list(zip(keys, self._client.mget(keys), strict=True)) if keys else []

        found: dict[str, JSONValue] = {}
        for name, stored in self._run(scan):
            value = _live_value(stored, now)
            if value is not None:
                found[name.decode("utf-8")[len(start) :]] = value
        return found

    # --- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


def _live_value(stored: object, now: float) -> JSONValue | None:
    """A stored value (``expires\ntext``) when present and not expired by the store's clock."""
    if stored is None:
        return None
    expires, _, text = cast(bytes, stored).decode("utf-8").partition("\n")
    if expires and float(expires) <= now:
        return None
    return cast(JSONValue, json.loads(text))
