"""Business figures shared through Redis: active clients, requests, upstream calls, popular cells.

Counted in memory and flushed every few seconds in one pipeline, so the hot
path never waits on them: a HyperLogLog of hashed client ids per day, daily
request and upstream-call counters, and a sorted set of requested cells that
the pre-warmer decays and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import UTC, datetime

from redis.exceptions import RedisError

from weathernote.breaker import CircuitBreaker
from weathernote.keys import POPULAR_CELLS, active_clients_key, daily_stat_key
from weathernote.redis_client import AnyRedis

log = logging.getLogger(__name__)

_KEEP_SECONDS = 3 * 24 * 3600


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Usage:
    def __init__(self, redis: AnyRedis, breaker: CircuitBreaker, flush_seconds: float = 5.0) -> None:
        self.redis = redis
        self.breaker = breaker
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
        if not (self._requests or self._cells or self._upstream_weight) or not self.breaker.allow():
            return
        clients, cells = self._clients, self._cells
        requests, weight = self._requests, self._upstream_weight
        self._clients, self._cells, self._requests, self._upstream_weight = set(), Counter(), 0, 0.0
        day = today()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
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
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.failure()
            log.warning("usage figures not flushed (%s)", type(exc).__name__)
            return
        self.breaker.success()

    async def snapshot(self) -> dict[str, float | list[tuple[str, float]]]:
        """The shared figures, for /metrics."""
        day = today()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.pfcount(active_clients_key(day))
            pipe.get(daily_stat_key("requests", day))
            pipe.get(daily_stat_key("upstream_weight", day))
            pipe.zrevrange(POPULAR_CELLS, 0, 9, withscores=True)
            active, requests, weight, top = await pipe.execute()
        requests = float(requests or 0)
        weight = float(weight or 0)
        return {
            "active_clients_today": float(active or 0),
            "upstream_calls_per_million_requests": weight / requests * 1e6 if requests else 0.0,
            "top_cells": [(cell.decode(), float(score)) for cell, score in top],
        }

