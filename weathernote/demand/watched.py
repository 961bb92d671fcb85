"""Cells watched live, registered in Redis so that every instance's pre-warmer sees them.

Each instance registers the (part, cell) pairs its subscribers watch, and who
watches them (hashed client ids, shortened), with an expiry it keeps renewing:
a dead instance's watches age out on their own. Two sorted sets, scores being
expiry times:

- `watched_cells`: `<part>|<cell>`, whether anyone watches it (the spend policy asks);
- `watchers`: `<part>|<cell>|<watcher>`, one member per distinct watcher, which the
  pre-warmer counts: a cell is worth what its distinct watchers are, so one client
  subscribing to a thousand junk cells adds one watcher to each, not a claim on the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable

from weathernote.errors import CacheError, RedisKeyError
from weathernote.model import Cell, Grid, Part
from weathernote.ops import metrics
from weathernote.redis import AnyPipeline, RedisGateway
from weathernote.redis.keys import WATCHED_CELLS, WATCHERS, cell_member
from weathernote.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# a watcher's id as registered: enough bits to tell a cell's watchers apart, no more
WATCHER_CHARS = 16


class WatchedCells:
    """The watched-cell registry: this process's watches registered and renewed, everyone's read."""

    def __init__(self, redis: RedisGateway, grid: Grid, *, ttl_seconds: float = 90.0) -> None:
        self.redis = redis
        self.grid = grid
        self.ttl_seconds = ttl_seconds
        self._local: Counter[str] = Counter()  # `<part>|<cell>|<watcher>` -> local watches
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever(), name="watched-cells-renewer")

    async def stop(self) -> None:
        await cancel_and_wait(self._renewer)

    async def watch(self, cell: Cell, parts: Iterable[Part], watcher: str) -> None:
        """`watcher` (a hashed client id) watches these parts of `cell` from now on, here."""
        await self.watch_cells([cell], parts, watcher)

    async def watch_cells(self, cells: Iterable[Cell], parts: Iterable[Part], watcher: str) -> None:
        """`watch` of many cells (a map's box), registered in one round trip."""
        parts = tuple(parts)
        members = [_watcher_member(part, cell, watcher) for cell in cells for part in parts]
        new = [member for member in members if not self._local[member]]
        self._local.update(members)
        if new:
            await self._register(new)

    def unwatch(self, cell: Cell, parts: Iterable[Part], watcher: str) -> None:
        """One watch of these parts ended; the registration ages out once no local watch renews it."""
        for part in parts:
            member = _watcher_member(part, cell, watcher)
            self._local[member] -= 1
            if self._local[member] <= 0:
                del self._local[member]

    async def watchers(self) -> dict[tuple[Part, Cell], int]:
        """Every instance's watched (part, cell) pairs, each with its distinct watchers.

        A registry of another type is deleted (nobody watches until it is registered again).
        """
        try:
            members = await self.redis.call(lambda client: client.zrangebyscore(WATCHERS, time.time(), "+inf"))
        except RedisKeyError as exc:
            metrics.REDIS_KEY_ERRORS.labels("watched").inc()
            log.warning("%s is not a sorted set (%s): deleted", WATCHERS, exc)
            with contextlib.suppress(CacheError):
                await self.redis.call(lambda client: client.delete(WATCHERS))
            return {}
        counts: Counter[tuple[Part, str]] = Counter()
        cells: dict[str, Cell] = {}
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            try:
                part, label, _ = text.split("|", 2)
                cells.setdefault(label, self.grid.parse(label))
                counts[(Part(part), label)] += 1
            except ValueError:
                continue  # a member of another release: ignored
        return {(part, cells[label]): count for (part, label), count in counts.items()}

    async def _register(self, members: list[str]) -> None:
        expires = time.time() + self.ttl_seconds
        cells = {member.rsplit("|", 1)[0] for member in members}

        def build(pipe: AnyPipeline) -> None:
            pipe.zadd(WATCHED_CELLS, dict.fromkeys(cells, expires))
            pipe.zremrangebyscore(WATCHED_CELLS, "-inf", time.time())
            pipe.zadd(WATCHERS, dict.fromkeys(members, expires))
            pipe.zremrangebyscore(WATCHERS, "-inf", time.time())

        try:
            replies = await self.redis.pipeline(build)
        except CacheError as exc:
            log.warning("could not register watched cells (%s)", exc)
            return
        foreign = [key for key, reply in ((WATCHED_CELLS, replies[0]), (WATCHERS, replies[2])) if _foreign(key, reply)]
        if foreign:
            # not sorted sets (foreign keys): ours start over, with these members
            with contextlib.suppress(CacheError):
                await self.redis.call(lambda client: client.delete(*foreign))
                await self.redis.pipeline(build)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            if self._local:
                await self._register(list(self._local))


def _foreign(key: str, reply: object) -> bool:
    if not isinstance(reply, RedisKeyError):
        return False
    metrics.REDIS_KEY_ERRORS.labels("watched").inc()
    log.warning("%s is not a sorted set (%s): replaced", key, reply)
    return True


def _watcher_member(part: Part, cell: Cell, watcher: str) -> str:
    return f"{cell_member(part, cell)}|{watcher[:WATCHER_CHARS]}"
