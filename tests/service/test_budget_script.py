"""The budget's script in Redis holds the windows' promises (tests/unit/test_budget_windows.py holds
the same arithmetic in memory): no span of a minute ever passes the minute's limit, on one server and
on a Cluster; shares are drawn with the budget, all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from weathernote.breaker import CircuitBreaker
from weathernote.clock import Clock
from weathernote.redis import RedisGateway
from weathernote.upstream import Limits, Payer, Shares, UpstreamBudget

MINUTE_START = 1_800_000_000 // 60 * 60  # a calendar minute's first second


@pytest.fixture
async def gateway(redis_url: str, clean: object) -> AsyncIterator[RedisGateway]:
    gateway = RedisGateway(redis_url, timeout=0.5, breaker=CircuitBreaker("redis"))
    await gateway.connect()
    yield gateway
    await gateway.aclose()


def budget_at(gateway: RedisGateway, simulated: float, shares: Shares | None = None) -> UpstreamBudget:
    """A budget whose clock reads `simulated` now (a second instance's, or this one's a moment later)."""
    return UpstreamBudget(
        gateway, Limits(per_minute=600, per_hour=10_000, per_day=100_000), Clock(origin=simulated), shares=shares
    )


@pytest.mark.topologies
async def test_two_calendar_minutes_cannot_pass_twice_the_minute_in_one_span(gateway: RedisGateway) -> None:
    """A fixed minute window let 1,079 weighted calls through in one 60 s span (600 a minute)."""
    assert (await budget_at(gateway, MINUTE_START - 2).spend(590)).allowed  # the end of one calendar minute
    refused = await budget_at(gateway, MINUTE_START + 2).spend(500)  # the start of the next
    assert not refused.allowed and refused.scope == "budget"
    assert refused.retry_after is not None and 55 <= refused.retry_after <= 65
    assert (await budget_at(gateway, MINUTE_START + 2).spend(10)).allowed, "what is left of the span"
    assert (await budget_at(gateway, MINUTE_START + 64).spend(500)).allowed, "once the first spend slid out"


@pytest.mark.topologies
async def test_a_payers_share_and_the_budget_are_spent_together_or_not_at_all(
    gateway: RedisGateway, redis_client: redis.Redis
) -> None:
    shares = Shares(client_minute=0.1, client_day=0.05, address_minute=0.2, address_day=0.1)
    budget = budget_at(gateway, MINUTE_START + 10, shares)
    payer = Payer("client-hash", "address-hash")
    assert (await budget.spend(60, payer=payer)).allowed  # the client's whole minute share
    refused = await budget.spend(1, payer=payer)
    assert (refused.allowed, refused.scope) == (False, "client")
    assert await budget.used("minute") == 60, "nothing taken from the budget for a refused spend"
    other = Payer("another-client", "address-hash")
    assert (await budget.spend(60, payer=other)).allowed
    assert (await budget.spend(1, payer=Payer("third", "address-hash"))).scope == "address"
    assert (await budget.spend(1, payer=Payer("fourth", "elsewhere"))).allowed, "others keep their share"
