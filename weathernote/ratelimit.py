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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from weathernote.breaker import CircuitBreaker
from weathernote.identity import Identity
from weathernote.keys import address_rate_limit_key, rate_limit_key
from weathernote.redis_client import AnyRedis

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
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the client's quota is whole again
    retry_after_seconds: int  # when refused
    scope: str  # "client" or "address": the layer that refused, else "client"


class RateLimiter:
    def __init__(
        self,
        redis: AnyRedis,
        breaker: CircuitBreaker,
        *,
        client_limit: int,
        address_limit: int,
        period_seconds: float,
    ) -> None:
        self.redis = redis
        self.breaker = breaker
        self.client_limit = client_limit
        self.address_limit = address_limit
        self.period_ms = int(period_seconds * 1000)
        self.period_seconds = period_seconds
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def check(
        self, identity: Identity, cost: int = 1, read_keys: Sequence[str] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """The decision, and the values of `read_keys` fetched in the same round trip
        (the request's cache entries: the hot path then costs one round trip in all)."""
        keys = [rate_limit_key(identity.client), address_rate_limit_key(identity.address)]
        args = [self.client_limit, self.period_ms, self.address_limit, self.period_ms, cost]
        values: list[bytes | None] | None = None
        if not self.breaker.allow():
            return self._open(), None
        try:
            if read_keys and not isinstance(self.redis, RedisCluster):
                result, values = await self._check_and_read(keys, args, read_keys)
            elif isinstance(self.redis, RedisCluster):
                # the layers' keys live in different slots: check them one by one
                result = [1, 0, 0, 0, 0]
                for index, key in enumerate(keys):
                    layer = await self._script(keys=[key], args=[*args[2 * index : 2 * index + 2], cost])
                    if index == 0:
                        result = layer
                    if not layer[0]:
                        result = [0, layer[1], 0, 0, index + 1]
                        break
            else:
                result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.breaker.failure()
            log.warning("rate limiter unavailable (%s): allowing", type(exc).__name__)
            return self._open(), None
        self.breaker.success()
        allowed, retry_ms, remaining, reset_ms, refusing = (int(v) for v in result)
        return Decision(
            allowed=bool(allowed),
            limit=self.client_limit if refusing != 2 else self.address_limit,
            remaining=max(0, remaining),
            reset_seconds=max(0, reset_ms) / 1000,
            retry_after_seconds=max(1, math.ceil(retry_ms / 1000)) if not allowed else 0,
            scope="address" if refusing == 2 else "client",
        ), values

    async def _check_and_read(
        self, keys: list[str], args: list[int], read_keys: Sequence[str]
    ) -> tuple[list[int], list[bytes | None]]:
        """The script and the reads in one round trip. EVALSHA by hand: a Script in a
        pipeline makes redis-py ask SCRIPT EXISTS first, a second round trip per request."""
        for attempt in (1, 2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                    for key in read_keys:
                        pipe.get(key)
                    result, *values = await pipe.execute()
                return result, values
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.redis.script_load(_SLIDING_WINDOW)  # a restarted or flushed server
        raise AssertionError("unreachable")

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
