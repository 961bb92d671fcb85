"""Business figures shared through Redis: active clients, requests, upstream calls, popular cells.

Counted in memory and flushed every few seconds in one pipeline, so the hot
path never waits on them: a HyperLogLog of hashed client ids per day, daily
request and upstream-call counters, a sorted set of requested cells that
the pre-warmer decays and reads, and today's reads per longitude band and UTC
hour (the daily rhythm's counts, see rhythm.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from weathernote.clock import clock
from weathernote.demand import rhythm
from weathernote.errors import CacheError
from weathernote.redis.gateway import AnyPipeline, AnyRedis, RedisGateway
from weathernote.redis.keys import POPULAR_CELLS, active_clients_key, daily_stat_key, rhythm_key

log = logging.getLogger(__name__)

_KEEP_SECONDS = 3 * 24 * 3600


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Usage:
    """Business figures counted in memory and flushed to Redis every few seconds."""

    def __init__(self, redis: RedisGateway, flush_seconds: float = 5.0) -> None:
        self.redis = redis
        self.flush_seconds = flush_seconds
        self._clients: set[str] = set()
        self._cells: Counter[str] = Counter()
        self._requests = 0
        self._upstream_weight = 0.0
        self._task: asyncio.Task[None] | None = None

    def request(self, client_hash: str, cost: int = 1) -> None:
        self._requests += cost
        self._clients.add(client_hash)

    def cell_read(self, member: str) -> None:
        """A read of one part of one cell: `<part>|<cell label>`, as the watched-cells registry spells it."""
        self._cells[member] += 1

    def upstream(self, weight: float) -> None:
        self._upstream_weight += weight

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="usage-flusher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        if not (self._requests or self._cells or self._upstream_weight) or not self.redis.breaker.allow():
            return
        self.redis.breaker.abandon()  # only a look: the flush below is the probe
        clients, cells = self._clients, self._cells
        requests, weight = self._requests, self._upstream_weight
        self._clients, self._cells, self._requests, self._upstream_weight = set(), Counter(), 0, 0.0
        day = today()
        now = clock.now()
        rhythm_counts: Counter[str] = Counter()
        for member, count in cells.items():
            band = rhythm.member_band(member)
            if band is not None:
                rhythm_counts[rhythm.field(band, rhythm.utc_hour(now))] += count
        rhythm_of_today = rhythm_key(rhythm.day(now))

        def build(pipe: AnyPipeline) -> None:
            if clients:
                pipe.pfadd(active_clients_key(day), *clients)
                pipe.expire(active_clients_key(day), _KEEP_SECONDS)
            if requests:
                pipe.incrby(daily_stat_key("requests", day), requests)
                pipe.expire(daily_stat_key("requests", day), _KEEP_SECONDS)
            if weight:
                pipe.incrbyfloat(daily_stat_key("upstream_weight", day), weight)
                pipe.expire(daily_stat_key("upstream_weight", day), _KEEP_SECONDS)
            for cell, count in cells.items():
                pipe.zincrby(POPULAR_CELLS, count, cell)
            for name, count in rhythm_counts.items():
                pipe.hincrby(rhythm_of_today, name, count)
            if rhythm_counts:
                pipe.pexpire(rhythm_of_today, clock.real_ms((rhythm.DAYS + 1) * 86400 * 1000))

        try:
            results = await self.redis.pipeline(build)
        except CacheError as exc:
            log.warning("usage figures not flushed (%s)", exc)
            return
        if any(isinstance(result, CacheError) for result in results):
            # figures are approximate by nature: a foreign key under one of their names is left alone
            log.info("some usage figures not counted: a key holds another type")

    async def snapshot(self) -> dict[str, float | list[tuple[str, float]]]:
        """The shared figures, for /metrics."""
        day = today()
        active = await self.redis.call(lambda client: client.pfcount(active_clients_key(day)))
        requests, weight = (
            _number(value)
            for value in await self.redis.get_many(
                [daily_stat_key("requests", day), daily_stat_key("upstream_weight", day)]
            )
        )
        top = await self.redis.call(_top_cells)
        return {
            "active_clients_today": float(active or 0),
            "upstream_calls_per_million_requests": weight / requests * 1e6 if requests else 0.0,
            "top_cells": [(_text(cell), float(score)) for cell, score in top],
        }


async def _top_cells(client: AnyRedis) -> list[tuple[Any, float]]:
    """The ten most requested (part, cell) members with their counts."""
    ranked: list[tuple[Any, Any]] = await client.zrevrange(POPULAR_CELLS, 0, 9, withscores=True)  # type: ignore[assignment]  # typed for every option at once
    return [(member, float(score)) for member, score in ranked]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _number(value: bytes | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
