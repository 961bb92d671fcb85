"""Live weather: watching a cell yields its current value at once, then every newer refresh.

Refreshes reach this process through the hub (Redis pub/sub, one subscription
per channel per process). Cells watched here are registered in Redis with an
expiry this process keeps renewing, so the pre-warmer refreshes them and a
dead instance's cells age out on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

from weathernote.cells import Cell
from weathernote.entries import Entry, Part
from weathernote.hub import Hub, Subscriber
from weathernote.keys import WATCHED_CELLS, entry_key, update_channel, watched_member
from weathernote.redis_client import AnyRedis
from weathernote.service import Reading, WeatherService

log = logging.getLogger(__name__)


class Watch:
    """The readings of one watched cell, newest first, never the same version twice."""

    def __init__(
        self,
        service: WeatherService,
        cell: Cell,
        subscribers: Mapping[Part, Subscriber],
        wakeup: asyncio.Event,
    ) -> None:
        self.service = service
        self.cell = cell
        self.subscribers = subscribers
        self.wakeup = wakeup

    async def __aiter__(self) -> AsyncIterator[dict[Part, Reading]]:
        # Subscribed before this read: a refresh landing in between is not lost.
        readings = dict(await self.service.read(self.cell, list(self.subscribers)))
        yield dict(readings)
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            changed = False
            for part, subscriber in self.subscribers.items():
                entry: Entry | None = subscriber.take()
                if entry is not None and entry.fetched_at_ms > readings[part].entry.fetched_at_ms:
                    readings[part] = Reading(entry, cached=False, stale=False)
                    changed = True
            if changed:
                yield dict(readings)


class LiveWeather:
    def __init__(
        self,
        redis: AnyRedis,
        pubsub_redis: Redis,
        service: WeatherService,
        *,
        watch_ttl_seconds: float = 90.0,
    ) -> None:
        self.redis = redis
        self.service = service
        self.watch_ttl_seconds = watch_ttl_seconds
        self.hub = Hub(pubsub_redis, decode=self._decode, on_reconnect=self._catch_up)
        self._channels: dict[str, tuple[Part, Cell]] = {}
        self._watched: Counter[str] = Counter()  # registry member -> local watches
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hub.start()
        self._renewer = asyncio.create_task(self._renew_forever(), name="watched-cells-renewer")

    async def stop(self) -> None:
        if self._renewer:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.hub.stop()

    @contextlib.asynccontextmanager
    async def watch(self, cell: Cell, parts: Collection[Part]) -> AsyncIterator[Watch]:
        wakeup = asyncio.Event()
        members = [watched_member(part, cell) for part in parts]
        async with contextlib.AsyncExitStack() as stack:
            subscribers = {}
            for part in parts:
                channel = update_channel(part, cell)
                self._channels[channel] = (part, cell)
                subscribers[part] = await stack.enter_async_context(self.hub.subscribe(channel, wakeup))
            new = [member for member in members if not self._watched[member]]
            self._watched.update(members)
            stack.callback(self._unwatch, members)
            if new:
                await self._register(new)
            yield Watch(self.service, cell, subscribers, wakeup)

    def _unwatch(self, members: list[str]) -> None:
        self._watched.subtract(members)
        for member in members:
            if self._watched[member] <= 0:
                del self._watched[member]
        for channel in list(self._channels):
            if not self.hub.local_subscribers(channel):
                del self._channels[channel]

    def _decode(self, channel: str, data: bytes) -> Entry:
        part, cell = self._channels[channel]
        return Entry.decode(part, cell, data)

    async def _catch_up(self, channels: list[str]) -> None:
        """After a reconnect, re-read each watched entry: announcements made meanwhile were lost."""
        targets = {channel: self._channels[channel] for channel in channels if channel in self._channels}
        for attempt in range(5):
            try:
                raws = await self.service.store.read([entry_key(*target) for target in targets.values()])
                break
            except RedisError as exc:
                log.warning("catch-up after reconnect failed (%s), retrying", type(exc).__name__)
                await asyncio.sleep(0.2 * 2**attempt)
        else:
            return
        for channel, raw in zip(targets, raws):
            if raw is not None:
                self.hub.deliver(channel, raw)  # subscribers skip versions they already have
        log.info("caught up on %d watched channel(s) after reconnect", len(targets))

    @property
    def watched(self) -> list[str]:
        return list(self._watched)

    async def _register(self, members: list[str]) -> None:
        expires = time.time() + self.watch_ttl_seconds
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(WATCHED_CELLS, {member: expires for member in members})
                pipe.zremrangebyscore(WATCHED_CELLS, "-inf", time.time())
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not register watched cells (%s)", type(exc).__name__)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.watch_ttl_seconds / 3)
            if self._watched:
                await self._register(list(self._watched))
