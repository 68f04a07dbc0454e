"""Rate limits in a real redis-server started by the test: instances share one budget, and when Redis is down the
authorizer's `on_storage_error` decides, without a 5xx."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from app.server import create_app
from app.settings import Settings
from tests.conftest import FixedClock, claims, require_binary, rs256_policy
from tests.mint import key_for, mint

pytestmark = pytest.mark.redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(require_binary("redis-server"), tmp_path)
    server.start()
    yield server
    server.stop()


def authorizers(**rate_limit: Any) -> str:
    return json.dumps({"api": {"policy": rs256_policy(), "rules": [{"id": "all", "effect": "allow"}],
                               "rate_limit": rate_limit}})


def instances(stack: ExitStack, redis: RedisServer, count: int, url: str | None = None,
              **rate_limit: Any) -> list[TestClient[Any]]:
    settings = Settings(authorizers_json=authorizers(**rate_limit), rate_limit_storage=url or redis.url)
    return [stack.enter_context(TestClient(create_app(settings, clock=FixedClock()), raise_server_exceptions=False))
            for _ in range(count)]


def decide(client: TestClient[Any], **claim_overrides: Any) -> dict[str, Any]:
    token = mint(claims(**claim_overrides), key_for("RS256"))
    response = client.post("/v1/authorize", json={"authorizer": "api", "request": {
        "method": "GET", "path": "/", "headers": {"authorization": f"Bearer {token}"}}})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_two_instances_share_one_budget(redis, strategy):
    with ExitStack() as stack:
        first, second = instances(stack, redis, 2, per_minute=10, strategy=strategy)
        answers = [decide((first, second)[index % 2]) for index in range(12)]
    assert [answer["allowed"] for answer in answers] == [True] * 10 + [False] * 2
    assert answers[9]["rate_limit"]["remaining"] == 0
    assert answers[10]["reason"] == "rate_limited" and answers[10]["rate_limit"]["retry_after"] >= 1


def test_switching_the_strategy_keeps_the_limit_enforced(redis):
    """Found by a review: limits names a fixed and a moving window's budget alike, and in Redis the other
    strategy's script then failed on the key (WRONGTYPE) until it expired: every request a storage error, so
    allowed (or, with on_storage_error: deny, all refused) for up to a day, while /readyz said ok."""
    import redis as redis_client

    # What the version before wrote for either strategy (a moving window's list) under the name both shared.
    redis_client.Redis.from_url(redis.url).rpush("LIMITS:LIMITER/api/3/1/day", "1")
    with ExitStack() as stack:
        (fixed,) = instances(stack, redis, 1, per_day=3)
        assert [decide(fixed)["allowed"] for _ in range(4)] == [True, True, True, False]
        assert fixed.app.state.authorizers.budgets.storage_errors == 0
        (moving,) = instances(stack, redis, 1, per_day=3, strategy="moving-window")
        answers = [decide(moving) for _ in range(4)]
        storage_errors = moving.app.state.authorizers.budgets.storage_errors
    assert [answer["allowed"] for answer in answers] == [True, True, True, False]
    assert not any(answer["rate_limit"]["storage_error"] for answer in answers) and storage_errors == 0


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_a_limit_changed_by_a_reload_keeps_counting_the_same_requests(redis, strategy):
    """Found by a review: the amount was part of the budget's name, so lowering a limit during abuse (a reload,
    here a second instance with the new document) gave every client a fresh budget, and raising it back brought
    the old counts back."""
    with ExitStack() as stack:
        (before,) = instances(stack, redis, 1, per_day=5, strategy=strategy)
        assert [decide(before)["allowed"] for _ in range(3)] == [True] * 3
        (lowered,) = instances(stack, redis, 1, per_day=3, strategy=strategy)
        refused = decide(lowered)
        (raised,) = instances(stack, redis, 1, per_day=5, strategy=strategy)
        answers = [decide(raised)["allowed"] for _ in range(3)]
    assert refused["reason"] == "rate_limited" and refused["rate_limit"]["limit"] == 3
    # Only what was let through counts (a refused request spends no window): 3 of the 5 are spent.
    assert answers == [True, True, False]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_a_refused_request_spends_no_window_and_retry_after_waits_for_every_exhausted_one(redis, strategy):
    """Found by a review: a request refused by a longer window used up the shorter ones, and Retry-After named the
    first window that refused, so a client obeying it was refused again until the longest exhausted window
    reopened."""
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_minute=3, per_hour=3, strategy=strategy)
        answers = [decide(client) for _ in range(5)]
        (tight,) = instances(stack, redis, 1, per_second=3, per_minute=2, strategy=strategy, key="claim:sub")
        spent = [decide(tight, sub="one") for _ in range(4)]
    assert [answer["allowed"] for answer in answers] == [True, True, True, False, False]
    for refused in answers[3:]:
        state = refused["rate_limit"]
        assert state["window"] == "3 per 1 hour" and 3540 <= state["retry_after"] <= 3600, state
    assert [answer["allowed"] for answer in spent] == [True, True, False, False]
    assert [answer["rate_limit"]["window"] for answer in spent[2:]] == ["2 per 1 minute"] * 2


def test_a_fixed_window_in_redis_says_when_it_reopens_to_the_second(redis):
    """Found by a review: a fresh one-second window said `RateLimit-Reset: 2` (and `Retry-After: 2`), a minute
    61: limits reads Redis's TTL in whole seconds and adds a later clock."""
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_second=2)
        headers = {"Authorization": f"Bearer {mint(claims(), key_for('RS256'))}"}
        answers = [client.get("/v1/forward-auth/api", headers=headers) for _ in range(3)]
        (minute,) = instances(stack, redis, 1, per_minute=5, key="claim:sub")
        first = decide(minute, sub="fresh-minute")
    if answers[2].status_code != 429:  # the three requests straddled a second: the window started over
        pytest.skip("the requests straddled a window")
    assert [answer.headers["RateLimit-Reset"] for answer in answers] == ["1", "1", "1"]
    assert answers[2].headers["Retry-After"] == "1"
    assert first["rate_limit"]["reset"] == 60


def test_claim_keyed_budgets_are_shared_per_claim_value(redis):
    with ExitStack() as stack:
        first, second = instances(stack, redis, 2, per_minute=3, key="claim:sub")
        alice = [decide((first, second)[index % 2], sub="alice")["allowed"] for index in range(4)]
        bob = [decide(second, sub="bob")["allowed"] for _ in range(3)]
    assert alice == [True, True, True, False] and bob == [True, True, True]


@pytest.mark.parametrize("on_error, allowed, reason", [
    ("allow", True, "rule_allowed"), ("deny", False, "rate_limited"), (None, True, "rule_allowed"),
], ids=["allow", "deny", "default-allow"])
def test_redis_down_on_storage_error_decides_without_a_5xx(redis, on_error, allowed, reason):
    with ExitStack() as stack:
        chosen = {"on_storage_error": on_error} if on_error else {}
        (client,) = instances(stack, redis, 1, per_minute=100, per_day=10_000, **chosen)
        assert decide(client)["allowed"] is True
        redis.stop()
        bodies = [decide(client) for _ in range(3)]
        forward = client.get("/v1/forward-auth/api", headers={
            "Authorization": f"Bearer {mint(claims(), key_for('RS256'))}"})
        budgets = client.app.state.authorizers.budgets
        ready = client.get("/readyz")
    # Nothing was counted: an allowed request leaves the budget (its shortest window) as it was; a refused one says
    # to retry in a second.
    state = ({"limited": False, "remaining": 100, "reset": 0, "retry_after": None} if allowed else
             {"limited": True, "remaining": 0, "reset": 1, "retry_after": 1})
    for body in bodies:
        assert (body["allowed"], body["reason"]) == (allowed, reason)
        assert body["rate_limit"] == {"limit": 100, "window": "100 per 1 minute", "storage_error": True, **state}
    assert forward.status_code == (200 if allowed else 429)
    # Nothing was counted: no RateLimit-* budget is advertised (it said a full one); a refusal says when to retry.
    assert not any(name.lower().startswith("ratelimit-") for name in forward.headers)
    assert ("retry-after" in forward.headers) is (not allowed)
    assert budgets.storage_errors == 4
    assert ready.status_code < 500
    assert ready.json()["rate_limit_storage"] == {"backend": "redis", "ok": False, "storage_errors": 4}


@pytest.mark.parametrize("refusing, restoring", [
    ([("CONFIG", "SET", "maxmemory-policy", "noeviction"), ("CONFIG", "SET", "maxmemory", "1")],
     [("CONFIG", "SET", "maxmemory", "0")]),  # out of memory: writes refused with OOM
    ([("REPLICAOF", "127.0.0.1", "free")], [("REPLICAOF", "NO", "ONE")]),  # demoted by a failover: READONLY
], ids=["out-of-memory", "read-only-replica"])
def test_readiness_says_the_storage_is_not_ok_while_redis_answers_pings_but_refuses_writes(redis, refusing,
                                                                                             restoring):
    """A PING was all /readyz tried: it said ok while every decision was a storage error (found by a review)."""
    import redis as redis_client

    admin = redis_client.Redis.from_url(redis.url)
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_minute=100, key="claim:sub")
        assert decide(client)["rate_limit"]["storage_error"] is False
        assert client.get("/readyz").json()["rate_limit_storage"]["ok"] is True
        for command in refusing:
            admin.execute_command(*(str(free_port()) if part == "free" else part for part in command))
        refused = [decide(client, sub=f"user-{index}")["rate_limit"]["storage_error"] for index in range(2)]
        storage = client.get("/readyz").json()["rate_limit_storage"]
        for command in restoring:
            admin.execute_command(*command)
        after = client.get("/readyz").json()["rate_limit_storage"]
    admin.close()
    assert refused == [True, True] and storage["ok"] is False and storage["storage_errors"] == 2
    assert after["ok"] is True


def test_readiness_says_ok_for_a_redis_user_allowed_only_what_decisions_use(redis):
    """Found by a review: the probe was a SET of a key outside the budgets', which such a user may not send."""
    import redis as redis_client

    admin = redis_client.Redis.from_url(redis.url)
    admin.execute_command("ACL", "SETUSER", "decisions", "on", ">decisions-pw", "~LIMITS:LIMITER/*", "+ping",
                          "+evalsha", "+eval", "+script|load", "+hello", "+client", "+select", "+auth", "+get",
                          "+incr", "+expire", "+pttl", "+lindex", "+lpush", "+ltrim", "+llen")
    admin.close()
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, f"redis://decisions:decisions-pw@127.0.0.1:{redis.port}/0",
                              per_minute=100)
        answers = [decide(client) for _ in range(2)]
        storage = client.get("/readyz").json()["rate_limit_storage"]
    assert [answer["rate_limit"]["storage_error"] for answer in answers] == [False, False]
    assert storage == {"backend": "redis", "ok": True, "storage_errors": 0}


def test_service_recovers_when_redis_comes_back(redis):
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_minute=2)
        assert decide(client)["rate_limit"]["storage_error"] is False
        redis.stop()
        assert decide(client)["rate_limit"]["storage_error"] is True
        redis.start()
        answers = [decide(client) for _ in range(3)]
    assert [answer["rate_limit"]["storage_error"] for answer in answers] == [False] * 3
    # Redis restarted empty (--save ''): a fresh budget of two.
    assert [answer["allowed"] for answer in answers] == [True, True, False]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_two_workers_hammering_one_budget_admit_exactly_its_amount_and_refusals_spend_nothing(redis, strategy):
    """Found by a review of a first fix: giving back a refused request's count after the fact raced with other
    workers (a key that expired in between lost a count of the next window: 47 admitted of 20). Each decision
    now takes from every window or from none, in one script."""
    import asyncio

    import redis as redis_client

    from app.ratelimit import Budgets, RateLimitDoc, budget_key, compile_rate_limit

    limit = compile_rate_limit(RateLimitDoc(per_minute=25, per_hour=20, strategy=strategy))

    async def flood() -> tuple[list[Any], str]:
        first, second = Budgets(redis.url), Budgets(redis.url)
        try:
            states = await asyncio.gather(*(budgets.hit("api", limit, None) for _ in range(60)
                                            for budgets in (first, second)))
            return states, first.storage.bridge.prefixed_key(limit.items[0].key_for(*budget_key("api", limit, None)))
        finally:
            await first.aclose()
            await second.aclose()

    states, minute_key = asyncio.run(flood())
    assert sum(not state.limited for state in states) == 20 and not any(state.storage_error for state in states)
    refused = [state for state in states if state.limited]
    assert {state.window for state in refused} == {"20 per 1 hour"} and min(state.retry_after for state in refused) > 60
    client = redis_client.Redis(port=redis.port)
    try:
        spent = int(client.get(minute_key)) if strategy == "fixed-window" else client.llen(minute_key)
    finally:
        client.close()
    assert spent == 20  # the shorter window counted the admitted requests only, none of the 100 refused


# The scripts' windows, with the clock the decisions pass to Redis stubbed (found by mutation testing: each of
# these could change unseen)

def _hits(redis: RedisServer, limit_doc: dict[str, Any] | list[dict[str, Any]], clock: list[float] | None,
          times: list[float], monkeypatch: Any, pause: float = 0.0) -> list[Any]:
    """A budget's states for hits at `times` (seconds after the start of the stubbed clock, else real pauses), under
    one limit or one per hit (a reload between hits)."""
    import asyncio

    from app.ratelimit import Budgets, RateLimitDoc, compile_rate_limit

    docs = limit_doc if isinstance(limit_doc, list) else [limit_doc] * len(times)
    limits = [compile_rate_limit(RateLimitDoc(**doc)) for doc in docs]
    if clock is not None:
        monkeypatch.setattr(time, "time", lambda: clock[0])

    async def run() -> list[Any]:
        budgets = Budgets(redis.url)
        states, start = [], clock[0] if clock is not None else 0.0
        try:
            for at, limit in zip(times, limits):
                if clock is not None:
                    clock[0] = start + at
                else:
                    await asyncio.sleep(pause)
                states.append(await budgets.hit("api", limit, None))
            return states
        finally:
            await budgets.aclose()
    return asyncio.run(run())


def test_a_moving_window_in_redis_counts_a_request_made_exactly_a_window_ago_as_memory_does(redis, monkeypatch):
    states = _hits(redis, {"per_second": 1, "strategy": "moving-window"}, [1_000_000.0], [0.0, 1.0, 1.001],
                   monkeypatch)
    assert [state.limited for state in states] == [False, True, False]
    assert (states[1].retry_after, states[1].reset) == (1, 1)


def test_a_full_moving_window_in_redis_reopens_when_its_oldest_request_inside_leaves(redis, monkeypatch):
    states = _hits(redis, {"per_minute": 2, "strategy": "moving-window"}, [1_000_000.0], [0.0, 1.0, 2.0],
                   monkeypatch)
    assert [state.limited for state in states] == [False, False, True] and states[2].retry_after == 58


def test_a_moving_window_lowered_by_a_reload_in_redis_reopens_when_its_amount_th_newest_request_leaves(redis,
                                                                                                    monkeypatch):
    """As in memory: 10 requests at 0, 5, ... 45 s, then the limit lowered to 3 at 50 s. The script looked past
    the amount for the oldest request inside, Retry-After would name the 10th newest's leaving (at 60 s), and
    clients obeying it were refused again until the 3rd newest (35 s) left at 95 s."""
    ten, three = {"per_minute": 10, "strategy": "moving-window"}, {"per_minute": 3, "strategy": "moving-window"}
    states = _hits(redis, [ten] * 10 + [three] * 3, [1_000_000.0],
                   [5.0 * index for index in range(11)] + [94.9, 95.1], monkeypatch)
    assert [state.limited for state in states] == [False] * 10 + [True, True, False]
    assert (states[10].retry_after, states[10].window) == (45, "3 per 1 minute")


def test_a_moving_window_in_redis_keeps_its_requests_times_to_the_fraction(redis, monkeypatch):
    """1.05 s apart under a one-second window: both allowed (whole seconds would make them 1 s apart)."""
    states = _hits(redis, {"per_second": 1, "strategy": "moving-window"}, [1_000_000.9], [0.0, 1.05], monkeypatch)
    assert [state.limited for state in states] == [False, False]


def test_a_fixed_window_in_redis_starts_at_its_first_request_not_at_the_latest(redis, monkeypatch):
    """The key expires a window after its first request: one pushed on by every request never lets a steady
    client into a new window. Real pauses (Redis expires keys by its own clock)."""
    states = _hits(redis, {"per_second": 2}, None, [0.0, 0.6, 1.2], monkeypatch, pause=0.6)
    assert [state.limited for state in states] == [False, False, False]


def test_a_fixed_window_refusal_in_redis_names_the_window_that_is_full(redis, monkeypatch):
    states = _hits(redis, {"per_minute": 2, "per_hour": 100}, None, [0.0, 0.0, 0.0], monkeypatch)
    assert [state.limited for state in states] == [False, False, True]
    assert states[2].window == "2 per 1 minute" and 1 <= states[2].retry_after <= 60


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_every_redis_key_a_decision_writes_expires_with_its_window(redis, strategy):
    """One key per claim value: without an expiry, every `sub` ever seen would stay in Redis."""
    import redis as redis_client

    from app.ratelimit import RateLimitDoc, budget_key, compile_rate_limit

    limit = compile_rate_limit(RateLimitDoc(per_minute=5, strategy=strategy, key="claim:sub"))
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_minute=5, strategy=strategy, key="claim:sub")
        decide(client, sub="someone")
        prefixed = client.app.state.authorizers.budgets.storage.bridge.prefixed_key
    name = prefixed(limit.items[0].key_for(*budget_key("api", limit, {"sub": "someone"})))
    connection = redis_client.Redis(port=redis.port)
    try:
        assert connection.exists(name) and 0 < connection.ttl(name) <= 60
    finally:
        connection.close()


@pytest.mark.parametrize("strategy, pushed_on", [("fixed-window", False), ("moving-window", True)])
def test_a_moving_windows_key_lives_a_window_after_its_newest_request_a_fixed_ones_after_its_first(redis, strategy,
                                                                                                 pushed_on):
    """A moving window's list holds requests that count until a window after each: expiring it a window after the
    first request would drop later ones still inside, and the budget would start over early. A fixed window's
    counter ends with its window, whatever came after. The key's expiry is shortened in between, as if 55 s passed
    (Redis expires keys by its own clock)."""
    import redis as redis_client

    from app.ratelimit import RateLimitDoc, budget_key, compile_rate_limit

    limit = compile_rate_limit(RateLimitDoc(per_minute=5, strategy=strategy))
    connection = redis_client.Redis(port=redis.port)
    try:
        with ExitStack() as stack:
            (client,) = instances(stack, redis, 1, per_minute=5, strategy=strategy)
            name = client.app.state.authorizers.budgets.storage.bridge.prefixed_key(
                limit.items[0].key_for(*budget_key("api", limit, None)))
            decide(client)
            connection.pexpire(name, 5000)
            decide(client)
        assert (connection.pttl(name) > 5000) is pushed_on
    finally:
        connection.close()


def test_the_readiness_probe_spends_no_authorizers_budget(redis):
    with ExitStack() as stack:
        (client,) = instances(stack, redis, 1, per_second=2)
        assert client.get("/readyz").json()["rate_limit_storage"]["ok"] is True
        assert [decide(client)["allowed"] for _ in range(2)] == [True, True]


def test_a_redis_that_never_answers_costs_a_decision_one_attempt_then_on_storage_error_decides():
    """A listener that accepts and never answers (a hung Redis): one connection, no client-side retries, and the
    decision ends (with a storage error) well within a bound, not after the client's default timeouts."""
    import asyncio
    import threading

    from app.ratelimit import Budgets, RateLimitDoc, compile_rate_limit

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()

    async def decision() -> Any:
        budgets = Budgets(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        try:
            return await asyncio.wait_for(budgets.hit("api", compile_rate_limit(RateLimitDoc(per_minute=5)), None), 10)
        finally:
            await budgets.aclose()
    try:
        state = asyncio.run(decision())
        deadline = time.monotonic() + 5  # the thread takes a connection the kernel already holds: let it
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert state.storage_error and not state.limited
    assert len(accepted) == 1
