"""Business figures shared through Redis: active clients, requests and upstream calls per day.

Counted in memory and flushed every few seconds in one pipeline, so the hot
path never waits on them: a HyperLogLog of hashed client ids per day, and
daily request and upstream-weight counters. While Redis cannot take them the
distinct clients wait in memory up to `max_clients` (then new ones go uncounted
until a flush succeeds: the figure is an estimate anyway).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from weathernote.errors import CacheError
from weathernote.redis import AnyPipeline, AnyRedis, RedisGateway
from weathernote.redis.keys import POPULAR_CELLS, active_clients_key, daily_stat_key
from weathernote.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_KEEP_SECONDS = 3 * 24 * 3600
MAX_CLIENTS = 50_000  # distinct hashed ids waiting for a flush: a few MB at most


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Usage:
    """Business figures counted in memory and flushed to Redis every few seconds."""

    def __init__(self, redis: RedisGateway, flush_seconds: float = 5.0, *, max_clients: int = MAX_CLIENTS) -> None:
        self.redis = redis
        self.flush_seconds = flush_seconds
        self.max_clients = max_clients
        self._clients: set[str] = set()
        self._requests = 0
        self._upstream_weight = 0.0
        self._task: asyncio.Task[None] | None = None

    def request(self, client_hash: str, cost: int = 1) -> None:
        self._requests += cost
        if len(self._clients) < self.max_clients:
            self._clients.add(client_hash)

    def upstream(self, weight: float) -> None:
        self._upstream_weight += weight

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="usage-flusher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        if not (self._requests or self._clients or self._upstream_weight):
            return
        clients, requests, weight = self._clients, self._requests, self._upstream_weight
        self._clients, self._requests, self._upstream_weight = set(), 0, 0.0
        day = today()

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

        try:
            results = await self.redis.pipeline(build)
        except CacheError as exc:
            log.warning("usage figures not flushed (%s): kept for the next flush", exc)
            self._requests += requests
            self._upstream_weight += weight
            room = max(0, self.max_clients - len(self._clients))
            self._clients.update(list(clients)[:room])
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
