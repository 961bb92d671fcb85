"""Refreshes as they reach this instance: each entry's announcement channel, heard through the hub.

An entry's channel carries every refresh of it (the entry itself, so nobody
reads it back). `EntryChannels` subscribes the hub to the channels this
instance's watches need, decodes each message once (the memo's shared entry),
catches up after a reconnect by reading the watched entries again, and is the
read path's `Rendezvous`: a miss whose entry another instance is refreshing
waits here for its announcement, and refreshes Redis could not announce are
handed to this instance's subscribers directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryMemo, EntryStore
from weathernote.clock import Clock
from weathernote.errors import CacheError
from weathernote.live.hub import Hub, Listener, Subscriber
from weathernote.model import Cell, Entry, Part
from weathernote.ops.tracing import Tracer
from weathernote.redis import PubSubBackend, RedisGateway

log = logging.getLogger(__name__)


class EntryChannels:
    """The hub's channels named by (part, cell): listening, decoding, catching up, waiting for a refresh."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        store: EntryStore,
        memo: EntryMemo,
        clock: Clock,
        backend: Callable[[], PubSubBackend],
        breaker: CircuitBreaker,
        connect_wait: float = 1.5,
        connect_timeout: float = 5.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.memo = memo
        self.clock = clock
        self.hub = Hub(
            backend,
            breaker,
            decode=self._decode,
            on_reconnect=self._catch_up,
            connect_wait=connect_wait,
            connect_timeout=connect_timeout,
            tracer=tracer,
        )
        self._channels: dict[str, tuple[Part, Cell]] = {}
        self._uses: Counter[str] = Counter()  # listeners per channel, for _channels

    async def start(self) -> None:
        await self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()

    def channel(self, part: Part, cell: Cell) -> str:
        return self.redis.keys.update_channel(part, cell)

    async def listen(self, listener: Listener, part: Part, cell: Cell) -> None:
        """Attach `listener` to the hub; its channel's messages decode as `part` of `cell`."""
        channel = listener.channel
        self._channels[channel] = (part, cell)
        self._uses[channel] += 1
        try:
            await self.hub.attach(listener)
        except BaseException:
            self._release(channel)
            raise

    async def stop_listening(self, listener: Listener) -> None:
        try:
            await self.hub.detach(listener)
        finally:
            self._release(listener.channel)

    def _release(self, channel: str) -> None:
        # counted, not asked of the hub: a new listener may be waiting for the hub's lock
        self._uses[channel] -= 1
        if self._uses[channel] <= 0:
            del self._uses[channel]
            self._channels.pop(channel, None)

    async def wait_for(self, cell: Cell, part: Part, timeout: float) -> Entry | None:
        """The entry another instance is refreshing, as soon as it announces it (None on timeout)."""
        subscriber = Subscriber(self.channel(part, cell))
        await self.listen(subscriber, part, cell)
        try:
            # it may have landed before we listened
            [raw] = await self.store.read([part], cell)
            entry = self.memo.checked(part, cell, raw)
            if entry is not None and entry.is_fresh(self.clock.now_ms()):
                return entry
            async with asyncio.timeout(self.clock.real_seconds(timeout)):
                while True:
                    found: Entry = await subscriber.next()
                    if found.is_fresh(self.clock.now_ms()):  # a catch-up may re-deliver the lapsed one
                        return found
        except (TimeoutError, CacheError):
            return None
        finally:
            await self.stop_listening(subscriber)

    def announce_locally(self, entries: list[Entry]) -> None:
        """A refresh Redis could not announce still reaches this process's subscribers."""
        for entry in entries:
            self.hub.deliver(self.channel(entry.part, entry.cell), entry.encode())

    def _decode(self, channel: str, data: bytes) -> Entry:
        part, cell = self._channels[channel]
        return self.memo.decode(part, cell, data)

    async def _catch_up(self, channels: list[str]) -> None:
        """After a reconnect, re-read each watched entry: announcements made meanwhile were lost."""
        targets = {channel: self._channels[channel] for channel in channels if channel in self._channels}
        for attempt in range(5):
            try:
                raws = await self.store.read_many(list(targets.values()))
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
