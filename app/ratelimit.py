"""Per-authorizer rate limits (authorization.md section 5) on the `limits` library.

Storage is `RATE_LIMIT_STORAGE`: `memory://` (per process: limits' synchronous memory storage, which does no
I/O) or `redis://host:port/db` (one budget shared by every instance, through limits' asyncio Redis storage so a
round trip never blocks the event loop; a decision is one Lua script on limits' key layout). A request is taken
from every window of its budget or from none. A storage that fails is counted and logged, and the authorizer's
`on_storage_error` decides (allow by default).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
import structlog
from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter as SyncMovingWindow
from msgspec import Meta

from app.config import END, worded
from app.patterns import MISSING, parse_pointer, resolve_pointer
from app.settings import SettingsError

log = structlog.get_logger("app.ratelimit")
Amount = Annotated[int, Meta(ge=1, le=1_000_000_000)]


def _counted_whatever_the_amount(window: type[RateLimitItem]) -> type[RateLimitItem]:
    """A window whose storage key leaves out its amount: limits puts it in, so a reload that lowered a limit
    during abuse gave every client a fresh budget (and raising it back brought the old counts back; found by a
    review). The same requests are counted whatever the limit they are held to."""
    class Window(window):  # type: ignore[misc,valid-type]
        def key_for(self, *identifiers: str) -> str:  # type: ignore[override]  # budget_key's texts
            return "/".join([self.namespace, *identifiers, str(self.multiples), self.GRANULARITY.name])

    Window.__name__ = Window.__qualname__ = window.__name__
    return Window


# Shortest window first: a request refused by a short window does not consume the longer windows' budgets.
_WINDOWS = (("per_second", _counted_whatever_the_amount(RateLimitItemPerSecond)),
            ("per_minute", _counted_whatever_the_amount(RateLimitItemPerMinute)),
            ("per_hour", _counted_whatever_the_amount(RateLimitItemPerHour)),
            ("per_day", _counted_whatever_the_amount(RateLimitItemPerDay)))
REDIS_TIMEOUT_SECONDS = 0.5  # a decision is one Redis round trip (one script), so this bounds what it waits


_KEY_WORDS = "'authorizer', or 'claim:' and a claim name or a JSON Pointer (claim:sub, claim:/org/id)"


class RateLimitDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_second: Amount | None = None
    per_minute: Amount | None = None
    per_hour: Amount | None = None
    per_day: Amount | None = None
    strategy: Literal["fixed-window", "moving-window"] = "fixed-window"
    key: Annotated[str, Meta(pattern=worded(r"^(authorizer|claim:.{1,256})" + END, _KEY_WORDS))] = "authorizer"
    on_storage_error: Literal["allow", "deny"] = "allow"
    status: Literal[429, 403] = 429


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A compiled limit: the windows, and how requests are grouped into budgets."""

    items: tuple[RateLimitItem, ...]
    moving: bool
    claim: str | None  # None: one budget for the authorizer; as written (a name, or a JSON Pointer)
    deny_on_storage_error: bool
    status: int
    pointer: tuple[str, ...] = ()  # the claim's path: ("sub",), or ("org", "id") for `claim:/org/id`


def compile_rate_limit(doc: RateLimitDoc) -> RateLimit | None:
    """None when no window is set (a `rate_limit` with only options limits nothing; the loader refuses it).
    `claim:/org/id` is a JSON Pointer (RFC 6901), as in claims_to_headers: it was read as a claim named `/org/id`,
    which no token has, so every user shared the one budget of requests without the claim (found by a review).
    Raises PatternError for a malformed pointer."""
    items = tuple(factory(getattr(doc, name)) for name, factory in _WINDOWS if getattr(doc, name) is not None)
    if not items:
        return None
    claim = doc.key.removeprefix("claim:") if doc.key.startswith("claim:") else None
    pointer = () if claim is None else parse_pointer(claim) if claim.startswith("/") else (claim,)
    return RateLimit(items, doc.strategy == "moving-window", claim, doc.on_storage_error == "deny", doc.status,
                     pointer)


class RateLimitState(msgspec.Struct, frozen=True):
    """The decision's `rate_limit`: the window closest to exhaustion (or the one that refused)."""

    limited: bool
    limit: int
    remaining: int
    reset: int  # seconds until the window resets
    window: str  # e.g. "60 per 1 minute"
    retry_after: int | None = None
    storage_error: bool = False

    def headers(self) -> dict[str, str]:
        """RateLimit-* (draft-ietf-httpapi-ratelimit-headers) and Retry-After (RFC 9110 10.2.3) when refused.
        After a storage failure nothing was counted: no budget is advertised (a full one, as before, was a lie)."""
        if self.storage_error:
            return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        headers = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(self.reset)}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


SWEEP_SECONDS = 10.0  # how often a memory:// store forgets its moving-window budgets that have no request left


class _MemoryStorage(MemoryStorage):
    """limits' synchronous memory storage, its expiry thread walking the budgets at most every EXPIRY_SECONDS
    (more rarely as they grow) rather than 10 ms after any request: each walk takes every budget's lock, and with
    100,000 budgets a decision cost 45-137 µs instead of 13, the thread holding the interpreter (found by a
    review). Expired budgets are only freed later: every read checks its own expiry."""

    def _MemoryStorage__schedule_expiry(self) -> None:  # the name limits' own calls reach (name mangling)
        if not self.timer.is_alive():
            budgets = len(self.events) + len(self.expirations)
            self.timer = threading.Timer(max(EXPIRY_SECONDS, budgets / 50_000),
                                         self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
            self.timer.daemon = True
            self.timer.start()


EXPIRY_SECONDS = 1.0


def _inside(entries: Any, item: RateLimitItem, now: float) -> int:
    """How many of a moving window's requests (limits' entries, newest first) are inside it at `now`, up to its
    amount: those made at `now - expiry` or later, as `_TAKE_MOVING` and limits' `acquire_entry` count them.
    limits' `test` and `get_window_stats` leave out a request made exactly `expiry` ago, so the next one was
    answered allowed and then not counted by `acquire_entry` (found by mutation testing); and they said a window
    whose requests had all left started at the oldest of them."""
    return min(bisect_right(entries, item.get_expiry() - now, key=_age), item.amount)


def _age(entry: Any) -> float:
    return -entry.atime  # ascending along a list of entries newest first


def _storage(uri: str) -> Any:
    if uri.startswith("memory://"):
        # In-process dictionaries need no event loop: measured here, a decision's hit costs ~30 µs with limits'
        # synchronous memory storage and ~125 µs with its asyncio twin (locks and a scheduled expiry task).
        return _MemoryStorage()
    from redis.asyncio import ConnectionPool
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError

    # No client-side retries: a down Redis must cost one short timeout, then on_storage_error decides.
    try:
        storage = RedisStorage("async+" + uri, implementation="redispy", wrap_exceptions=True,
                               socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                               retry=Retry(NoBackoff(), 0))  # type: ignore[arg-type]
        # The URL's query options reach a connection only when it is made: one built now (not connected) refuses
        # those the client does not take (`?protocol=4`, `?bogus=1`, `?ssl_cert_reqs=` without TLS). They started,
        # and every decision then failed on the storage (found by a review).
        connection = ConnectionPool.from_url(uri.replace("redis+unix", "unix", 1)).make_connection()  # (limits')
    except TypeError:  # "__init__() got an unexpected keyword argument"
        raise SettingsError("RATE_LIMIT_STORAGE: the URL's query names an option the Redis client does not take "
                            "(or one that needs rediss://)") from None
    except (ConfigurationError, ValueError, RedisError) as exc:  # what settings cannot see: ?db=abc
        message = str(exc).replace(uri, "the URL")
        for values in parse_qs(urlsplit(uri).query).values():  # an option's value is never shown
            for value in values:
                message = message.replace(value, "...") if value else message
        raise SettingsError(f"RATE_LIMIT_STORAGE: {message}") from None
    except Exception as exc:  # noqa: BLE001 - the client's own failure on a value (?retry=x: an AttributeError)
        raise SettingsError(f"RATE_LIMIT_STORAGE: an option in the URL's query is not one the Redis client can use "
                            f"({type(exc).__name__})") from None
    # Values the client takes and every command then fails on (found by reviews): an encoding that does not write
    # commands as ASCII (unknown, utf-16, rot13), a timeout not above zero, a database index no Redis has.
    try:
        readable = "PING".encode(connection.encoder.encoding) == b"PING"
    except LookupError:
        readable = False
    if not readable:
        raise SettingsError("RATE_LIMIT_STORAGE: encoding must be a text encoding writing ASCII as ASCII, such as "
                            "utf-8")
    for name in ("socket_timeout", "socket_connect_timeout"):
        if getattr(connection, name, None) is not None and not getattr(connection, name) > 0:
            raise SettingsError(f"RATE_LIMIT_STORAGE: {name} must be a number of seconds above 0")
    if (getattr(connection, "health_check_interval", 0) or 0) < 0:  # a PING before every command, misread before
        # Redis 7.2 (found by mutation testing)
        raise SettingsError("RATE_LIMIT_STORAGE: health_check_interval must be a number of seconds from 0")
    if not 0 <= (getattr(connection, "db", 0) or 0) < 2 ** 31:
        raise SettingsError("RATE_LIMIT_STORAGE: db must be a database index from 0")
    return storage


async def _ready(value: Any) -> Any:
    """The synchronous memory storage answers at once, the Redis one with an awaitable: take either."""
    return await value if inspect.isawaitable(value) else value


def budget_key(authorizer: str, limit: RateLimit, claims: dict[str, Any] | None) -> tuple[str, ...]:
    """One budget per authorizer, or per claim value: its JSON text hashed (bounded keys, no separator games; the
    JSON keeps types apart, so `5` and `"5"`, or `"null"` and `null`, are different budgets). Requests without
    the claim (anonymous ones included) share one budget of their own. The strategy is part of the name: limits
    names a fixed and a moving window's budget alike, and in Redis a counter and a list under one name made the
    other strategy's script fail (WRONGTYPE) on every request for up to a window after a reload switched
    strategies, a storage error each time (found by a review). Both are tagged, so no name an earlier version
    wrote is used again: budgets started over once with that version."""
    head = (authorizer, "moving" if limit.moving else "fixed")
    if limit.claim is None:
        return head
    pointer = limit.pointer
    value = (claims or {}).get(pointer[0], MISSING) if len(pointer) == 1 else resolve_pointer(claims or {}, pointer)
    if value is MISSING:
        return (*head, "claim", limit.claim, "missing")
    return (*head, "claim", limit.claim, hashlib.sha256(msgspec.json.encode(value)).hexdigest()[:32])


@dataclass(frozen=True, slots=True)
class _Taken:
    """A budget after a request: the window that refused it (None: taken from every window), then per window the
    requests counted and the seconds until it has room again."""

    refused: int | None
    counts: list[int]
    resets: list[float]


# Take one request from every fixed window, or from none when one is full, in one atomic step: the same counters
# as limits' fixed windows (a key per window, expiring a window after its first request). KEYS: the windows;
# ARGV: their expiries, then their amounts. Returns the 1-based window that refused (0: none), the counts, the
# milliseconds to each key's expiry.
_TAKE_FIXED = """
local n = #KEYS
local refused = 0
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('get', KEYS[i]) or '0')
  if refused == 0 and counts[i] >= tonumber(ARGV[n + i]) then refused = i end
end
local out = {refused}
for i = 1, n do
  if refused == 0 then
    counts[i] = redis.call('incr', KEYS[i])
    if counts[i] == 1 then redis.call('expire', KEYS[i], ARGV[i]) end
  end
  out[1 + i] = counts[i]
  out[1 + n + i] = redis.call('pttl', KEYS[i])
end
return out
"""

# The same for moving windows, on limits' layout (a list per window, newest timestamp first, trimmed to the
# amount). ARGV: now, the expiries, the amounts. Returns the window that refused (0: none), each window's count
# of requests inside it, and its oldest request's timestamp (as text: Lua numbers would lose the fraction).
_TAKE_MOVING = """
local now = tonumber(ARGV[1])
local n = #KEYS
local function window(key, expiry, amount)
  local low, high, found = 0, amount - 1, nil
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', key, mid))
    if value and value >= now - expiry then found = mid; low = mid + 1 else high = mid - 1 end
  end
  if found then return found + 1, redis.call('lindex', key, found) end
  return 0, ARGV[1]
end
local refused = 0
local counts, oldest = {}, {}
for i = 1, n do
  counts[i], oldest[i] = window(KEYS[i], tonumber(ARGV[1 + i]), tonumber(ARGV[1 + n + i]))
  if refused == 0 and counts[i] >= tonumber(ARGV[1 + n + i]) then refused = i end
end
if refused == 0 then
  for i = 1, n do
    redis.call('lpush', KEYS[i], ARGV[1])
    redis.call('ltrim', KEYS[i], 0, tonumber(ARGV[1 + n + i]) - 1)
    redis.call('expire', KEYS[i], ARGV[1 + i])
    if counts[i] == 0 then oldest[i] = ARGV[1] end
    counts[i] = counts[i] + 1
  end
end
local out = {refused}
for i = 1, n do
  out[1 + i] = counts[i]
  out[1 + n + i] = oldest[i]
end
return out
"""


# /readyz's write: a one-second fixed window of its own (no authorizer id holds parentheses) it never exhausts.
_PROBE = RateLimit((_WINDOWS[0][1](1_000_000_000),), False, None, False, 429)
_PROBE_KEY = ("(readyz)", "fixed")


class Budgets:
    """The rate-limit budgets in the configured storage; one instance per app (per worker)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.storage = _storage(uri)
        memory = uri.startswith("memory://")
        self.moving: Any = SyncMovingWindow(self.storage) if memory else None  # Redis: _TAKE_MOVING instead
        self.swept = time.monotonic()
        self.storage_errors = 0
        self._scripts: tuple[Any, Any] | None = None  # _TAKE_FIXED and _TAKE_MOVING, registered at first use

    @property
    def backend(self) -> str:
        return "memory" if self.uri.startswith("memory://") else "redis"

    def _take_in_memory(self, limit: RateLimit, key: tuple[str, ...]) -> _Taken:
        """Every window or none, in this worker's memory: no await between the reads and the writes, so no other
        decision of the worker comes between them."""
        names = [item.key_for(*key) for item in limit.items]
        if limit.moving:
            self._sweep()
            windows = self.storage.events  # per window, its requests' Entry objects, newest first
            now = time.time()
            refused = next((index for index, (name, item) in enumerate(zip(names, limit.items))
                            if _inside(windows.get(name, ()), item, now) >= item.amount), None)
            if refused is None:
                for item in limit.items:
                    self.moving.hit(item, *key)
                now = time.time()  # after the writes: their clock is the one the windows started on
            counts, resets = [], []
            for name, item in zip(names, limit.items):
                entries = windows.get(name, ())  # one list: limits' expiry thread replaces it, never shortens it
                count = _inside(entries, item, now)
                # A window has room again when its oldest request inside leaves; a full one when its amount-th
                # newest does, not its oldest: after a reload lowered the amount they differ (found by a review).
                counts.append(count)
                resets.append(max(0.0, entries[count - 1].atime + item.get_expiry() - now) if count else 0.0)
            return _Taken(refused, counts, resets)
        counts = [self.storage.get(name) for name in names]
        refused = next((index for index, item in enumerate(limit.items) if counts[index] >= item.amount), None)
        if refused is None:
            counts = [self.storage.incr(name, item.get_expiry()) for name, item in zip(names, limit.items)]
        now = time.time()  # after the writes (a reset read from an earlier clock said 61 s for a fresh minute)
        return _Taken(refused, counts, [max(0.0, self.storage.get_expiry(name) - now) if count else
                                        float(item.get_expiry()) for name, count, item in
                                        zip(names, counts, limit.items)])

    def _sweep(self) -> None:
        """Forget the moving-window budgets whose windows have ended, every SWEEP_SECONDS. limits' expiry thread
        empties their lists of requests but keeps the keys, so a worker kept ~200 bytes for every budget it ever
        saw (every `sub` under `claim:sub`) and its thread walked them all (found by a review). Only empty lists
        go: the thread never writes one back, and a request adds to its list in this thread."""
        now = time.monotonic()
        if now - self.swept < SWEEP_SECONDS:
            return
        self.swept = now
        events = self.storage.events
        for name in [name for name, entries in events.items() if not entries]:
            events.pop(name, None)

    async def _take_in_redis(self, limit: RateLimit, key: tuple[str, ...], now: float) -> _Taken:
        """Every window or none, in one Lua script (one round trip, atomic in Redis): a refused request spends no
        window and two workers cannot both take a last place."""
        bridge = self.storage.bridge
        if self._scripts is None:
            connection = bridge.get_connection()
            self._scripts = (connection.register_script(_TAKE_FIXED), connection.register_script(_TAKE_MOVING))
        names = [bridge.prefixed_key(item.key_for(*key)) for item in limit.items]
        expiries = [item.get_expiry() for item in limit.items]
        amounts = [item.amount for item in limit.items]
        count = len(names)
        if limit.moving:
            out = await self._scripts[1](keys=names, args=[repr(now), *expiries, *amounts])
            counts = [int(value) for value in out[1:1 + count]]
            oldest = [float(value) for value in out[1 + count:]]
            resets = [max(0.0, first + expiry - now) if used else 0.0
                      for first, expiry, used in zip(oldest, expiries, counts)]
        else:
            out = await self._scripts[0](keys=names, args=[*expiries, *amounts])
            counts = [int(value) for value in out[1:1 + count]]
            resets = [int(left) / 1000 if int(left) >= 0 else float(expiry)
                      for left, expiry in zip(out[1 + count:], expiries)]
        return _Taken(int(out[0]) - 1 if int(out[0]) else None, counts, resets)

    async def hit(self, authorizer: str, limit: RateLimit, claims: dict[str, Any] | None) -> RateLimitState:
        """Take one request from every window of the budget, or from none when one is exhausted (found by a review:
        a refused request used up the shorter windows), and report the window that refuses for longest, or the
        one closest to exhaustion."""
        key = budget_key(authorizer, limit, claims)
        try:
            now = time.time()
            taken = (self._take_in_memory(limit, key) if self.backend == "memory"
                     else await self._take_in_redis(limit, key, now))
        except Exception as exc:  # noqa: BLE001 - any storage failure: count, log, let the authorizer decide
            self.storage_errors += 1
            log.warning("rate_limit_storage_error", authorizer=authorizer, backend=self.backend,
                        error_type=type(exc).__name__, decision="deny" if limit.deny_on_storage_error else "allow")
            first = limit.items[0]
            if limit.deny_on_storage_error:
                return RateLimitState(True, first.amount, 0, 1, str(first), retry_after=1, storage_error=True)
            return RateLimitState(False, first.amount, first.amount, 0, str(first), storage_error=True)
        items = limit.items
        if taken.refused is not None:
            # Retry-After is when every exhausted window has room again (the refusing one may reopen first).
            reset, index = max((max(1, math.ceil(taken.resets[index])), index) for index, item in enumerate(items)
                               if taken.counts[index] >= item.amount or index == taken.refused)
            return RateLimitState(True, items[index].amount, 0, reset, str(items[index]), retry_after=reset)
        remaining = [max(0, item.amount - count) for item, count in zip(items, taken.counts)]
        # The window closest to exhaustion; on a tie the longer one (it takes longer to come back).
        index = min(range(len(items)), key=lambda position: (remaining[position], -position))
        return RateLimitState(False, items[index].amount, remaining[index], max(0, math.ceil(taken.resets[index])),
                              str(items[index]))

    async def state(self) -> dict[str, Any]:
        """For /readyz: the backend, whether it takes a decision's write now, and the storage errors counted so far.
        A PING alone said ok of a Redis that answers it but refuses every decision's script: one out of memory
        under `noeviction`, or demoted to a replica by a failover (READONLY; found by a review)."""
        try:
            ok = bool(await _ready(self.storage.check()))
            if ok and self.backend == "redis":  # as a decision writes: the same script, keys and commands, so a
                # Redis user allowed only what decisions use passes (a SET of another key failed; found by a review)
                await self._take_in_redis(_PROBE, _PROBE_KEY, time.time())
        except Exception:  # noqa: BLE001 - a probe never fails readiness with an exception
            ok = False
        return {"backend": self.backend, "ok": ok, "storage_errors": self.storage_errors}

    async def aclose(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection must not fail shutdown
                pass


class ScratchBudgets(Budgets):
    """The budgets of inline authorizers (POST /v1/authorize with an authorizer object, for trying rules out):
    counted in this worker's memory, never in RATE_LIMIT_STORAGE, and all forgotten after `max_hits` hits. A
    caller chooses an inline authorizer's limits, and its budget is named after the document, so with the shared
    storage every variation of a document made keys that lived as long as their window (a day for `per_day`),
    in the Redis instance the configured authorizers count in (found by a review). Forgetting bounds the keys
    (at most one per window a hit touches) and moving-window entries to a few per hit since the last reset."""

    def __init__(self, max_hits: int) -> None:
        super().__init__("memory://")
        self.max_hits = max_hits
        self.hits_since_reset = 0

    async def hit(self, authorizer: str, limit: RateLimit, claims: dict[str, Any] | None) -> RateLimitState:
        self.hits_since_reset += 1
        if self.hits_since_reset > self.max_hits:
            # A new store, not reset() in place: the old one's expiry thread may be walking its dictionaries
            # (clearing them under it raised KeyError there; found by a review). It ends with its last walk.
            self.storage = _storage("memory://")
            self.moving = SyncMovingWindow(self.storage)
            self.hits_since_reset = 1
        return await super().hit(authorizer, limit, claims)
