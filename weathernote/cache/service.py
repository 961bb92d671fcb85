"""The weather service: cache-aside over Redis in front of Open-Meteo.

Both the GraphQL resolvers and the REST routes call this; it knows nothing of
either. A read asks for some parts of one cell; fresh entries are answered from
Redis, the rest go to the Refresher (one upstream call per cell however many
ask, on any instance). An entry past its TTL whose data cannot have changed
yet is renewed without asking the upstream; when the upstream fails, its
circuit breaker is open or the budget is spent, the last good entry is served
with `stale: true`, and the spend policy may choose to serve it rather than
spend. Hot entries refresh a little before they expire (probabilistic early
refresh, XFetch), so their readers never wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from weathernote.cache.freshness import Freshness
from weathernote.cache.memo import EntryMemo
from weathernote.cache.refresh import Refresher
from weathernote.cache.spend import SpendPolicy
from weathernote.cache.store import EntryStore
from weathernote.clock import Clock
from weathernote.demand import RequestedCells
from weathernote.errors import (
    CacheError,
    ShareSpent,
    SkipCause,
    UpstreamFailed,
    UpstreamSkipped,
    UpstreamUnavailable,
)
from weathernote.model import Cell, Entry, Part
from weathernote.ops import metrics, requestlog
from weathernote.upstream import Payer, UpstreamBudget, request_weight

log = logging.getLogger(__name__)

_HITS = {part: metrics.CACHE_HITS.labels(part.value) for part in Part}
_MISSES = {part: metrics.CACHE_MISSES.labels(part.value) for part in Part}
# XFetch: beta > 1 refreshes earlier; DELTA is about what a refresh takes (ms).
_XFETCH_BETA = 1.0
_XFETCH_DELTA_MS = 1000.0
# Stale data served by the budget's choice rather than an upstream failure: counted, not logged.
_BUDGET_CHOICES = frozenset({SkipCause.PACE, SkipCause.VALUE})


@dataclass(frozen=True, slots=True)
class Reading:
    """One part of a cell as a reader gets it: the entry, and how it was had."""

    entry: Entry
    cached: bool  # answered from Redis rather than fetched for this request
    stale: bool  # past its TTL, served because the upstream failed or the budget chose so


class WeatherService:
    """Cache-aside reads of a cell's parts: what GraphQL and REST share."""

    def __init__(
        self,
        *,
        store: EntryStore,
        memo: EntryMemo,
        refresher: Refresher,
        budget: UpstreamBudget,
        freshness: Freshness,
        spend: SpendPolicy,
        requested: RequestedCells,
        clock: Clock,
        budget_wait_seconds: float = 0.0,
    ) -> None:
        self.store = store
        self.memo = memo
        self.refresher = refresher
        self.budget = budget
        self.freshness = freshness
        self.spend = spend
        self.requested = requested
        self.clock = clock
        self.budget_wait_seconds = budget_wait_seconds
        self._early: set[tuple[Part, str]] = set()  # entries being refreshed early

    @property
    def upstream_healthy(self) -> bool | None:
        return self.refresher.healthy

    def entry_keys(self, cell: Cell, parts: Sequence[Part]) -> list[str]:
        """The Redis keys `read` reads for these parts, for a caller that reads them in its own round trip."""
        return [self.store.key(part, cell) for part in parts]

    async def read(
        self,
        cell: Cell,
        parts: Collection[Part],
        raws: list[bytes | None] | None = None,
        *,
        payer: Payer | None = None,
    ) -> dict[Part, Reading]:
        """The parts' readings; `raws` are their entries when the caller already read them.

        A miss's upstream call is drawn from `payer`'s share of the budget too: past it,
        what is cached (stale included) answers, or ShareSpent says when to come back.
        """
        wanted = list(parts)
        now = self.clock.now_ms()
        readings: dict[Part, Reading] = {}
        try:
            if raws is None:
                raws = await self.store.read(wanted, cell)
        except CacheError:
            # Redis is down: this process's latest entries still answer while fresh,
            # so a cell costs one upstream call per TTL per process, not one per request.
            for part in wanted:
                known = self.memo.latest(part, cell)
                if known is not None and known.is_fresh(now):
                    readings[part] = Reading(known, cached=True, stale=False)
            raws = []
        for part, raw in zip(wanted, raws):
            entry = self.memo.checked(part, cell, raw)
            if entry is not None and entry.is_fresh(now):
                readings[part] = Reading(entry, cached=True, stale=False)
                self.maybe_refresh_early(entry, now)
        missing = [part for part in wanted if part not in readings]
        for part in wanted:
            self.requested.read(part, cell)
        for part in readings:
            _HITS[part].inc()
        for part in missing:
            standing = self.memo.standing(part, cell, now)
            if standing is not None:
                metrics.STALE_SERVED.labels(part.value, standing.cause).inc()
                readings[part] = Reading(standing.entry, cached=True, stale=True)
        missing = [part for part in missing if part not in readings]
        if missing:
            for part in missing:
                _MISSES[part].inc()
            readings.update(await self._refresh_renew_or_stale(cell, missing, payer))
        if any(reading.stale for reading in readings.values()):
            requestlog.note_read(cell.label, "stale")
        else:
            requestlog.note_read(cell.label, "miss" if missing else "hit")
        return readings

    async def _refresh_renew_or_stale(self, cell: Cell, parts: list[Part], payer: Payer | None) -> dict[Part, Reading]:
        try:
            raws = dict(zip(parts, await self.store.read_many([(part, cell) for part in parts], stale=True)))
        except CacheError:
            raws = {}
        # the last good entries, decoded once for every decision below
        older = {
            part: entry
            for part, raw in raws.items()
            if (entry := self.memo.checked(part, cell, raw, stale=True)) is not None
        }
        now = self.clock.now_ms()
        readings: dict[Part, Reading] = {}
        unchanged = [entry for entry in older.values() if now < entry.next_update_ms]
        # Past its TTL but the upstream cannot have newer data yet: keep it, ask nobody.
        for entry in await self.refresher.renew(unchanged) if unchanged else ():
            readings[entry.part] = Reading(self.memo.remember(entry), cached=True, stale=False)
        # Past its step but within the freshness target the budget keeps: serve, ask nobody.
        for part, entry in older.items():
            if part not in readings and self.freshness.within_target(entry, now):
                readings[part] = Reading(self.memo.remember(entry), cached=True, stale=False)
        to_fetch = [part for part in parts if part not in readings]
        if not to_fetch:
            return readings
        has_data = all(part in older for part in to_fetch)
        try:
            if has_data:
                objection = await self.spend.objection(cell, to_fetch, older)
                if objection is not None:
                    raise UpstreamSkipped("the budget keeps its calls for other cells", objection)
                fetched = await self.refresher.refresh(cell, to_fetch, payer)
            else:
                fetched = await self._refresh_waiting_for_budget(cell, to_fetch, payer)
        except (UpstreamFailed, UpstreamSkipped) as exc:
            if not has_data:
                if isinstance(exc, UpstreamSkipped) and exc.cause is SkipCause.SHARE:
                    raise ShareSpent(exc.reason, exc.retry_after or 60.0) from exc
                raise UpstreamUnavailable(exc.reason) from exc
            chosen = exc.cause in _BUDGET_CHOICES
            if not chosen:
                # the upstream client logs each change of its state; one line per request would drown it
                log.debug("upstream unavailable for %s (%s), serving stale", cell, exc.cause)
            for part in to_fetch:
                metrics.STALE_SERVED.labels(part.value, exc.cause).inc()
                readings[part] = Reading(older[part], cached=True, stale=True)
            if isinstance(exc, UpstreamSkipped) and exc.cause in _BUDGET_CHOICES:
                self.spend.stand_in([older[part] for part in to_fetch], exc.cause)
            return readings
        readings.update({part: Reading(entry, cached=False, stale=False) for part, entry in fetched.items()})
        return readings

    async def _refresh_waiting_for_budget(
        self, cell: Cell, parts: list[Part], payer: Payer | None
    ) -> dict[Part, Entry]:
        """A cell with nothing to serve waits for room in the budget (the next minute, say)
        rather than fail, up to `budget_wait_seconds`."""
        waited = 0.0
        while True:
            try:
                return await self.refresher.refresh(cell, parts, payer)
            except UpstreamSkipped as exc:
                if exc.cause is not SkipCause.BUDGET:
                    raise
                wait = await self.budget.seconds_until_room(request_weight(1, parts))
                if waited + wait > self.budget_wait_seconds:
                    raise
                # a little jitter: the misses that waited for one window do not all spend at once
                wait += random.uniform(0, 1)
                metrics.BUDGET_WAITS.inc()
                await self.clock.sleep(wait)
                waited += wait

    def maybe_refresh_early(self, entry: Entry, now: int) -> None:
        """XFetch: the closer to expiry, the likelier a hit triggers a background refresh."""
        remaining = entry.fresh_until_ms - now
        if remaining > _XFETCH_DELTA_MS * _XFETCH_BETA * 20:
            return  # far from expiry: -ln(u) exceeds 20 once in half a billion
        gap = -_XFETCH_DELTA_MS * _XFETCH_BETA * math.log(1.0 - random.random())
        which = (entry.part, entry.cell.label)
        if gap < remaining or which in self._early:
            return
        self._early.add(which)
        task = asyncio.create_task(self._refresh_early(entry))
        task.add_done_callback(lambda _: self._early.discard(which))

    async def _refresh_early(self, entry: Entry) -> None:
        try:
            if self.clock.now_ms() < entry.next_update_ms:
                await self.refresher.renew([entry])
            else:
                await self.refresher.refresh(entry.cell, [entry.part])
        except (UpstreamFailed, UpstreamSkipped, CacheError) as exc:
            log.info("early refresh of %s skipped (%s)", entry.cell, getattr(exc, "cause", exc))
