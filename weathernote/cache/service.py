"""The weather service: cache-aside over Redis in front of Open-Meteo.

Both the GraphQL resolvers and the REST routes call this; it knows nothing of
either. A read asks for some parts of one cell; fresh entries are answered from
Redis, the rest go to the Refresher (one upstream call per cell however many
ask, on any instance). An entry past its TTL whose data cannot have changed
yet is renewed without asking the upstream; when the upstream fails, its
circuit breaker is open or the budget is spent, the last good entry is served
with `stale: true`. Hot entries refresh a little before they expire
(probabilistic early refresh, XFetch), so their readers never wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

from weathernote.breaker import State as BreakerState
from weathernote.cache.refresh import Refresher
from weathernote.cache.store import EntryStore
from weathernote.clock import clock
from weathernote.demand.usage import Usage
from weathernote.errors import CacheError, UndecodableEntry, UpstreamError, UpstreamSkipped, UpstreamUnavailable
from weathernote.model.cells import Cell
from weathernote.model.entries import Entry, Part
from weathernote.ops import metrics, requestlog
from weathernote.redis.gateway import AnyPipeline
from weathernote.redis.keys import (
    PREWARM_KEPT,
    WATCHED_CELLS,
    entry_key,
    stale_key,
    watched_member,
)
from weathernote.upstream import request_weight
from weathernote.upstream.pace import STEP_SECONDS

log = logging.getLogger(__name__)

_HITS = {part: metrics.CACHE_HITS.labels(part.value) for part in Part}
_MISSES = {part: metrics.CACHE_MISSES.labels(part.value) for part in Part}
# XFetch: beta > 1 refreshes earlier; DELTA is about what a refresh takes (ms).
_XFETCH_BETA = 1.0
_XFETCH_DELTA_MS = 1000.0
# Data this recent may stand in for a refresh while the budget's spending runs ahead of pace.
_RECENT_MS = 3600 * 1000
# Stale data served by the budget's choice rather than an upstream failure: counted, not logged.
_BUDGET_CHOICES = frozenset({"pace", "value"})
_STANDING_MS = 60_000
# Keys whose undecodable entries were logged: once per key, not per read.
_LOGGED_UNDECODABLE_MAX = 4096

__all__ = ["Reading", "UpstreamUnavailable", "WeatherService", "now_ms"]


@dataclass(frozen=True, slots=True)
class Reading:
    entry: Entry
    cached: bool  # answered from Redis rather than fetched for this request
    stale: bool  # past its TTL, served because the upstream failed


def now_ms() -> int:
    return clock.now_ms()


class WeatherService:
    """Cache-aside reads of a cell's parts: what GraphQL and REST share."""

    def __init__(
        self, store: EntryStore, refresher: Refresher, usage: Usage | None = None, *, budget_wait_seconds: float = 0.0
    ) -> None:
        self.store = store
        self.refresher = refresher
        self.budget_wait_seconds = budget_wait_seconds
        # The latest entry seen per key: every reader of one version shares one
        # object, so its model is decoded once per process, not once per reader.
        self._recent: OrderedDict[str, Entry] = OrderedDict()
        self._recent_size = 8192
        self._early: set[str] = set()  # keys being refreshed early
        # Older data that stands in by the budget's choice (pace, value), per key, for a minute
        # at most and never past the upstream's next step: one decision per cell and minute,
        # not Redis round trips on every read.
        self._standing: OrderedDict[str, tuple[Entry, str, int]] = OrderedDict()
        self._logged_undecodable: set[str] = set()
        self.usage = usage
        refresher.on_fetched.append(self._fetched)

    @property
    def upstream_healthy(self) -> bool | None:
        return self.refresher.healthy

    async def read(
        self, cell: Cell, parts: Collection[Part], raws: list[bytes | None] | None = None
    ) -> dict[Part, Reading]:
        """The parts' readings; `raws` are their entries when the caller already read them."""
        wanted = list(parts)
        keys = [entry_key(part, cell) for part in wanted]
        now = now_ms()
        readings: dict[Part, Reading] = {}
        try:
            if raws is None:
                raws = await self.store.read(keys)
        except CacheError:
            # Redis is down: this process's latest entries still answer while fresh,
            # so a cell costs one upstream call per TTL per process, not one per request.
            for part, key in zip(wanted, keys):
                known = self._recent.get(key)
                if known is not None and known.is_fresh(now):
                    readings[part] = Reading(known, cached=True, stale=False)
            raws = []
        for part, raw in zip(wanted, raws):
            entry = self.checked(part, cell, raw)
            if entry is not None and entry.is_fresh(now):
                readings[part] = Reading(entry, cached=True, stale=False)
                self._maybe_refresh_early(entry, now)
        missing = [part for part in wanted if part not in readings]
        if self.usage:
            for part in wanted:
                self.usage.cell_read(watched_member(part, cell))
        for part in readings:
            _HITS[part].inc()
        for part in missing:
            standing = self._standing_in(entry_key(part, cell), now)
            if standing is not None:
                readings[part] = standing
        missing = [part for part in missing if part not in readings]
        if missing:
            for part in missing:
                _MISSES[part].inc()
            readings.update(await self._refresh_renew_or_stale(cell, missing))
        if any(reading.stale for reading in readings.values()):
            requestlog.note_read(cell.label, "stale")
        else:
            requestlog.note_read(cell.label, "miss" if missing else "hit")
        return readings

    def decode(self, part: Part, cell: Cell, raw: bytes) -> Entry:
        """The entry of `raw`, the same object for every reader of one version."""
        key = entry_key(part, cell)
        known = self._recent.get(key)
        if known is not None and raw.startswith(known.header):
            self._recent.move_to_end(key)
            return known
        return self._remember(Entry.decode(part, cell, raw))

    def checked(self, part: Part, cell: Cell, raw: bytes | None, *, stale: bool = False) -> Entry | None:
        """The entry `raw` holds (its last good copy with `stale`), or None when there is none or it
        does not decode (a miss: refetched, and overwritten by the refresh)."""
        if raw is None:
            return None
        try:
            # a stale copy is decoded on its own: it must not replace the latest entry seen
            return Entry.decode(part, cell, raw) if stale else self.decode(part, cell, raw)
        except UndecodableEntry as exc:
            key = stale_key(part, cell) if stale else entry_key(part, cell)
            metrics.UNDECODABLE_ENTRIES.labels(part.value).inc()
            if key not in self._logged_undecodable:
                if len(self._logged_undecodable) >= _LOGGED_UNDECODABLE_MAX:
                    self._logged_undecodable.clear()
                self._logged_undecodable.add(key)
                log.warning("undecodable entry %s (%s): treated as a miss and overwritten", key, exc)
            return None

    def _remember(self, entry: Entry) -> Entry:
        key = entry_key(entry.part, entry.cell)
        self._recent[key] = entry
        self._recent.move_to_end(key)
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        return entry

    def _standing_in(self, key: str, now: int) -> Reading | None:
        known = self._standing.get(key)
        if known is None:
            return None
        entry, cause, until = known
        if now >= until:
            del self._standing[key]
            return None
        metrics.STALE_SERVED.labels(entry.part.value, cause).inc()
        return Reading(entry, cached=True, stale=True)

    def _stand_in(self, entry: Entry, cause: str, now: int) -> None:
        step_ms = STEP_SECONDS * 1000
        until = min((now // step_ms + 1) * step_ms, now + _STANDING_MS)
        self._standing[entry_key(entry.part, entry.cell)] = (entry, cause, until)
        if len(self._standing) > self._recent_size:
            self._standing.popitem(last=False)

    def _fetched(self, entries: list[Entry], weight: float) -> None:
        for entry in entries:
            self._standing.pop(entry_key(entry.part, entry.cell), None)
            self._remember(entry)
        if self.usage:
            self.usage.upstream(weight)

    async def _refresh_renew_or_stale(self, cell: Cell, parts: list[Part]) -> dict[Part, Reading]:
        try:
            raws = dict(zip(parts, await self.store.read([stale_key(part, cell) for part in parts])))
        except CacheError:
            raws = {}
        # the last good entries, decoded once for every decision below
        stale = {
            part: entry
            for part, raw in raws.items()
            if (entry := self.checked(part, cell, raw, stale=True)) is not None
        }
        now = now_ms()
        readings: dict[Part, Reading] = {}
        unchanged = [entry for entry in stale.values() if now < entry.next_update_ms]
        # Past its TTL but the upstream cannot have newer data yet: keep it, ask nobody.
        for entry in await self.refresher.renew(unchanged) if unchanged else ():
            readings[entry.part] = Reading(self._remember(entry), cached=True, stale=False)
        # Past its step but within the freshness target the budget keeps: serve, ask nobody.
        for part, entry in stale.items():
            if part not in readings and self.refresher.freshness.within_target(entry, now):
                readings[part] = Reading(self._remember(entry), cached=True, stale=False)
        to_fetch = [part for part in parts if part not in readings]
        if not to_fetch:
            return readings
        has_data = all(part in stale for part in to_fetch)
        try:
            if has_data and await self._pace_says_wait(stale, to_fetch, now):
                raise UpstreamSkipped("spending ahead of the day's pace", cause="pace")
            if has_data and not await self._worth_it(cell, to_fetch):
                raise UpstreamSkipped("the budget keeps more requested cells fresh", cause="value")
            if has_data:
                fetched = await self.refresher.refresh(cell, to_fetch)
            else:
                fetched = await self._refresh_waiting_for_budget(cell, to_fetch)
        except (UpstreamError, UpstreamSkipped) as exc:
            if not has_data:
                raise UpstreamUnavailable(exc.reason) from exc
            chosen = exc.cause in _BUDGET_CHOICES
            if not chosen:
                # the upstream client logs each change of its state; one line per request would drown it
                log.debug("upstream unavailable for %s (%s), serving stale", cell, exc.cause)
            for part in to_fetch:
                metrics.STALE_SERVED.labels(part.value, exc.cause).inc()
                if chosen:
                    self._stand_in(stale[part], exc.cause, now)
                readings[part] = Reading(stale[part], cached=True, stale=True)
            return readings
        readings.update({part: Reading(entry, cached=False, stale=False) for part, entry in fetched.items()})
        return readings

    async def _refresh_waiting_for_budget(self, cell: Cell, parts: list[Part]) -> dict[Part, Entry]:
        """A cell with nothing to serve waits for room in the budget (the next minute, say)
        rather than fail, up to `budget_wait_seconds`."""
        waited = 0.0
        while True:
            try:
                return await self.refresher.refresh(cell, parts)
            except UpstreamSkipped as exc:
                if exc.cause != "budget":
                    raise
                wait = await self.refresher.budget.seconds_until_room(request_weight(1, parts))
                if waited + wait > self.budget_wait_seconds:
                    raise
                # a little jitter: the misses that waited for one window do not all spend at once
                wait += random.uniform(0, 1)
                metrics.BUDGET_WAITS.inc()
                await clock.sleep(wait)
                waited += wait

    async def _pace_says_wait(self, stale: dict[Part, Entry], parts: list[Part], now: int) -> bool:
        """Serve recent data instead of spending, while spending runs ahead of the day's pace.

        Only when every part has data under an hour old: a cell without data is always fetched.
        """
        if any(now - stale[part].fetched_at_ms > _RECENT_MS for part in parts):
            return False
        return await self.refresher.budget.ahead_of_pace()

    async def _worth_it(self, cell: Cell, parts: list[Part]) -> bool:
        """Is this cell worth spending on, now that it has (older) data to serve?

        Only if the pre-warmer's latest cycle counted it among the cells the budget
        keeps fresh (the most requested), or someone watches it live.
        """
        members = [watched_member(part, cell) for part in parts]
        if self.store.redis.breaker.state is not BreakerState.CLOSED:
            return True

        def build(pipe: AnyPipeline) -> None:
            pipe.exists(PREWARM_KEPT)
            for member in members:
                pipe.sismember(PREWARM_KEPT, member)
                pipe.zscore(WATCHED_CELLS, member)

        try:
            judged, *answers = await self.store.redis.pipeline(build)
        except CacheError:
            return True
        if any(isinstance(answer, CacheError) for answer in (judged, *answers)):
            return True  # a foreign key under our name: judge as if no pre-warmer had
        if not judged:
            return True  # no pre-warmer has judged yet
        kept, watched = answers[0::2], answers[1::2]
        return any(kept) or any(expiry is not None and expiry > time.time() for expiry in watched)

    def _maybe_refresh_early(self, entry: Entry, now: int) -> None:
        """XFetch: the closer to expiry, the likelier a hit triggers a background refresh."""
        remaining = entry.fresh_until_ms - now
        if remaining > _XFETCH_DELTA_MS * _XFETCH_BETA * 20:
            return  # far from expiry: -ln(u) exceeds 20 once in half a billion
        gap = -_XFETCH_DELTA_MS * _XFETCH_BETA * math.log(1.0 - random.random())
        key = entry_key(entry.part, entry.cell)
        if gap < remaining or key in self._early:
            return
        self._early.add(key)
        task = asyncio.create_task(self._refresh_early(entry))
        task.add_done_callback(lambda _: self._early.discard(key))

    async def _refresh_early(self, entry: Entry) -> None:
        try:
            if clock.now_ms() < entry.next_update_ms:
                await self.refresher.renew([entry])
            else:
                await self.refresher.refresh(entry.cell, [entry.part])
        except (UpstreamError, UpstreamSkipped, CacheError) as exc:
            log.info("early refresh of %s skipped (%s)", entry.cell, getattr(exc, "cause", exc))
