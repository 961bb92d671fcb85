"""The Redis side of cache-aside: read entries, write them and announce them.

Each entry is stored twice: under its key for its TTL, and as the last good
copy under its stale key for TTL + stale window, served only when the
upstream fails. Every call goes through the Redis gateway (its breaker, its
deadline, its error mapping, its spelling of keys).
"""

from __future__ import annotations

from collections.abc import Sequence

from weathernote.clock import Clock
from weathernote.model import Cell, Entry, Part
from weathernote.redis import AnyPipeline, RedisGateway


class EntryStore:
    """Entries and their stale copies in Redis, and the announcements of refreshes."""

    def __init__(self, redis: RedisGateway, clock: Clock, stale_ms: int) -> None:
        self.redis = redis
        self.clock = clock
        self.stale_ms = stale_ms

    def key(self, part: Part, cell: Cell) -> str:
        """The entry's key, as the gateway spells it for its topology."""
        return self.redis.keys.entry(part, cell)

    async def read(self, parts: Sequence[Part], cell: Cell) -> list[bytes | None]:
        """Raw entries of `parts` of `cell`; a key holding another type reads as missing."""
        keys = self.redis.keys
        return await self.redis.get_many([keys.entry(part, cell) for part in parts])

    async def read_many(self, entries: Sequence[tuple[Part, Cell]], *, stale: bool = False) -> list[bytes | None]:
        """Raw entries (their last good copies with `stale`) of many cells, in one round trip per node."""
        keys = self.redis.keys
        name = keys.stale if stale else keys.entry
        return await self.redis.get_many([name(part, cell) for part, cell in entries])

    async def write(self, entries: Sequence[Entry], announce: bool = True) -> None:
        """Store each entry and announce it on its channel in the same round trip.

        The announcement carries the entry itself, so no listener reads it back.
        A renewed entry (same data, fresh for longer) is stored without announcing.
        SET replaces whatever the key held, of any type: a foreign or corrupt
        entry is repaired by the next write.
        """
        now = self.clock.now_ms()
        keys = self.redis.keys
        real_ms = self.clock.real_ms

        def build(pipe: AnyPipeline) -> None:
            for entry in entries:
                raw = entry.encode()
                ttl_ms = max(1, entry.fresh_until_ms - now)
                pipe.set(keys.entry(entry.part, entry.cell), raw, px=real_ms(ttl_ms))
                if self.stale_ms:
                    pipe.set(keys.stale(entry.part, entry.cell), raw, px=real_ms(ttl_ms + self.stale_ms))
                if announce:
                    self.redis.announce(pipe, keys.update_channel(entry.part, entry.cell), raw)

        await self.redis.pipeline(build)
