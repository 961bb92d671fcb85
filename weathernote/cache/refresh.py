"""Refreshing entries from the upstream: once per cell, within budget, at the upstream's pace.

One refresh of a cell's parts costs one upstream request however many ask at
once, on one instance (a shared future) or many (a short lock in Redis; the
others wait for the refresh's announcement). Every call is weighed and drawn
from the shared budget; a circuit breaker stops hammering a failing
Open-Meteo. Entries are fresh until the upstream can have newer data (the
next 15-minute step for current values, the model cadence for forecasts),
at most the configured TTL, with a little jitter so cells filled together do
not expire together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from weathernote.breaker import CircuitBreaker
from weathernote.cache.store import EntryStore
from weathernote.clock import clock
from weathernote.errors import CacheError, UpstreamError, UpstreamSkipped
from weathernote.model.cells import Cell
from weathernote.model.entries import Current, Entry, Model, Part
from weathernote.redis.gateway import AnyPipeline
from weathernote.redis.keys import entry_key, refresh_lock_key
from weathernote.upstream import OpenMeteoClient, request_weight
from weathernote.upstream.budget import UpstreamBudget
from weathernote.upstream.pace import (
    STEP_SECONDS,
    next_current_update_ms,
    next_forecast_update_ms,
    observed_step_ms,
)

log = logging.getLogger(__name__)

# If the upstream has not moved on when it could have, ask again this much later.
_RETRY_LATER_MS = 60_000
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

Waiter = Callable[[Cell, Part, float], Awaitable[Entry | None]]


@dataclass(frozen=True, slots=True)
class Freshness:
    ttl_ms: dict[Part, int]
    forecast_cadence_seconds: float = 3600.0
    jitter: float = 0.1  # entries expire up to this fraction of their TTL early
    # Current values this recent are fresh enough for the cells the budget keeps:
    # one step (the latest data) or, to keep more cells within an hour, four.
    target_steps: int = 1

    def within_target(self, entry: Entry, now_ms: int) -> bool:
        """Are these current values recent enough to serve without a refresh?"""
        target_ms = self.target_steps * STEP_SECONDS * 1000
        return entry.part is Part.CURRENT and now_ms - observed_step_ms(entry.next_update_ms) < target_ms

    def times(self, part: Part, model: Model, fetched_at_ms: int) -> tuple[int, int]:
        """(fresh until, next possible update) of a just-fetched entry."""
        if part is Part.CURRENT:
            assert isinstance(model, Current)
            next_update = next_current_update_ms(model.time)
        else:
            next_update = next_forecast_update_ms(fetched_at_ms, self.forecast_cadence_seconds)
        next_update = max(next_update, fetched_at_ms + _RETRY_LATER_MS)
        ttl = self.ttl_ms[part] * (1 - self.jitter * random.random())
        return min(fetched_at_ms + int(ttl), next_update), next_update

    def renewal(self, entry: Entry, now_ms: int) -> int:
        """How long an unchanged entry may be fresh again (until it can change)."""
        ttl = self.ttl_ms[entry.part] * (1 - self.jitter * random.random())
        return min(now_ms + int(ttl), entry.next_update_ms)


class Refresher:
    """Fetches cells from the upstream once across instances, then stores and announces them."""

    def __init__(
        self,
        store: EntryStore,
        upstream: OpenMeteoClient,
        budget: UpstreamBudget,
        breaker: CircuitBreaker,
        freshness: Freshness,
        *,
        lock_seconds: float = 15.0,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.budget = budget
        self.breaker = breaker
        self.freshness = freshness
        self.lock_seconds = lock_seconds
        self.waiter: Waiter | None = None  # waits for another instance's announcement
        self.on_fetched: list[Callable[[list[Entry], float], None]] = []
        self.on_local_only: list[Callable[[list[Entry]], None]] = []
        self.healthy: bool | None = None  # outcome of the last upstream call
        self._flights: dict[tuple[str, Part], asyncio.Future[Entry]] = {}
        self._release = store.redis.script(_RELEASE)

    async def refresh(self, cell: Cell, parts: Collection[Part]) -> dict[Part, Entry]:
        """Fresh entries for `parts` of `cell`: joins a fetch in flight here or elsewhere."""
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
            task = asyncio.create_task(self._resolve_flights(cell, to_fetch))
            task.add_done_callback(_retrieve_exception)
        # shield: a waiter's cancellation must not cancel the shared future
        return {part: await asyncio.shield(future) for part, future in futures.items()}

    async def _resolve_flights(self, cell: Cell, parts: list[Part]) -> None:
        try:
            entries = await self._refresh_across_instances(cell, parts)
        except BaseException as exc:
            for part in parts:
                future = self._flights.pop((cell.label, part))
                if not future.done():
                    future.set_exception(exc)
            raise
        for part in parts:
            self._flights.pop((cell.label, part)).set_result(entries[part])

    async def _refresh_across_instances(self, cell: Cell, parts: list[Part]) -> dict[Part, Entry]:
        token = secrets.token_hex(8)
        won, theirs = await self._lock(cell, parts, token)
        mine = list(won)
        entries: dict[Part, Entry] = {}
        try:
            if theirs and self.waiter is not None:
                waited = await asyncio.gather(*(self.waiter(cell, part, self.lock_seconds) for part in theirs))
                for part, entry in zip(theirs, waited):
                    if entry is not None:
                        entries[part] = entry
                    else:
                        mine.append(part)  # its holder died or failed: our turn
            elif theirs:
                mine += theirs
            if mine:
                [fetched] = await self.fetch([(cell, mine)], prewarm=False)
                entries.update(fetched)
        finally:
            await self._unlock([(cell, part) for part in won], token)
        return entries

    async def refresh_batch(self, cells: Sequence[Cell], parts: Collection[Part]) -> list[Cell]:
        """One pre-warm request for those of `cells` that nobody is refreshing already.

        It holds their refresh locks while it runs: a miss on one of them meanwhile
        waits for its announcement instead of paying for the same data again.
        Returns the cells refreshed.
        """
        token = secrets.token_hex(8)
        won = await self._lock_entries([(cell, part) for cell in cells for part in parts], token)
        held = set(won)
        mine = [cell for cell in cells if all((cell, part) in held for part in parts)]
        fetching = set(mine)
        await self._unlock([entry for entry in won if entry[0] not in fetching], token)
        try:
            if mine:
                await self.fetch([(cell, parts) for cell in mine], prewarm=True)
        finally:
            await self._unlock([entry for entry in won if entry[0] in fetching], token)
        return mine

    async def _lock(self, cell: Cell, parts: list[Part], token: str) -> tuple[list[Part], list[Part]]:
        """Which parts we refresh (lock won) and which another instance is refreshing."""
        won = set(await self._lock_entries([(cell, part) for part in parts], token))
        return [p for p in parts if (cell, p) in won], [p for p in parts if (cell, p) not in won]

    async def _lock_entries(self, entries: list[tuple[Cell, Part]], token: str) -> list[tuple[Cell, Part]]:
        """The entries whose refresh lock we won (all of them when there is no one to share with)."""
        if self.waiter is None:
            return entries
        expiry = clock.real_ms(self.lock_seconds * 1000)

        def build(pipe: AnyPipeline) -> None:
            for cell, part in entries:
                pipe.set(refresh_lock_key(entry_key(part, cell)), token, nx=True, px=expiry)

        try:
            won = await self.store.redis.pipeline(build)
        except CacheError:
            return entries  # no one to share with: refresh it all here
        return [entry for entry, ok in zip(entries, won) if ok is True]

    async def _unlock(self, entries: list[tuple[Cell, Part]], token: str) -> None:
        if not entries or self.waiter is None:
            return

        def build(pipe: AnyPipeline) -> None:
            for cell, part in entries:
                self._release.add_to(pipe, [refresh_lock_key(entry_key(part, cell))], [token])

        with contextlib.suppress(CacheError):  # they expire on their own
            await self.store.redis.pipeline(build)

    async def fetch(
        self, requests: Sequence[tuple[Cell, Collection[Part]]], *, prewarm: bool
    ) -> list[dict[Part, Entry]]:
        """One upstream request for every (cell, parts) given (all with the same parts),
        within budget and breaker; store and announce the entries."""
        parts = list(requests[0][1])
        cells = [cell for cell, _ in requests]
        if not self.breaker.allow():
            raise UpstreamSkipped("upstream circuit breaker open", cause="breaker")
        weight = request_weight(len(cells), parts)
        try:
            allowed = await self.budget.spend(weight, prewarm=prewarm)
        except BaseException:
            self.breaker.abandon()  # no call was made: nothing learned about the upstream
            raise
        if not allowed:
            self.breaker.abandon()
            raise UpstreamSkipped("upstream budget spent", cause="budget")
        try:
            models = await self.upstream.fetch(cells, parts)
        except UpstreamError:
            self.healthy = False
            self.breaker.failure()
            raise
        self.healthy = True
        self.breaker.success()
        fetched_at = clock.now_ms()
        results = []
        written: list[Entry] = []
        for cell, by_part in zip(cells, models):
            entries = {}
            for part in parts:
                fresh_until, next_update = self.freshness.times(part, by_part[part], fetched_at)
                entries[part] = Entry.from_model(part, cell, by_part[part], fetched_at, fresh_until, next_update)
            results.append(entries)
            written += entries.values()
        for listener in self.on_fetched:
            listener(written, weight)
        try:
            await self.store.write(written)
        except CacheError:
            log.warning("Redis unavailable: %d entries refreshed for this process only", len(written))
            for local in self.on_local_only:
                local(written)
        return results

    async def renew(self, entries: Sequence[Entry]) -> list[Entry]:
        """Keep unchanged entries fresh without asking the upstream (it cannot have newer)."""
        now = clock.now_ms()
        renewed = [entry.renewed(self.freshness.renewal(entry, now)) for entry in entries]
        with contextlib.suppress(CacheError):
            await self.store.write(renewed, announce=False)
        return renewed


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    # Waiters receive the error through their futures; this only keeps asyncio
    # from logging it again as "never retrieved" when every waiter has left.
    if not future.cancelled():
        future.exception()
