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

from weathernote.clock import clock
from weathernote.errors import CacheError, RedisKeyError, RedisUnavailable
from weathernote.ops import metrics
from weathernote.redis.gateway import RedisGateway

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
    """The minute, hour and day windows of weighted upstream calls, shared by every instance."""

    def __init__(self, redis: RedisGateway, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self._script = redis.script(_SPEND)

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
        """Take `weight` from every window, or nothing; False when that would overspend.

        Redis down: a miss goes on (as the limiter fails open); the pre-warmer gets
        RedisUnavailable, so its cycle stops on Redis rather than on a spent budget.
        """
        keys = self._keys(prewarm=prewarm)
        args: list[float] = [weight]
        for _, limit, expiry_ms in keys:
            args += [limit, expiry_ms]
        names = [key for key, _, _ in keys]
        for attempt in (1, 2):
            try:
                allowed, _ = await self._script(names, args)
                return bool(allowed)
            except RedisKeyError as exc:
                if attempt == 2:
                    break
                # a window holding something else: that window starts over
                metrics.REDIS_KEY_ERRORS.labels("budget").inc()
                log.warning("upstream budget window unreadable (%s): reset", exc)
                try:
                    await self.redis.call(lambda client: client.delete(*names))
                except CacheError:
                    break
            except RedisUnavailable:
                if prewarm:
                    raise
                return True
        return not prewarm

    async def used(self, window: str) -> float:
        """Weight spent in the current `window` ("minute", "hour" or "day"); CacheError when unknown."""
        key = next(key for key, _, _ in self._keys() if f"}}:{window}:" in key)
        [value] = await self.redis.get_many([key])
        return _amount(value)

    async def ahead_of_pace(self, slack: float = 0.1) -> bool:
        """Has today's spending run ahead of an even pace (plus `slack` of the day)?

        Misses that spend the whole budget by noon leave the afternoon stale; when
        spending runs ahead, a miss that has recent data serves it instead.
        """
        elapsed = (clock.now() % 86400) / 86400
        try:
            return await self.used("day") > self.limits.per_day * min(1.0, elapsed + slack)
        except CacheError:
            return False  # unknown: a miss is not held back

    async def seconds_until_room(self, weight: float) -> float:
        """How long until `weight` fits every window again: the end of the last full one."""
        now = clock.now()
        keys = self._keys()
        try:
            used = await self.redis.get_many([key for key, _, _ in keys])
        except CacheError:
            return 0.0
        waits = [
            seconds - now % seconds
            for (_, seconds), (_, limit, _), value in zip(WINDOWS, keys, used)
            if _amount(value) + weight > limit
        ]
        return max(waits, default=0.0)

    async def remaining(self, *, prewarm: bool = False) -> float:
        """What can still be spent now (the tightest window); CacheError when unknown."""
        keys = self._keys(prewarm=prewarm)
        used = await self.redis.get_many([key for key, _, _ in keys])
        return min(limit - _amount(value) for (_, limit, _), value in zip(keys, used))


def _amount(value: bytes | None) -> float:
    """A window's spending as stored; anything unreadable counts as nothing spent yet."""
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
