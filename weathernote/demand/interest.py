"""Which cells are worth the upstream budget: the one owner of the watched, requested and kept cells.

The pre-warmer ranks the cells users watch and ask for, and publishes the ones
this period's share of the budget keeps fresh (`prewarm:kept`); a miss on a cell
that already has data spends only if the cell is kept or watched. Both sides
ask this object, so the contract between them is code, not shared key names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence

from weathernote.breaker import State as BreakerState
from weathernote.clock import Clock
from weathernote.demand.requested import RequestedCells
from weathernote.demand.rhythm import Shape
from weathernote.demand.watched import WatchedCells
from weathernote.errors import CacheError
from weathernote.model import Cell, Grid, Part
from weathernote.redis import AnyPipeline, RedisGateway
from weathernote.redis.keys import PREWARM_KEPT, WATCHED_CELLS, cell_member
from weathernote.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Demand:
    """Watched, requested and kept cells, shared by every instance through Redis."""

    def __init__(
        self,
        redis: RedisGateway,
        clock: Clock,
        grid: Grid,
        *,
        watch_ttl_seconds: float = 90.0,
        flush_seconds: float = 5.0,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.watched = WatchedCells(redis, grid, ttl_seconds=watch_ttl_seconds)
        self.requested = RequestedCells(redis, clock, grid)
        self.flush_seconds = flush_seconds
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.watched.start()
        self._flusher = asyncio.create_task(self._flush_forever(), name="request-counts-flusher")

    async def stop(self) -> None:
        await cancel_and_wait(self._flusher)
        await self.watched.stop()
        await self.requested.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.requested.flush()

    async def watchers(self) -> dict[tuple[Part, Cell], int]:
        """Every watched (part, cell) with its distinct watchers, all instances."""
        return await self.watched.watchers()

    async def popular(self, limit: int) -> list[tuple[Part, Cell, float]]:
        """The most requested (part, cell) pairs with their decayed counts."""
        return await self.requested.popular(limit)

    async def rhythm(self, at: float, watched_hours: float) -> Shape:
        """The daily rhythm of demand, the hour of `at` marked as watched."""
        return await self.requested.rhythm(at, watched_hours)

    async def decay(self, factor: float, keep: int) -> None:
        """Old popularity fades."""
        await self.requested.decay(factor, keep)

    async def keep(self, kept: Sequence[tuple[Part, Cell]], period_ms: int) -> None:
        """Publish the cells this period's budget keeps fresh, for three periods at most."""
        members = [cell_member(part, cell) for part, cell in kept]

        def build(pipe: AnyPipeline) -> None:
            pipe.delete(PREWARM_KEPT)
            # "" keeps the key when nothing is kept: the set exists once a cycle has judged
            pipe.sadd(PREWARM_KEPT, "", *members)
            pipe.pexpire(PREWARM_KEPT, self.clock.real_ms(period_ms * 3))

        with contextlib.suppress(CacheError):
            await self.redis.pipeline(build, transaction=True)

    async def worth_spending(self, cell: Cell, parts: Collection[Part]) -> bool:
        """Is this cell worth an upstream call, now that it has (older) data to serve?

        Only if the pre-warmer's latest cycle counted it among the cells the budget
        keeps fresh (the most valuable), or someone watches it live. Unknown (Redis
        down, no cycle judged yet, a foreign key under our name): yes.
        """
        if self.redis.breaker.state is not BreakerState.CLOSED:
            return True
        members = [cell_member(part, cell) for part in parts]

        def build(pipe: AnyPipeline) -> None:
            pipe.exists(PREWARM_KEPT)
            for member in members:
                pipe.sismember(PREWARM_KEPT, member)
                pipe.zscore(WATCHED_CELLS, member)

        try:
            judged, *answers = await self.redis.pipeline(build)
        except CacheError:
            return True
        if any(isinstance(answer, CacheError) for answer in (judged, *answers)):
            return True  # a foreign key under our name: judge as if no pre-warmer had
        if not judged:
            return True  # no pre-warmer has judged yet
        kept, watched = answers[0::2], answers[1::2]
        return any(kept) or any(expiry is not None and expiry > time.time() for expiry in watched)
