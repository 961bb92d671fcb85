"""Live weather: a watched cell's latest readings, moved forward by every newer refresh.

Refreshes reach this process through its entry channels (the hub: Redis
pub/sub, one subscription per channel per process). Who watches which cell is
registered in Redis (`demand.WatchedCells`), so the pre-warmer refreshes the
watched cells and a dead instance's watches age out on their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from weathernote.cache import Reading, WeatherService
from weathernote.demand import WatchedCells
from weathernote.live.channels import EntryChannels
from weathernote.live.hub import Wakeup
from weathernote.model import Cell, Entry, Part
from weathernote.upstream import Payer


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

    __slots__ = ("_listeners", "cell", "live", "on_change", "parts", "readings")

    def __init__(self, live: LiveWeather, cell: Cell, parts: Collection[Part], on_change: Callable[[], None]) -> None:
        self.live = live
        self.cell = cell
        self.parts = tuple(parts)
        self.on_change = on_change  # called when `readings` moved forward and holds every part
        self.readings: dict[Part, Reading] = {}
        self._listeners: list[_PartListener] = []

    async def open(self) -> None:
        """Listen to every part's channel. Cancelled, it leaves nothing behind."""
        channels = self.live.channels
        try:
            for part in self.parts:
                listener = _PartListener(channels.channel(part, self.cell), part, self)
                await channels.listen(listener, part, self.cell)
                self._listeners.append(listener)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await self.live.channels.stop_listening(listener)

    async def read(self, payer: Payer | None = None) -> dict[Part, Reading]:
        """The parts' current values (fetched on a miss, drawn from `payer`'s share), as the service reads them."""
        return dict(await self.live.service.read(self.cell, self.parts, payer=payer))

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

    Use as `async with live.updates(cell, parts, payer) as updates: async for readings in updates`
    (what Strawberry's own subscription resolvers need; the planned path uses `Watch`).
    The payer's client is registered as watching the cell meanwhile, and pays for its first read's miss.
    """

    __slots__ = ("_wakeup", "payer", "watch", "watcher")

    def __init__(self, live: LiveWeather, cell: Cell, parts: Collection[Part], payer: Payer) -> None:
        self._wakeup = Wakeup()
        self.watch = Watch(live, cell, parts, self._wakeup.set)
        self.payer = payer
        self.watcher = payer.client

    async def __aenter__(self) -> Updates:
        await self.watch.open()
        await self.watch.live.register(self.watch.cell, self.watch.parts, self.watcher)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.watch.live.unregister(self.watch.cell, self.watch.parts, self.watcher)
        await self.watch.close()

    async def __aiter__(self) -> AsyncIterator[dict[Part, Reading]]:
        self.watch.merge(await self.watch.read(self.payer))  # after `open`: a refresh landing in between is not lost
        sent: tuple[int, ...] = ()
        while True:
            versions = tuple(reading.entry.fetched_at_ms for reading in self.watch.readings.values())
            if versions != sent:  # a wakeup for what was already yielded yields nothing
                sent = versions
                yield dict(self.watch.readings)
            await self._wakeup.wait()


class LiveWeather:
    """Watches of cells fed by the entry channels, and who watches them."""

    def __init__(self, channels: EntryChannels, service: WeatherService, watched: WatchedCells) -> None:
        self.channels = channels
        self.service = service
        self.watched = watched

    def watch(self, cell: Cell, parts: Collection[Part], on_change: Callable[[], None]) -> Watch:
        return Watch(self, cell, parts, on_change)

    def updates(self, cell: Cell, parts: Collection[Part], payer: Payer) -> Updates:
        return Updates(self, cell, parts, payer)

    async def register(self, cell: Cell, parts: Collection[Part], watcher: str) -> None:
        """`watcher` watches these parts of `cell` here: the pre-warmer counts it (until `unregister`)."""
        await self.watched.watch(cell, parts, watcher)

    def unregister(self, cell: Cell, parts: Collection[Part], watcher: str) -> None:
        self.watched.unwatch(cell, parts, watcher)
