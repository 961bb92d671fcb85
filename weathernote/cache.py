"""The Redis side of cache-aside: read entries, write them and announce them."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster

from weathernote.entries import Entry
from weathernote.keys import entry_key, stale_key, update_channel
from weathernote.redis_client import AnyRedis


class EntryStore:
    """Each entry is stored twice: under its key for its TTL, and as the last
    good copy under its stale key for TTL + stale window, served only when the
    upstream fails."""

    def __init__(self, redis: AnyRedis, stale_ms: int) -> None:
        self.redis = redis
        self.stale_ms = stale_ms

    async def read(self, keys: Sequence[str]) -> list[bytes | None]:
        if len(keys) == 1:
            return [await self.redis.get(keys[0])]
        if isinstance(self.redis, RedisCluster):
            # SPEC keys carry no hash tag, so one cell's parts may live on different nodes.
            return await self.redis.mget_nonatomic(list(keys))
        return await self.redis.mget(list(keys))

    async def write(self, entries: Sequence[Entry]) -> None:
        """Store each entry and announce it on its channel in the same round trip.

        The announcement carries the entry itself, so no listener reads it back.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                raw = entry.encode()
                ttl_ms = max(1, entry.fresh_until_ms - entry.fetched_at_ms)
                pipe.set(entry_key(entry.part, entry.cell), raw, px=ttl_ms)
                if self.stale_ms:
                    pipe.set(stale_key(entry.part, entry.cell), raw, px=ttl_ms + self.stale_ms)
                pipe.publish(update_channel(entry.part, entry.cell), raw)
            await pipe.execute()
