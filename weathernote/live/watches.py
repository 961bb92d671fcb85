"""Live weather: a watched cell's latest readings, moved forward by every newer refresh.

Refreshes reach this process through its entry channels (the hub: Redis
pub/sub, one subscription per channel per process). Who watches which cell is
registered in Redis (`demand.WatchedCells`), so the pre-warmer refreshes the
watched cells and a dead instance's watches age out on their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from weathernote.cache import Reading, WeatherService, read_area
from weathernote.demand import WatchedCells
from weathernote.errors import UpstreamError
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


class AreaUpdates:
    """Watches of a box's cells for a task that waits on them: each cell's reading now, then each
    cell's every newer refresh, one (cell, reading) at a time.

    Use as `async with live.area_updates(cells, payer) as updates: async for cell, reading in updates`.
    One watch per cell (the hub keeps one subscription per channel per process, shared with every
    other watcher of the cell), and the payer's client registered as watching every cell (one round
    trip): the pre-warmer counts a watched box as that many watched cells. The first readings come
    from one area read (hits in one round trip, misses in one upstream request); a cell with nothing
    to show yields its failure (ShareSpent, UpstreamUnavailable) and later its first refresh. A cell
    refreshed several times before the task takes it yields its latest once.
    """

    __slots__ = ("_changed", "_wakeup", "live", "payer", "watches")

    def __init__(self, live: LiveWeather, cells: Sequence[Cell], payer: Payer) -> None:
        self.live = live
        self.payer = payer
        self._wakeup = Wakeup()
        self._changed: dict[str, None] = {}  # cells refreshed and not yet yielded, in the order they landed
        self.watches = {cell.label: Watch(live, cell, (Part.CURRENT,), self._noticer(cell.label)) for cell in cells}

    def _noticer(self, label: str) -> Callable[[], None]:
        def notice() -> None:
            self._changed[label] = None
            self._wakeup.set()

        return notice

    async def __aenter__(self) -> AreaUpdates:
        opened = []
        try:
            for watch in self.watches.values():
                await watch.open()
                opened.append(watch)
        except BaseException:
            for watch in opened:
                await watch.close()
            raise
        cells = [watch.cell for watch in self.watches.values()]
        try:
            await self.live.watched.watch_cells(cells, (Part.CURRENT,), self.payer.client)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for watch in self.watches.values():
            self.live.unregister(watch.cell, watch.parts, self.payer.client)
        await self._close()

    async def _close(self) -> None:
        for watch in self.watches.values():
            await watch.close()

    async def __aiter__(self) -> AsyncIterator[tuple[Cell, Reading | UpstreamError]]:
        cells = [watch.cell for watch in self.watches.values()]
        # after `open`: a refresh landing in between is not lost
        first = await read_area(self.live.service, cells, self.payer)
        sent: dict[str, int] = {}
        for watch, answer in zip(self.watches.values(), first):
            if isinstance(answer, Reading):
                watch.merge({Part.CURRENT: answer})
            reading = watch.readings.get(Part.CURRENT)
            if reading is None:
                yield watch.cell, answer
            else:
                sent[watch.cell.label] = reading.entry.fetched_at_ms
                yield watch.cell, reading
        while True:
            while self._changed:
                label = next(iter(self._changed))
                del self._changed[label]
                watch = self.watches[label]
                reading = watch.readings[Part.CURRENT]
                if sent.get(label) != reading.entry.fetched_at_ms:  # what was already yielded yields nothing
                    sent[label] = reading.entry.fetched_at_ms
                    yield watch.cell, reading
            await self._wakeup.wait()


class LiveWeather:
    """Watches of cells fed by the entry channels, and who watches them."""

    def __init__(self, channels: EntryChannels, service: WeatherService, watched: WatchedCells) -> None:
        self.channels = channels
        self.service = service
        self.watched = watched
        self.tracer = channels.hub.tracer  # the fan-outs' (None: tracing is off)

    def watch(self, cell: Cell, parts: Collection[Part], on_change: Callable[[], None]) -> Watch:
        return Watch(self, cell, parts, on_change)

    def updates(self, cell: Cell, parts: Collection[Part], payer: Payer) -> Updates:
        return Updates(self, cell, parts, payer)

    def area_updates(self, cells: Sequence[Cell], payer: Payer) -> AreaUpdates:
        return AreaUpdates(self, cells, payer)

    async def register(self, cell: Cell, parts: Collection[Part], watcher: str) -> None:
        """`watcher` watches these parts of `cell` here: the pre-warmer counts it (until `unregister`)."""
        await self.watched.watch(cell, parts, watcher)

    def unregister(self, cell: Cell, parts: Collection[Part], watcher: str) -> None:
        self.watched.unwatch(cell, parts, watcher)
