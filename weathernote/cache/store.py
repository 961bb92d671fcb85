"""The Redis side of cache-aside: read entries, write them and announce them.

Each entry is stored twice: under its key for its TTL, and as the last good
copy under its stale key for TTL + stale window, served only when the
upstream fails. Every call goes through the Redis gateway (its breaker, its
deadline, its error mapping).
"""

from __future__ import annotations

from collections.abc import Sequence

from weathernote.clock import clock
from weathernote.model.entries import Entry
from weathernote.redis.gateway import AnyPipeline, RedisGateway
from weathernote.redis.keys import entry_key, stale_key, update_channel


class EntryStore:
    """Entries and their stale copies in Redis, and the announcements of refreshes."""

    def __init__(self, redis: RedisGateway, stale_ms: int) -> None:
        self.redis = redis
        self.stale_ms = stale_ms

    async def read(self, keys: Sequence[str]) -> list[bytes | None]:
        """Raw entries; a key holding another type reads as missing."""
        return await self.redis.get_many(keys)

    async def write(self, entries: Sequence[Entry], announce: bool = True) -> None:
        """Store each entry and announce it on its channel in the same round trip.

        The announcement carries the entry itself, so no listener reads it back.
        A renewed entry (same data, fresh for longer) is stored without announcing.
        SET replaces whatever the key held, of any type: a foreign or corrupt
        entry is repaired by the next write.
        """
        now = clock.now_ms()

        def build(pipe: AnyPipeline) -> None:
            for entry in entries:
                raw = entry.encode()
                ttl_ms = max(1, entry.fresh_until_ms - now)
                pipe.set(entry_key(entry.part, entry.cell), raw, px=clock.real_ms(ttl_ms))
                if self.stale_ms:
                    pipe.set(stale_key(entry.part, entry.cell), raw, px=clock.real_ms(ttl_ms + self.stale_ms))
                if announce:
                    self.redis.announce(pipe, update_channel(entry.part, entry.cell), raw)

        await self.redis.pipeline(build)
