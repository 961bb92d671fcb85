"""Cells users ask for: reads counted here, shared in Redis, decayed by the pre-warmer.

Every read of a part of a cell is counted in memory and flushed every few
seconds in one pipeline (the hot path never waits on it): into a sorted set of
requested (part, cell) pairs that the pre-warmer ranks by and decays, and into
today's rhythm hash (reads per longitude band and UTC hour, see rhythm.py).
While Redis cannot take them, the counts wait in memory, bounded: past
`max_pending` distinct pairs, new ones are not counted until a flush succeeds.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from weathernote.clock import Clock
from weathernote.demand import rhythm
from weathernote.errors import CacheError, RedisKeyError
from weathernote.model import Cell, Grid, Part
from weathernote.ops import metrics
from weathernote.redis import AnyPipeline, AnyRedis, RedisGateway
from weathernote.redis.keys import POPULAR_CELLS, cell_member, rhythm_key

log = logging.getLogger(__name__)

MAX_PENDING = 20_000  # distinct (part, cell) pairs waiting for a flush: about 2 MB at most
# Every count of a flush in one command: a pipeline of one ZINCRBY a pair took the event loop ~20 µs
# a pair to build and parse, so a flush of a few thousand pairs stalled every request for tens of ms.
_ADD_COUNTS = """
for i = 1, #ARGV, 2 do
    redis.call('ZINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""


class RequestedCells:
    """Requests per (part, cell), decayed: what the pre-warmer ranks by; and the daily rhythm's counts."""

    def __init__(self, redis: RedisGateway, clock: Clock, grid: Grid, *, max_pending: int = MAX_PENDING) -> None:
        self.redis = redis
        self.clock = clock
        self.grid = grid
        self.max_pending = max_pending
        self._pending: Counter[str] = Counter()
        self._add_counts = redis.script(_ADD_COUNTS)

    def read(self, part: Part, cell: Cell) -> None:
        """A read of one part of one cell."""
        member = cell_member(part, cell)
        if member in self._pending or len(self._pending) < self.max_pending:
            self._pending[member] += 1

    async def flush(self) -> None:
        """Add the counts to the shared ones; kept for the next flush if Redis cannot take them."""
        if not self._pending:
            return
        pending, self._pending = self._pending, Counter()
        now = self.clock.now()
        by_band: Counter[str] = Counter()
        for member, count in pending.items():
            band = rhythm.member_band(member)
            if band is not None:
                by_band[rhythm.field(band, rhythm.utc_hour(now))] += count
        today = rhythm_key(rhythm.day(now))

        counts = [value for member, count in pending.items() for value in (count, member)]

        def build(pipe: AnyPipeline) -> None:
            for name, count in by_band.items():
                pipe.hincrby(today, name, count)
            if by_band:
                pipe.pexpire(today, self.clock.real_ms((rhythm.DAYS + 1) * 86400 * 1000))

        try:
            results: list[Any] = []
            try:
                await self._add_counts([POPULAR_CELLS], counts)
            except RedisKeyError as exc:
                results.append(exc)
            if by_band:
                results += await self.redis.pipeline(build)
        except CacheError as exc:
            log.warning("request counts not flushed (%s): kept for the next flush", exc)
            for member, count in pending.items():
                if member in self._pending or len(self._pending) < self.max_pending:
                    self._pending[member] += count
            return
        if any(isinstance(result, CacheError) for result in results):
            # counts are approximate by nature: a foreign key under one of their names is left alone
            log.info("some request counts not counted: a key holds another type")

    async def popular(self, limit: int) -> list[tuple[Part, Cell, float]]:
        """The `limit` most requested (part, cell) pairs with their decayed counts, most first."""
        ranked = await self._repairing(
            POPULAR_CELLS, lambda client: client.zrevrange(POPULAR_CELLS, 0, limit - 1, withscores=True)
        )
        popular = []
        for member, score in ranked:
            parsed = parse_member(member, self.grid)
            if parsed is not None:
                popular.append((*parsed, float(score)))
        return popular

    async def decay(self, factor: float, keep: int) -> None:
        """Old popularity fades: every count is multiplied by `factor`, and the tail past `keep` is cut."""

        def build(pipe: AnyPipeline) -> None:
            pipe.zunionstore(POPULAR_CELLS, {POPULAR_CELLS: factor})
            pipe.zremrangebyrank(POPULAR_CELLS, 0, -keep - 1)

        # not a transaction: redis-py's Cluster transactions run ZUNIONSTORE on a loop of their own
        with contextlib.suppress(CacheError):
            await self.redis.pipeline(build)

    async def rhythm(self, at: float, watched_hours: float) -> rhythm.Shape:
        """The daily rhythm fitted from the last week's counts; the UTC hour of `at` marked as
        watched for `watched_hours` (the pre-warmer watches while it runs).

        A rhythm hash holding another type is deleted (and that day counts as unseen).
        """
        days = [rhythm_key(rhythm.day(at - age * 86400)) for age in range(rhythm.DAYS)]

        def build(pipe: AnyPipeline) -> None:
            pipe.hincrbyfloat(days[0], rhythm.seen_field(rhythm.utc_hour(at)), watched_hours)
            pipe.pexpire(days[0], self.clock.real_ms((rhythm.DAYS + 1) * 86400 * 1000))
            for key in days:
                pipe.hgetall(key)

        try:
            replies = await self.redis.pipeline(build)
        except CacheError:
            return rhythm.Shape()
        read: list[dict[str, float]] = []
        for key, reply in zip(days, replies[2:]):
            if isinstance(reply, RedisKeyError):
                metrics.REDIS_KEY_ERRORS.labels("prewarm").inc()
                log.warning("%s is not a hash (%s): deleted", key, reply)
                await self._delete(key)
                read.append({})
                continue
            read.append(_numbers(reply))
        return rhythm.fit(read)

    async def _repairing(self, key: str, read: Callable[[AnyRedis], Awaitable[list[Any]]]) -> list[Any]:
        """`read` of a sorted set of ours; one holding another type is deleted and reads as empty."""
        try:
            return await self.redis.call(read)
        except RedisKeyError as exc:
            metrics.REDIS_KEY_ERRORS.labels("prewarm").inc()
            log.warning("%s is not a sorted set (%s): deleted", key, exc)
            await self._delete(key)
            return []

    async def _delete(self, key: str) -> None:
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.delete(key))


def parse_member(member: bytes | str, grid: Grid) -> tuple[Part, Cell] | None:
    """A `<part>|<cell label>` member as (part, cell); None for a member of another release."""
    text = member.decode() if isinstance(member, bytes) else member
    try:
        part, label = text.split("|", 1)
        return Part(part), grid.parse(label)
    except ValueError:
        return None


def _numbers(fields: dict[Any, Any]) -> dict[str, float]:
    """A hash's fields as text and numbers; an unreadable value is skipped."""
    parsed: dict[str, float] = {}
    for name, value in fields.items():
        with contextlib.suppress(ValueError, TypeError):
            parsed[name.decode() if isinstance(name, bytes) else str(name)] = float(value)
    return parsed
