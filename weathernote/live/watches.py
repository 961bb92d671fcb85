"""Live weather: a watched cell's latest readings, moved forward by every newer refresh.

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
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from weathernote.cache.service import Reading, WeatherService
from weathernote.clock import clock
from weathernote.errors import CacheError, RedisKeyError
from weathernote.live.hub import Hub, Listener, Subscriber, Wakeup
from weathernote.model.cells import Cell
from weathernote.model.entries import Entry, Part
from weathernote.ops import metrics
from weathernote.redis.gateway import AnyPipeline, RedisGateway
from weathernote.redis.keys import WATCHED_CELLS, entry_key, update_channel, watched_member

log = logging.getLogger(__name__)


class Watch:
    """A watched cell's parts: their latest readings, and a callback on every newer version.

    Fed by the hub from the callback that brings each refresh: no task and no
    generator waits per watch, so one can be shared by every subscriber of the
    same cell and document. Versions only move forward (an entry older than, or
    as old as, the part's reading is ignored), so a catch-up re-delivering one is
    never seen twice. `open` before `read`: a refresh landing in between is not
    lost. A part's flags (`cached`, `stale`) are those of the reading that
    brought its version; a refresh brings it fetched, fresh.
    """

    __slots__ = ("_listeners", "cell", "live", "members", "on_change", "parts", "readings")

    def __init__(self, live: LiveWeather, cell: Cell, parts: Collection[Part], on_change: Callable[[], None]) -> None:
        self.live = live
        self.cell = cell
        self.parts = tuple(parts)
        self.on_change = on_change  # called when `readings` moved forward and holds every part
        self.readings: dict[Part, Reading] = {}
        self._listeners: list[_PartListener] = []
        self.members = [watched_member(part, cell) for part in self.parts]

    async def open(self) -> None:
        """Listen to every part's channel and register the cell as watched. Cancelled, it leaves nothing behind."""
        try:
            for part in self.parts:
                listener = _PartListener(update_channel(part, self.cell), part, self)
                await self.live._listen(listener, part, self.cell)
                self._listeners.append(listener)
        except BaseException:
            await self._detach()
            raise
        await self.live._watch(self.members)

    async def close(self) -> None:
        self.live._unwatch(self.members)
        await self._detach()

    async def _detach(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await self.live._stop_listening(listener)

    async def read(self) -> dict[Part, Reading]:
        """The parts' current values (fetched on a miss), as the service reads them."""
        return dict(await self.live.service.read(self.cell, self.parts))

    def merge(self, readings: Mapping[Part, Reading]) -> bool:
        """Take each reading newer than this watch's of its part; whether any was."""
        moved = False
        for part, reading in readings.items():
            held = self.readings.get(part)
            if held is None or reading.entry.fetched_at_ms > held.entry.fetched_at_ms:
                self.readings[part] = reading
                moved = True
        return moved

    @property
    def complete(self) -> bool:
        return len(self.readings) == len(self.parts)

    def _offer(self, part: Part, entry: Entry) -> None:
        if self.merge({part: Reading(entry, cached=False, stale=False)}) and self.complete:
            self.on_change()


class _PartListener:
    """The hub's subscriber for one part of a watch: hands each decoded entry straight to it."""

    __slots__ = ("channel", "part", "watch")

    def __init__(self, channel: str, part: Part, watch: Watch) -> None:
        self.channel = channel
        self.part = part
        self.watch = watch

    def offer(self, message: Any) -> None:
        self.watch._offer(self.part, message)


class Updates:
    """A watch for a task that waits on it: the readings now, then after every newer refresh.

    Use as `async with live.updates(cell, parts) as updates: async for readings in updates`
    (what Strawberry's own subscription resolvers need; the planned path uses `Watch`).
    """

    __slots__ = ("_wakeup", "watch")

    def __init__(self, live: LiveWeather, cell: Cell, parts: Collection[Part]) -> None:
        self._wakeup = Wakeup()
        self.watch = Watch(live, cell, parts, self._wakeup.set)

    async def __aenter__(self) -> Updates:
        await self.watch.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.watch.close()

    async def __aiter__(self) -> AsyncIterator[dict[Part, Reading]]:
        self.watch.merge(await self.watch.read())  # after `open`: a refresh landing in between is not lost
        sent: tuple[int, ...] = ()
        while True:
            versions = tuple(reading.entry.fetched_at_ms for reading in self.watch.readings.values())
            if versions != sent:  # a wakeup for what was already yielded yields nothing
                sent = versions
                yield dict(self.watch.readings)
            await self._wakeup.wait()


class LiveWeather:
    """Watches of cells fed by the hub, and the watched-cell registry in Redis."""

    def __init__(
        self,
        redis: RedisGateway,
        service: WeatherService,
        *,
        watch_ttl_seconds: float = 90.0,
    ) -> None:
        self.redis = redis
        self.service = service
        self.watch_ttl_seconds = watch_ttl_seconds
        self.hub = Hub(
            redis.pubsub(),
            redis.breaker,
            decode=self._decode,
            on_reconnect=self._catch_up,
            connect_wait=redis.deadline,
            connect_timeout=redis.deadline * 3,
        )
        service.refresher.on_local_only.append(self._announce_locally)
        service.refresher.waiter = self.wait_for
        self._channels: dict[str, tuple[Part, Cell]] = {}
        self._channel_uses: Counter[str] = Counter()  # listeners per channel, for _channels
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

    def watch(self, cell: Cell, parts: Collection[Part], on_change: Callable[[], None]) -> Watch:
        return Watch(self, cell, parts, on_change)

    def updates(self, cell: Cell, parts: Collection[Part]) -> Updates:
        return Updates(self, cell, parts)

    async def _watch(self, members: list[str]) -> None:
        new = [member for member in members if not self._watched[member]]
        self._watched.update(members)
        if new:
            await self._register(new)

    def _unwatch(self, members: list[str]) -> None:
        self._watched.subtract(members)
        for member in members:
            if self._watched[member] <= 0:
                del self._watched[member]

    async def _listen(self, subscriber: Listener, part: Part, cell: Cell) -> None:
        """Attach `subscriber` to the hub; its channel's messages decode as `part` of `cell`."""
        channel = subscriber.channel
        self._channels[channel] = (part, cell)
        self._channel_uses[channel] += 1
        try:
            await self.hub.attach(subscriber)
        except BaseException:
            self._release(channel)
            raise

    async def _stop_listening(self, subscriber: Listener) -> None:
        try:
            await self.hub.detach(subscriber)
        finally:
            self._release(subscriber.channel)

    def _release(self, channel: str) -> None:
        # counted, not asked of the hub: a new listener may be waiting for the hub's lock
        self._channel_uses[channel] -= 1
        if self._channel_uses[channel] <= 0:
            del self._channel_uses[channel]
            self._channels.pop(channel, None)

    async def wait_for(self, cell: Cell, part: Part, timeout: float) -> Entry | None:
        """The entry another instance is refreshing, as soon as it announces it (None on timeout)."""
        subscriber = Subscriber(update_channel(part, cell))
        await self._listen(subscriber, part, cell)
        try:
            # it may have landed before we listened
            [raw] = await self.service.store.read([entry_key(part, cell)])
            entry = self.service.checked(part, cell, raw)
            if entry is not None and entry.is_fresh(clock.now_ms()):
                return entry
            async with asyncio.timeout(clock.real_seconds(timeout)):
                while True:
                    found: Entry = await subscriber.next()
                    if found.is_fresh(clock.now_ms()):  # a catch-up may re-deliver the lapsed one
                        return found
        except (TimeoutError, CacheError):
            return None
        finally:
            await self._stop_listening(subscriber)

    def _announce_locally(self, entries: list[Entry]) -> None:
        """A refresh Redis could not announce still reaches this process's subscribers."""
        for entry in entries:
            self.hub.deliver(update_channel(entry.part, entry.cell), entry.encode())

    def _decode(self, channel: str, data: bytes) -> Entry:
        part, cell = self._channels[channel]
        return self.service.decode(part, cell, data)

    async def _catch_up(self, channels: list[str]) -> None:
        """After a reconnect, re-read each watched entry: announcements made meanwhile were lost."""
        targets = {channel: self._channels[channel] for channel in channels if channel in self._channels}
        for attempt in range(5):
            try:
                raws = await self.service.store.read([entry_key(*target) for target in targets.values()])
                break
            except CacheError as exc:
                log.warning("catch-up after reconnect failed (%s), retrying", exc)
                await asyncio.sleep(0.2 * 2**attempt)
        else:
            return
        for channel, raw in zip(targets, raws):
            if raw is not None:
                self.hub.deliver(channel, raw)  # subscribers skip versions they already have
        log.info("caught up on %d watched channel(s) after reconnect", len(targets))

    async def _register(self, members: list[str]) -> None:
        expires = time.time() + self.watch_ttl_seconds

        def build(pipe: AnyPipeline) -> None:
            pipe.zadd(WATCHED_CELLS, {member: expires for member in members})
            pipe.zremrangebyscore(WATCHED_CELLS, "-inf", time.time())

        try:
            added, _ = await self.redis.pipeline(build)
        except CacheError as exc:
            log.warning("could not register watched cells (%s)", exc)
            return
        if isinstance(added, RedisKeyError):
            # not a sorted set (a foreign key): ours starts over, with these members
            metrics.REDIS_KEY_ERRORS.labels("watched").inc()
            log.warning("%s is not a sorted set (%s): replaced", WATCHED_CELLS, added)
            with contextlib.suppress(CacheError):
                await self.redis.call(lambda client: client.delete(WATCHED_CELLS))
                await self.redis.pipeline(build)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.watch_ttl_seconds / 3)
            if self._watched:
                await self._register(list(self._watched))
