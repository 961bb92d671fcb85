"""Subscriptions delivered by callbacks: one feed per rendering and cell, shared by its subscribers.

A refresh reaches a feed through the hub's callback; the feed renders the
payload once per version (with the render function it was opened with: the
GraphQL layer's, for a planned subscription document) and hands that same
string to each subscriber's outlet, which frames it and writes it at once. No
subscription holds a task, a generator or a frame while idle: at tens of
thousands of subscribers, each of those shows in memory and every task a
refresh wakes shows in its latency.

Traced, a fan-out (one rendering and its pushes) is a span under whatever
brought the version: the hub's delivery of a refresh, or a subscriber's start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Protocol

from weathernote.cache import Reading
from weathernote.live.watches import LiveWeather, Watch
from weathernote.model import Cell, Part
from weathernote.ops import tracing
from weathernote.tasks import run_now
from weathernote.upstream import Payer

log = logging.getLogger(__name__)

Versions = tuple[int, ...]  # each part's fetched-at, in the watch's part order
Render = Callable[[Mapping[Part, Reading]], Awaitable[str]]


class Outlet(Protocol):
    """Where a feed's payloads go for one subscriber: `push` writes at once, or keeps the latest until it can."""

    def push(self, payload: str) -> None: ...


def _versions(parts: tuple[Part, ...], readings: Mapping[Part, Reading]) -> Versions:
    return tuple(readings[part].entry.fetched_at_ms for part in parts)


def _newer(versions: Versions, than: Versions) -> bool:
    return versions != than and all(new >= old for new, old in zip(versions, than, strict=True))


class Feed:
    """One rendering of one cell's parts (a subscription document on a cell): watched once, rendered once per version.

    Each subscriber is told every version newer than the last it was sent,
    exactly once; it joins with the readings its own first payload showed, so
    a refresh that landed meanwhile still reaches it, and a newer version its
    own read found reaches the others.
    """

    __slots__ = (
        "_again",
        "_render_payload",
        "_rendering",
        "key",
        "opened",
        "payload",
        "subscribers",
        "users",
        "versions",
        "watch",
    )

    def __init__(self, key: Hashable, cell: Cell, parts: Collection[Part], render: Render, live: LiveWeather) -> None:
        self.key = key
        self._render_payload = render
        self.watch: Watch = live.watch(cell, sorted(parts, key=lambda part: part.value), self._changed)
        self.subscribers: dict[Outlet, Versions] = {}  # each one's last versions sent
        self.payload: str | None = None  # rendered from the watch's readings at `versions`
        self.versions: Versions = ()
        self.users = 0  # subscribers, and those still joining: the feed closes after the last
        self.opened: asyncio.Task[None] | None = None
        self._rendering = False
        self._again = False

    async def read(self, payer: Payer | None = None) -> dict[Part, Reading]:
        """The cell's current readings, for a subscriber's first payload (a miss drawn from `payer`'s share)."""
        return await self.watch.read(payer)

    async def render(self, readings: Mapping[Part, Reading]) -> str:
        return await self._render_payload(readings)

    def add(self, outlet: Outlet, readings: Mapping[Part, Reading]) -> None:
        """`outlet` was sent `readings`' payload: from now on it is sent every newer version."""
        self.subscribers[outlet] = _versions(self.watch.parts, readings)
        if self.watch.merge(readings) and self.watch.complete:
            self._changed()  # its read found what this feed had not heard of yet
        elif self.payload is not None and _newer(self.versions, self.subscribers[outlet]):
            self.subscribers[outlet] = self.versions  # a refresh landed while it was joining
            outlet.push(self.payload)

    def discard(self, outlet: Outlet) -> None:
        self.subscribers.pop(outlet, None)

    def _changed(self) -> None:
        if self._rendering:
            self._again = True  # the render under way is already out of date: render again after it
            return
        self._rendering = True
        run_now(self._render())

    async def _render(self) -> None:
        tracer = self.watch.live.tracer
        try:
            while True:
                self._again = False
                readings = dict(self.watch.readings)
                with tracing.span(tracer if tracer is not None and tracing.recording() else None, "fan-out") as span:
                    payload = await self.render(readings)
                    pushed = self._publish(_versions(self.watch.parts, readings), payload)
                    if span is not None:
                        span.set_attribute("weathernote.subscribers", len(self.subscribers))
                        span.set_attribute("weathernote.pushed", pushed)
                if not self._again:
                    return
        except Exception:  # the hub goes on; the next refresh renders again
            log.exception("rendering a subscription payload failed")
        finally:
            self._rendering = False

    def _publish(self, versions: Versions, payload: str) -> int:
        """Push `payload` to every subscriber not sent `versions` yet; how many were."""
        self.payload, self.versions = payload, versions
        pushed = 0
        for outlet, sent in self.subscribers.items():
            if _newer(versions, sent):
                self.subscribers[outlet] = versions
                pushed += 1
                try:
                    outlet.push(payload)
                except Exception:  # one subscriber's failure must not keep the payload from the others
                    log.exception("delivery to a subscriber failed")
        return pushed


class Feeds:
    """The process's feeds by key (a document plan and its cell-normalised variables), each closed after its last subscriber."""

    def __init__(self, live: LiveWeather) -> None:
        self.live = live
        self._feeds: dict[Hashable, Feed] = {}

    def __len__(self) -> int:
        return len(self._feeds)

    async def join(self, key: Hashable, cell: Cell, parts: Collection[Part], render: Render, watcher: str) -> Feed:
        """The feed of `key` (rendering `parts` of `cell` with `render` when it opens), listening, with
        `watcher` registered as watching the cell; `leave` it after. Cancelled, it leaves."""
        feed = self._feeds.get(key)
        if feed is None:
            self._feeds[key] = feed = Feed(key, cell, parts, render, self.live)
            feed.opened = asyncio.ensure_future(feed.watch.open())  # shared by whoever joins meanwhile
        feed.users += 1
        assert feed.opened is not None
        try:
            await asyncio.shield(feed.opened)
        except BaseException:
            await self._release(feed)
            raise
        try:
            await self.live.register(cell, feed.watch.parts, watcher)
        except BaseException:
            await self.leave(feed, None, watcher)
            raise
        return feed

    async def leave(self, feed: Feed, outlet: Outlet | None, watcher: str) -> None:
        """`outlet` (if it was added) hears no more, nor watches as `watcher`; the last to leave closes
        the feed. Not cancellable."""
        if outlet is not None:
            feed.discard(outlet)
        self.live.unregister(feed.watch.cell, feed.watch.parts, watcher)
        await self._release(feed)

    async def _release(self, feed: Feed) -> None:
        feed.users -= 1
        if feed.users:
            return
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]  # a subscriber arriving from now on opens a new feed
        await asyncio.shield(self._close(feed))

    @staticmethod
    async def _close(feed: Feed) -> None:
        assert feed.opened is not None
        await asyncio.wait([feed.opened])  # an open that failed or was cancelled left nothing to close
        if not feed.opened.cancelled() and feed.opened.exception() is None:
            await feed.watch.close()
