"""The weather service: cache-aside over Redis in front of Open-Meteo.

Both the GraphQL resolvers and the REST routes call this; it knows nothing of
either. A read asks for some parts of one cell; fresh entries are answered from
Redis, the rest are fetched from the upstream in ONE call per cell however many
requests ask at once (single flight), stored, announced and answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from weathernote import metrics, requestlog
from weathernote.cache import CacheUnavailable, EntryStore
from weathernote.cells import Cell
from weathernote.entries import Entry, Part
from weathernote.keys import entry_key, stale_key
from weathernote.upstream import OpenMeteoClient, UpstreamError, request_weight
from weathernote.usage import Usage

log = logging.getLogger(__name__)


_HITS = {part: metrics.CACHE_HITS.labels(part.value) for part in Part}
_MISSES = {part: metrics.CACHE_MISSES.labels(part.value) for part in Part}


class UpstreamUnavailable(Exception):
    """The upstream failed and nothing is cached for the cell, not even stale."""


@dataclass(frozen=True, slots=True)
class Reading:
    entry: Entry
    cached: bool  # answered from Redis rather than fetched for this request
    stale: bool  # past its TTL, served because the upstream failed


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WeatherService:
    def __init__(
        self,
        store: EntryStore,
        upstream: OpenMeteoClient,
        *,
        ttl_seconds: dict[Part, float],
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.ttl_ms = {part: int(seconds * 1000) for part, seconds in ttl_seconds.items()}
        self._flights: dict[tuple[str, Part], asyncio.Future[Entry]] = {}
        # The latest entry seen per key: every reader of one version shares one
        # object, so its model is decoded once per process, not once per reader.
        self._recent: OrderedDict[str, Entry] = OrderedDict()
        self._recent_size = 8192
        self.upstream_healthy: bool | None = None  # outcome of the last upstream call
        # told of refreshes Redis could not announce, so local subscribers still hear them
        self.local_listeners: list[Callable[[list[Entry]], None]] = []
        self.usage: Usage | None = None

    async def read(self, cell: Cell, parts: Collection[Part]) -> dict[Part, Reading]:
        wanted = list(parts)
        keys = [entry_key(part, cell) for part in wanted]
        now = now_ms()
        readings: dict[Part, Reading] = {}
        try:
            raws = await self.store.read(keys)
        except CacheUnavailable:
            # Redis is down: this process's latest entries still answer while fresh,
            # so a cell costs one upstream call per TTL per process, not one per request.
            for part, key in zip(wanted, keys):
                known = self._recent.get(key)
                if known is not None and known.is_fresh(now):
                    readings[part] = Reading(known, cached=True, stale=False)
            raws = []
        for part, raw in zip(wanted, raws):
            if raw is not None:
                entry = self.decode(part, cell, raw)
                if entry.is_fresh(now):
                    readings[part] = Reading(entry, cached=True, stale=False)
        missing = [part for part in wanted if part not in readings]
        if self.usage:
            self.usage.cell_read(cell.label)
        for part in readings:
            _HITS[part].inc()
        if missing:
            for part in missing:
                _MISSES[part].inc()
            fetched = await self._refresh_or_stale(cell, missing)
            readings.update(fetched)
            requestlog.note_read(cell.label, "stale" if any(r.stale for r in fetched.values()) else "miss")
        else:
            requestlog.note_read(cell.label, "hit")
        return readings

    def decode(self, part: Part, cell: Cell, raw: bytes) -> Entry:
        """The entry of `raw`, the same object for every reader of one version."""
        key = entry_key(part, cell)
        known = self._recent.get(key)
        if known is not None and raw.startswith(known.header):
            self._recent.move_to_end(key)
            return known
        return self._remember(key, Entry.decode(part, cell, raw))

    def _remember(self, key: str, entry: Entry) -> Entry:
        self._recent[key] = entry
        self._recent.move_to_end(key)
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        return entry

    async def _refresh_or_stale(self, cell: Cell, parts: list[Part]) -> dict[Part, Reading]:
        try:
            fetched = await self.refresh(cell, parts)
        except UpstreamError as exc:
            try:
                raws = await self.store.read([stale_key(part, cell) for part in parts])
            except CacheUnavailable:
                raws = [None]
            if any(raw is None for raw in raws):
                raise UpstreamUnavailable(exc.reason) from exc
            log.warning("upstream failed for %s, serving stale: %s", cell, exc.reason)
            for part in parts:
                metrics.STALE_SERVED.labels(part.value, exc.cause).inc()
            return {
                part: Reading(Entry.decode(part, cell, raw), cached=True, stale=True)  # type: ignore[arg-type]
                for part, raw in zip(parts, raws)
            }
        return {part: Reading(entry, cached=False, stale=False) for part, entry in fetched.items()}

    async def refresh(self, cell: Cell, parts: Collection[Part]) -> dict[Part, Entry]:
        """Fetch, store and announce `parts` of `cell`, joining any fetch already in flight."""
        futures: dict[Part, asyncio.Future[Entry]] = {}
        to_fetch: list[Part] = []
        loop = asyncio.get_running_loop()
        for part in parts:
            flight = self._flights.get((cell.label, part))
            if flight is None:
                flight = loop.create_future()
                flight.add_done_callback(_retrieve_exception)
                self._flights[(cell.label, part)] = flight
                to_fetch.append(part)
            futures[part] = flight
        if to_fetch:
            # A task of its own: a cancelled first caller must not cancel the others' fetch.
            task = asyncio.create_task(self._fetch_and_store(cell, to_fetch))
            task.add_done_callback(_retrieve_exception)
        # shield: a waiter's cancellation must not cancel the shared future
        return {part: await asyncio.shield(future) for part, future in futures.items()}

    async def _fetch_and_store(self, cell: Cell, parts: list[Part]) -> None:
        futures = [self._flights[(cell.label, part)] for part in parts]
        try:
            try:
                [models] = await self.upstream.fetch([cell], parts)
            except UpstreamError:
                self.upstream_healthy = False
                raise
            self.upstream_healthy = True
            if self.usage:
                self.usage.upstream(request_weight(1, parts))
            fetched_at = now_ms()
            entries = [
                Entry.from_model(part, cell, models[part], fetched_at, self.ttl_ms[part])
                for part in parts
            ]
            for entry in entries:
                self._remember(entry_key(entry.part, entry.cell), entry)
            try:
                await self.store.write(entries)
            except CacheUnavailable:
                log.warning("Redis unavailable: %s refreshed for this process only", cell)
                for listener in self.local_listeners:
                    listener(entries)
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            raise
        else:
            for future, entry in zip(futures, entries):
                future.set_result(entry)
        finally:
            for part in parts:
                self._flights.pop((cell.label, part), None)


def _retrieve_exception(future: asyncio.Future[object]) -> None:
    # Waiters receive the error through their futures; this only keeps asyncio
    # from logging it again as "never retrieved" when every waiter has left.
    if not future.cancelled():
        future.exception()
