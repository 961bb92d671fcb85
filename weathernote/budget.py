"""The upstream budget: Open-Meteo's weighted calls, drawn from windows shared in Redis.

Open-Meteo counts weighted calls per client address in fixed UTC windows (a
minute, an hour, a day) and refuses once a window is spent. Every instance
behind one address shares those windows, so the budget lives in Redis: one
atomic script spends a call's weight from all three windows, or from none.
User misses may spend the whole budget. The pre-warmer paces the day itself
(what is left, spread over the steps left) and of the minute and hour windows
takes only its share, so that a burst of misses always finds room. When the budget is spent the service serves
stale entries rather than exceed it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from weathernote.breaker import CircuitBreaker
from weathernote.clock import clock
from weathernote.redis_client import AnyRedis

log = logging.getLogger(__name__)

WINDOWS = (("minute", 60), ("hour", 3600), ("day", 86400))

# KEYS: one per window. ARGV: weight, then per window its limit and expiry (ms).
_SPEND = """
local weight = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used + weight > tonumber(ARGV[2 * i]) then
    return {0, i}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBYFLOAT', key, weight)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Limits:
    per_minute: float
    per_hour: float
    per_day: float
    prewarm_share: float = 0.8  # of the minute and hour windows the pre-warmer may spend
    day_reserve: float = 0.005  # of the day kept for misses after the pre-warmer's last step

    def of(self, window: str) -> float:
        return {"minute": self.per_minute, "hour": self.per_hour, "day": self.per_day}[window]

    def of_prewarm(self, window: str) -> float:
        """What the pre-warmer may spend of `window`."""
        if window == "day":
            return self.per_day * (1 - self.day_reserve)
        return self.of(window) * self.prewarm_share


class UpstreamBudget:
    def __init__(self, redis: AnyRedis, breaker: CircuitBreaker, limits: Limits) -> None:
        self.redis = redis
        self.breaker = breaker
        self.limits = limits
        self._script = redis.register_script(_SPEND)

    def _keys(self, *, prewarm: bool = False) -> list[tuple[str, float, int]]:
        now = clock.now()
        keys = []
        for window, seconds in WINDOWS:
            start = int(now // seconds * seconds)
            expiry_ms = clock.real_ms((start + seconds - now) * 1000) + 1000
            limit = self.limits.of_prewarm(window) if prewarm else self.limits.of(window)
            # one hash tag: the windows share a Cluster slot, so one script can spend from all
            keys.append((f"{{upstream_budget}}:{window}:{start}", limit, expiry_ms))
        return keys

    async def spend(self, weight: float, *, prewarm: bool = False) -> bool:
        """Take `weight` from every window, or nothing; False when that would overspend."""
        keys = self._keys(prewarm=prewarm)
        args: list[float] = [weight]
        for _, limit, expiry_ms in keys:
            args += [limit, expiry_ms]
        if not self.breaker.allow():
            return not prewarm  # Redis down: misses go on (as the limiter fails open), warming waits
        try:
            allowed, _ = await self._script(keys=[key for key, _, _ in keys], args=args)
        except (RedisError, OSError) as exc:
            self.breaker.failure()
            log.warning("upstream budget unavailable (%s)", type(exc).__name__)
            return not prewarm
        self.breaker.success()
        return bool(allowed)

    async def used(self, window: str) -> float:
        """Weight spent in the current `window` ("minute", "hour" or "day")."""
        key = next(key for key, _, _ in self._keys() if f"}}:{window}:" in key)
        try:
            return float(await self.redis.get(key) or 0)
        except (RedisError, OSError):
            return 0.0

    async def ahead_of_pace(self, slack: float = 0.1) -> bool:
        """Has today's spending run ahead of an even pace (plus `slack` of the day)?

        Misses that spend the whole budget by noon leave the afternoon stale; when
        spending runs ahead, a miss that has recent data serves it instead.
        """
        elapsed = (clock.now() % 86400) / 86400
        return await self.used("day") > self.limits.per_day * min(1.0, elapsed + slack)

    async def seconds_until_room(self, weight: float) -> float:
        """How long until `weight` fits every window again: the end of the last full one."""
        now = clock.now()
        keys = self._keys()
        try:
            used = await self.redis.mget([key for key, _, _ in keys])
        except (RedisError, OSError):
            return 0.0
        waits = [
            seconds - now % seconds
            for (_, seconds), (_, limit, _), value in zip(WINDOWS, keys, used)
            if float(value or 0) + weight > limit
        ]
        return max(waits, default=0.0)

    async def remaining(self, *, prewarm: bool = False) -> float:
        """What can still be spent now (the tightest window)."""
        keys = self._keys(prewarm=prewarm)
        try:
            used = await self.redis.mget([key for key, _, _ in keys])
        except (RedisError, OSError):
            return 0.0
        return min(limit - float(value or 0) for (_, limit, _), value in zip(keys, used))
