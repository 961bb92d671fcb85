"""The gateway's error mapping, script reloading and the budget's windows against a real Redis.

The Redis half of tests/unit/test_units.py: one piece at a time, as there, but each
test talks to the session's Redis (a single server and a Cluster). No mocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from weathernote.breaker import CircuitBreaker, State
from weathernote.clock import Clock
from weathernote.errors import RedisKeyError
from weathernote.redis import RedisGateway
from weathernote.upstream import Limits, UpstreamBudget


@pytest.fixture
async def gateway(redis_url: str, redis_client: redis.Redis, clean: object) -> AsyncIterator[RedisGateway]:
    """A gateway to the topology's server (flushed)."""
    gateway = RedisGateway(redis_url, timeout=0.5, breaker=CircuitBreaker("redis", failures=2))
    await gateway.connect()
    assert gateway.topology_known and gateway.cluster == isinstance(redis_client, redis.RedisCluster)
    yield gateway
    await gateway.aclose()


@pytest.mark.topologies
async def test_a_wrong_type_reads_as_missing_and_never_trips_the_breaker(gateway: RedisGateway) -> None:
    await gateway.call(lambda client: client.rpush("weather:lat:1.0:lon:1.0", "x"))
    assert await gateway.get_many(["weather:lat:1.0:lon:1.0"]) == [None]
    for _ in range(3):
        with pytest.raises(RedisKeyError):
            await gateway.call(lambda client: client.get("weather:lat:1.0:lon:1.0"))
    assert gateway.breaker.state is State.CLOSED
    results = await gateway.pipeline(lambda pipe: (pipe.get("weather:lat:1.0:lon:1.0"), pipe.set("other", "v")))
    assert isinstance(results[0], RedisKeyError) and results[1] is True


@pytest.mark.topologies
async def test_scripts_are_reloaded_where_a_server_forgot_them(gateway: RedisGateway) -> None:
    script = gateway.script("return ARGV[1]")
    key = ["lock:weather:lat:1.0:lon:1.0"]  # on a Cluster a script runs on its key's node
    assert await script(key, ["a"]) == b"a"
    await gateway.call(lambda client: client.script_flush())
    assert await script(key, ["b"]) == b"b"
    await gateway.call(lambda client: client.script_flush())
    [result] = await gateway.pipeline(lambda pipe: script.add_to(pipe, key, ["c"]))
    assert result == b"c"


@pytest.mark.topologies
async def test_the_budget_spends_from_every_window_or_none(gateway: RedisGateway) -> None:
    budget = UpstreamBudget(gateway, Limits(per_minute=10, per_hour=15, per_day=100, prewarm_share=0.5), Clock())
    assert (await budget.spend(6)).allowed
    refused = await budget.spend(5)  # the minute would overspend: nothing is taken
    assert (refused.allowed, refused.scope) == (False, "budget") and 0 < (refused.retry_after or 0) <= 65
    assert await budget.used("hour") == 6
    assert not (await budget.spend(1, prewarm=True)).allowed  # the pre-warmer's share of the minute is 5
    assert (await budget.spend(4)).allowed
    assert await budget.remaining() == 0
    assert await budget.seconds_until_room(1) > 0


@pytest.mark.topologies
async def test_a_lost_or_foreign_day_window_never_starts_the_day_over(gateway: RedisGateway) -> None:
    """Evicted, deleted or replaced by something else, the day window is put back to what this
    process saw of it: spending never starts over at zero."""
    budget = UpstreamBudget(gateway, Limits(per_minute=100, per_hour=150, per_day=100), Clock())
    assert (await budget.spend(30)).allowed
    day_key = next(window.key for window, _ in await budget.totals() if ":day:" in window.key)
    await gateway.call(lambda client: client.delete(day_key))  # what an eviction does
    assert (await budget.spend(1)).allowed
    assert await budget.used("day") == 31
    await gateway.call(lambda client: client.set(day_key, "lots"))
    assert (await budget.spend(1)).allowed
    assert await budget.used("day") == 32
    await gateway.call(lambda client: client.delete(day_key))
    await gateway.call(lambda client: client.rpush(day_key, "a list"))  # another type: repaired
    assert (await budget.spend(1)).allowed
    assert await budget.used("day") == 33
    assert gateway.breaker.state is State.CLOSED
