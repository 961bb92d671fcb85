"""Per-client rate limiting shared by every instance: a sliding-window log in one Redis script.

Why a sliding-window log: it is exact. Each client (and each address) has a
small sorted set of the times of its requests in the last period; a request
is allowed only if fewer than `limit` are there, so no rolling period ever
holds more than `limit` requests, across every instance, with an exact
`Retry-After` (when the oldest request leaves the window). GCRA would keep
one number instead of up to `limit` small entries, but refills continuously:
a client could spend its limit and then one more every period/limit, so
"60 a minute" would let 61 through within the first two seconds. The sets
hold only clients active in the last period and expire on their own.

The script checks the client's set and its address's set and records the
request in both only when both allow, so rotating x-client-id from one
address runs into the looser per-address limit without spending anyone
else's quota. Redis's clock (TIME) is the only clock, so instances agree.

Redis unavailable: the limiter fails open (allows) and the circuit breaker
stops every request from waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from weathernote.errors import CacheError, RedisKeyError, RedisUnavailable
from weathernote.fairuse.identity import Identity
from weathernote.ops import metrics
from weathernote.redis import AnyRedis, RedisGateway
from weathernote.redis.keys import address_rate_limit_key, rate_limit_key

log = logging.getLogger(__name__)

# KEYS: one per layer. ARGV: per layer, limit and period (ms); then the request's cost.
# Returns {allowed, retry_after_ms, remaining (first layer), reset_ms (first layer), refusing layer}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[#ARGV])
local counts = {}
local retry, refusing = 0, 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local count = redis.call('ZCARD', key)
  counts[i] = count
  if count + cost > limit then
    local wait = period
    if count > 0 then
      local index = math.max(0, count + cost - limit - 1)
      local oldest = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
      wait = tonumber(oldest[2]) + period - now
    end
    if wait > retry then retry, refusing = wait, i end
  end
end
if refusing > 0 then
  return {0, retry, 0, 0, refusing}
end
for i, key in ipairs(KEYS) do
  for n = 1, cost do
    redis.call('ZADD', key, now, t[1] .. t[2] .. ':' .. (counts[i] + n))
  end
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = tonumber(first[2]) + tonumber(ARGV[2]) - now
return {1, 0, tonumber(ARGV[1]) - counts[1] - cost, reset, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer to one request, with what the rate-limit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the client's quota is whole again
    retry_after_seconds: int  # when refused
    scope: str  # "client" or "address": the layer that refused, else "client"


# On a Cluster the two layers' keys live in different slots: each layer is checked and
# recorded on its own, and a request the address layer refuses is taken back from the
# client layer, so neither layer counts a request that was refused.


class RateLimiter:
    """Per-client and per-address limits, shared by every instance through Redis."""

    def __init__(
        self,
        redis: RedisGateway,
        *,
        client_limit: int,
        address_limit: int,
        period_seconds: float,
    ) -> None:
        self.redis = redis
        self.client_limit = client_limit
        self.address_limit = address_limit
        self.period_ms = int(period_seconds * 1000)
        self.period_seconds = period_seconds
        self._script = redis.script(_SLIDING_WINDOW)

    async def check(
        self, identity: Identity, cost: int = 1, read_keys: Sequence[str] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """The decision, and the values of `read_keys` fetched in the same round trip
        (the request's cache entries: the hot path then costs one round trip in all).

        On a Cluster the reads go to the cell's shard while the limits are decided
        on theirs, concurrently.
        """
        keys = [rate_limit_key(identity.client), address_rate_limit_key(identity.address)]
        args = [self.client_limit, self.period_ms, self.address_limit, self.period_ms, cost]
        values: list[bytes | None] | None = None
        result: Any  # the script's reply, or its error in its place in a pipeline
        try:
            if self.redis.cluster:
                result, values = await self._check_layers_and_read(keys, args, read_keys)
            elif read_keys:
                result, values = await self.redis.commands([self._script.command(keys, args), ("MGET", *read_keys)])
                if isinstance(values, RedisKeyError):
                    values = None  # MGET has no error about a key: read again on the ordinary path
            else:
                result = await self._script(keys, args)
            if isinstance(result, RedisKeyError):  # the script's error, in its place in the pipeline
                raise result
        except RedisKeyError as exc:
            await self._repair(keys, exc)
            return self._open(), None
        except RedisUnavailable:
            # fail open; the gateway logs the outage once, not once per request
            return self._open(), None
        allowed, retry_ms, remaining, reset_ms, refusing = (int(v) for v in result)
        return Decision(
            allowed=bool(allowed),
            limit=self.client_limit if refusing != 2 else self.address_limit,
            remaining=max(0, remaining),
            reset_seconds=max(0, reset_ms) / 1000,
            retry_after_seconds=max(1, math.ceil(retry_ms / 1000)) if not allowed else 0,
            scope="address" if refusing == 2 else "client",
        ), values

    async def _check_layers_and_read(
        self, keys: list[str], args: list[int], read_keys: Sequence[str]
    ) -> tuple[list[int], list[bytes | None] | None]:
        cost = args[-1]
        reads = asyncio.ensure_future(self.redis.get_many(read_keys)) if read_keys else None
        try:
            client = await self._script([keys[0]], [*args[0:2], cost])
            result = client
            if client[0]:
                address = await self._script([keys[1]], [*args[2:4], cost])
                if not address[0]:
                    result = [0, address[1], 0, 0, 2]
                    # shielded: a request cancelled now must not stay counted as refused
                    await asyncio.shield(self._take_back_client(keys[0], cost))
            else:
                result = [0, client[1], 0, 0, 1]
        finally:
            values = await reads if reads is not None else None
        return result, values

    async def _take_back_client(self, key: str, cost: int) -> None:
        """Remove the request the client layer recorded but the address layer refused.

        Its newest entries go: ours, or a concurrent request's of the same instant,
        which leaves the same count.
        """
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.zpopmax(key, cost))

    async def _repair(self, keys: list[str], error: RedisKeyError) -> None:
        """A limit key holding something else: that client's window starts over (this request allowed)."""
        metrics.REDIS_KEY_ERRORS.labels("rate_limit").inc()
        log.warning("rate limit key unreadable (%s): reset", error)
        with contextlib.suppress(CacheError):
            for key in keys:  # one at a time: on a Cluster they live in different slots
                await self.redis.call(functools.partial(_delete, key=key))

    def _open(self) -> Decision:
        """Fail open: Redis is down, so nobody is refused."""
        return Decision(True, self.client_limit, self.client_limit, 0.0, 0, "client")

    def headers(self, decision: Decision) -> dict[str, str]:
        """IETF RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers)."""
        window = math.ceil(self.period_seconds)
        headers = {
            "RateLimit-Policy": f'"client";q={self.client_limit};w={window}, "address";q={self.address_limit};w={window}',
            "RateLimit": f'"{decision.scope}";r={decision.remaining};t={math.ceil(decision.reset_seconds if decision.allowed else decision.retry_after_seconds)}',
        }
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after_seconds)
        return headers


async def _delete(client: AnyRedis, *, key: str) -> int:
    return int(await client.delete(key))
