"""The Redis side of cache-aside: read entries, write them and announce them.

Every call goes through the Redis circuit breaker: when Redis is down the
breaker opens and callers get CacheUnavailable at once instead of each
waiting for a timeout.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from weathernote.breaker import CircuitBreaker
from weathernote.clock import clock
from weathernote.entries import Entry
from weathernote.keys import entry_key, stale_key, update_channel
from weathernote.redis_client import AnyRedis


class CacheUnavailable(Exception):
    """Redis did not answer (or the breaker is open)."""


class EntryStore:
    """Each entry is stored twice: under its key for its TTL, and as the last
    good copy under its stale key for TTL + stale window, served only when the
    upstream fails."""

    def __init__(self, redis: AnyRedis, stale_ms: int, breaker: CircuitBreaker | None = None) -> None:
        self.redis = redis
        self.stale_ms = stale_ms
        self.breaker = breaker or CircuitBreaker("redis")

    async def read(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check()
        try:
            if len(keys) == 1:
                values = [await self.redis.get(keys[0])]
            elif isinstance(self.redis, RedisCluster):
                # SPEC keys carry no hash tag, so one cell's parts may live on different nodes.
                values = await self.redis.mget_nonatomic(list(keys))
            else:
                values = await self.redis.mget(list(keys))
        except (RedisError, OSError) as exc:
            self.breaker.failure()
            raise CacheUnavailable(type(exc).__name__) from exc
        self.breaker.success()
        return values

    async def write(self, entries: Sequence[Entry], announce: bool = True) -> None:
        """Store each entry and announce it on its channel in the same round trip.

        The announcement carries the entry itself, so no listener reads it back.
        A renewed entry (same data, fresh for longer) is stored without announcing.
        """
        self._check()
        now = clock.now_ms()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    raw = entry.encode()
                    ttl_ms = max(1, entry.fresh_until_ms - now)
                    pipe.set(entry_key(entry.part, entry.cell), raw, px=clock.real_ms(ttl_ms))
                    if self.stale_ms:
                        pipe.set(stale_key(entry.part, entry.cell), raw, px=clock.real_ms(ttl_ms + self.stale_ms))
                    if announce:
                        pipe.publish(update_channel(entry.part, entry.cell), raw)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.failure()
            raise CacheUnavailable(type(exc).__name__) from exc
        self.breaker.success()

    def _check(self) -> None:
        if not self.breaker.allow():
            raise CacheUnavailable("circuit breaker open")
