"""Per-client rate limiting shared by every instance: GCRA in one atomic Redis script.

Why GCRA rather than a sliding-window counter: one small value per client
(its theoretical arrival time) instead of counters or timestamp logs, an exact
`Retry-After` from the same arithmetic, and a smooth refill; the burst is the
whole limit, so a client may spend its `limit` at once and then gets one more
every `period / limit`. The script checks the client's key and its address's
key and spends from both only when both allow, so rotating x-client-id from
one address runs into the looser per-address limit without using up anyone
else's. Redis's clock (TIME) is the only clock, so instances never disagree.

Redis unavailable: the limiter fails open (allows) and the circuit breaker
stops every request from waiting on it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from weathernote.breaker import CircuitBreaker
from weathernote.identity import Identity
from weathernote.keys import address_rate_limit_key, rate_limit_key
from weathernote.redis_client import AnyRedis

log = logging.getLogger(__name__)

# KEYS: one per layer. ARGV: per layer, emission interval and period (ms).
# Returns {allowed, retry_after_ms, remaining (first layer), reset_ms (first layer), refusing layer}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new_tats = {}
local retry, refusing = 0, 0
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + emission
  if new_tat - now > period then
    local wait = new_tat - now - period
    if wait > retry then retry, refusing = wait, i end
  end
  new_tats[i] = new_tat
end
if refusing > 0 then
  return {0, retry, 0, 0, refusing}
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, new_tats[i], 'PX', math.max(1, new_tats[i] - now))
end
local emission, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = new_tats[1] - now
return {1, 0, math.floor((period - used) / emission), used, 0}
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
        self._script = redis.register_script(_GCRA)

    async def check(self, identity: Identity, cost: int = 1) -> Decision:
        keys = [rate_limit_key(identity.client), address_rate_limit_key(identity.address)]
        limits = [self.client_limit, self.address_limit]
        args: list[int] = []
        for limit in limits:
            args += [cost * math.ceil(self.period_ms / limit), self.period_ms]
        if not self.breaker.allow():
            return self._open()
        try:
            if isinstance(self.redis, RedisCluster):
                # the layers' keys live in different slots: check them one by one
                result = [1, 0, 0, 0, 0]
                for index, key in enumerate(keys):
                    layer = await self._script(keys=[key], args=args[2 * index : 2 * index + 2])
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
            return self._open()
        self.breaker.success()
        allowed, retry_ms, remaining, reset_ms, refusing = (int(v) for v in result)
        return Decision(
            allowed=bool(allowed),
            limit=self.client_limit if refusing != 2 else self.address_limit,
            remaining=max(0, remaining),
            reset_seconds=reset_ms / 1000,
            retry_after_seconds=max(1, math.ceil(retry_ms / 1000)) if not allowed else 0,
            scope="address" if refusing == 2 else "client",
        )

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
