"""Refreshing entries from the upstream: once per cell, within budget and breaker.

One refresh of a cell's parts costs one upstream request however many ask at
once, on one instance (a shared future) or many (a short lock in Redis per
entry; the others wait for the refresh's announcement through the
`Rendezvous`, and take over if its holder dies). Every call is weighed and
drawn from the shared budget; a circuit breaker stops hammering a failing
Open-Meteo.

Traced, each upstream request is a `refresh` span: the budget's draw, the
upstream call and the write (its announcement carries the span's context, for
the deliveries on every instance to link to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from weathernote.breaker import CircuitBreaker
from weathernote.cache.freshness import Freshness
from weathernote.cache.memo import EntryMemo
from weathernote.cache.store import EntryStore
from weathernote.clock import Clock
from weathernote.demand import Usage
from weathernote.errors import CacheError, SkipCause, UpstreamFailed, UpstreamSkipped
from weathernote.model import Cell, Entry, Model, Part
from weathernote.ops import tracing
from weathernote.ops.tracing import Tracer
from weathernote.redis import AnyPipeline, RedisGateway
from weathernote.upstream import OpenMeteoClient, Payer, UpstreamBudget, request_weight

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class ShareRefused(UpstreamSkipped):
    """A refresh refused because its payer spent its share: the payer's problem, not its flight's joiners'."""

    def __init__(self, reason: str, retry_after: float | None, payer: Payer | None) -> None:
        super().__init__(reason, SkipCause.SHARE, retry_after)
        self.payer = payer


class Rendezvous(Protocol):
    """Where refreshes meet their readers on this instance (live updates implement it)."""

    async def wait_for(self, cell: Cell, part: Part, timeout: float) -> Entry | None:
        """The entry another instance is refreshing, once it announces it; None on timeout."""

    def announce_locally(self, entries: list[Entry]) -> None:
        """Entries Redis could not announce, handed to this instance's subscribers."""


class Flights:
    """This process's refreshes under way, by (cell, part): a reader of one that is under way joins it."""

    def __init__(self) -> None:
        self._futures: dict[tuple[str, Part], asyncio.Future[Entry]] = {}

    def open(self, cells: Sequence[Cell], part: Part) -> tuple[dict[str, asyncio.Future[Entry]], list[Cell]]:
        """Each cell's refresh of `part`: joined where one is under way, else opened (the cells
        returned, whose refresh the caller must `settle`)."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Entry]] = {}
        opened = []
        for cell in cells:
            flight = self._futures.get((cell.label, part))
            if flight is None:
                flight = self._futures[(cell.label, part)] = loop.create_future()
                flight.add_done_callback(_retrieve_exception)
                opened.append(cell)
            futures[cell.label] = flight
        return futures, opened

    def settle(self, cells: Sequence[Cell], part: Part, results: Mapping[str, Entry | BaseException]) -> None:
        """The refreshes `open` opened, done: each one's joiners get its entry or its error."""
        for cell in cells:
            future = self._futures.pop((cell.label, part))
            result = results.get(cell.label)
            if future.done():
                continue
            if isinstance(result, Entry):
                future.set_result(result)
            else:
                future.set_exception(result or UpstreamSkipped("refresh abandoned", SkipCause.BREAKER))


class Refresher:
    """Fetches cells from the upstream once across instances, then stores and announces them."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        store: EntryStore,
        memo: EntryMemo,
        upstream: OpenMeteoClient,
        budget: UpstreamBudget,
        breaker: CircuitBreaker,
        freshness: Freshness,
        rendezvous: Rendezvous,
        usage: Usage,
        clock: Clock,
        lock_seconds: float = 15.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.memo = memo
        self.upstream = upstream
        self.budget = budget
        self.breaker = breaker
        self.freshness = freshness
        self.rendezvous = rendezvous
        self.usage = usage
        self.clock = clock
        self.lock_seconds = lock_seconds
        self.tracer = tracer  # None: tracing is off
        self.healthy: bool | None = None  # outcome of the last upstream call
        self.flights = Flights()
        self._release = redis.script(_RELEASE)

    async def refresh(self, cell: Cell, parts: Collection[Part], payer: Payer | None = None) -> dict[Part, Entry]:
        """Fresh entries for `parts` of `cell`: joins a fetch in flight here or elsewhere.

        A call this refresh makes is drawn from `payer`'s share too. Joining a flight
        whose payer was over its share, a caller tries once more on its own.
        """
        try:
            return await self._join(cell, parts, payer)
        except ShareRefused as exc:
            if exc.payer == payer:
                raise
            return await self._join(cell, parts, payer)

    async def _join(self, cell: Cell, parts: Collection[Part], payer: Payer | None) -> dict[Part, Entry]:
        futures: dict[Part, asyncio.Future[Entry]] = {}
        to_fetch: list[Part] = []
        for part in parts:
            joined, opened = self.flights.open([cell], part)
            futures[part] = joined[cell.label]
            to_fetch += [part] if opened else []
        if to_fetch:
            # A task of its own: a cancelled first caller must not cancel the others' fetch.
            task = asyncio.create_task(self._resolve_flights(cell, to_fetch, payer))
            task.add_done_callback(_retrieve_exception)
        # shield: a waiter's cancellation must not cancel the shared future
        return {part: await asyncio.shield(future) for part, future in futures.items()}

    async def _resolve_flights(self, cell: Cell, parts: list[Part], payer: Payer | None) -> None:
        try:
            entries: Mapping[Part, Entry | BaseException] = await self._refresh_across_instances(cell, parts, payer)
        except BaseException as exc:
            entries = dict.fromkeys(parts, exc)
            raise
        finally:
            for part in parts:
                self.flights.settle([cell], part, {cell.label: entries[part]})

    async def _refresh_across_instances(self, cell: Cell, parts: list[Part], payer: Payer | None) -> dict[Part, Entry]:
        token = secrets.token_hex(8)
        won = set(await self.lock([(cell, part) for part in parts], token))
        mine = [part for part in parts if (cell, part) in won]
        theirs = [part for part in parts if (cell, part) not in won]
        entries: dict[Part, Entry] = {}
        try:
            if theirs:
                waited = await asyncio.gather(
                    *(self.rendezvous.wait_for(cell, part, self.lock_seconds) for part in theirs)
                )
                for part, entry in zip(theirs, waited):
                    if entry is not None:
                        entries[part] = entry
                    else:
                        mine.append(part)  # its holder died or failed: our turn
            if mine:
                [fetched] = await self.fetch([(cell, mine)], prewarm=False, payer=payer)
                entries.update(fetched)
        finally:
            await self.unlock([(cell, part) for cell, part in won], token)
        return entries

    async def refresh_batch(self, cells: Sequence[Cell], parts: Collection[Part]) -> list[Cell]:
        """One pre-warm request for those of `cells` that nobody is refreshing already.

        It holds their refresh locks while it runs: a miss on one of them meanwhile
        waits for its announcement instead of paying for the same data again.
        Returns the cells refreshed.
        """
        token = secrets.token_hex(8)
        won = await self.lock([(cell, part) for cell in cells for part in parts], token)
        held = set(won)
        mine = [cell for cell in cells if all((cell, part) in held for part in parts)]
        fetching = set(mine)
        await self.unlock([entry for entry in won if entry[0] not in fetching], token)
        try:
            if mine:
                await self.fetch([(cell, parts) for cell in mine], prewarm=True)
        finally:
            await self.unlock([entry for entry in won if entry[0] in fetching], token)
        return mine

    async def lock(self, entries: list[tuple[Cell, Part]], token: str) -> list[tuple[Cell, Part]]:
        """The entries whose refresh lock we won (all of them when Redis cannot say)."""
        expiry = self.clock.real_ms(self.lock_seconds * 1000)
        keys = self.redis.keys

        def build(pipe: AnyPipeline) -> None:
            for cell, part in entries:
                pipe.set(keys.refresh_lock(part, cell), token, nx=True, px=expiry)

        try:
            won = await self.redis.pipeline(build)
        except CacheError:
            return entries  # no one to share with: refresh it all here
        return [entry for entry, ok in zip(entries, won) if ok is True]

    async def unlock(self, entries: list[tuple[Cell, Part]], token: str) -> None:
        if not entries:
            return
        keys = self.redis.keys

        def build(pipe: AnyPipeline) -> None:
            for cell, part in entries:
                self._release.add_to(pipe, [keys.refresh_lock(part, cell)], [token])

        with contextlib.suppress(CacheError):  # they expire on their own
            await self.redis.pipeline(build)

    async def fetch(
        self, requests: Sequence[tuple[Cell, Collection[Part]]], *, prewarm: bool, payer: Payer | None = None
    ) -> list[dict[Part, Entry]]:
        """One upstream request for every (cell, parts) given (all with the same parts),
        within budget (and `payer`'s share) and breaker; store and announce the entries."""
        parts = list(requests[0][1])
        cells = [cell for cell, _ in requests]
        with tracing.span(self.tracer, "refresh", _attributes(cells, parts, prewarm)):
            weight = await self._spend(request_weight(len(cells), parts), prewarm, payer)
            try:
                models = await self.upstream.fetch(cells, parts)
            except UpstreamFailed:
                self._failed()
                raise
            return await self._keep(cells, parts, models, weight)

    async def fetch_each(
        self, cells: Sequence[Cell], parts: Collection[Part], *, payer: Payer | None = None
    ) -> list[dict[Part, Entry] | UpstreamFailed]:
        """`fetch` of `parts` for `cells`, location by location: a location the upstream answered
        wrongly is an UpstreamFailed in its place (nothing of it stored), the others are kept."""
        parts = list(parts)
        with tracing.span(self.tracer, "refresh", _attributes(cells, parts, False)):
            weight = await self._spend(request_weight(len(cells), parts), False, payer)
            try:
                answers = await self.upstream.fetch_each(cells, parts)
            except UpstreamFailed:
                self._failed()
                raise
            good = [(cell, answer) for cell, answer in zip(cells, answers) if not isinstance(answer, UpstreamFailed)]
            kept = iter(await self._keep([cell for cell, _ in good], parts, [answer for _, answer in good], weight))
        return [answer if isinstance(answer, UpstreamFailed) else next(kept) for answer in answers]

    async def _spend(self, weight: float, prewarm: bool, payer: Payer | None) -> float:
        """Draw a call's weight from the budget (and `payer`'s share), past the breaker; else UpstreamSkipped."""
        if not self.breaker.allow():
            raise UpstreamSkipped("upstream circuit breaker open", SkipCause.BREAKER)
        try:
            spent = await self.budget.spend(weight, prewarm=prewarm, payer=payer)
        except BaseException:
            self.breaker.abandon()  # no call was made: nothing learned about the upstream
            raise
        if not spent.allowed:
            self.breaker.abandon()
            if spent.scope in ("client", "address"):
                raise ShareRefused(f"the {spent.scope}'s share of the budget is spent", spent.retry_after, payer)
            raise UpstreamSkipped("upstream budget spent", SkipCause.BUDGET, spent.retry_after)
        return weight

    def _failed(self) -> None:
        self.healthy = False
        self.breaker.failure()

    async def _keep(
        self, cells: Sequence[Cell], parts: Sequence[Part], models: Sequence[Mapping[Part, Model]], weight: float
    ) -> list[dict[Part, Entry]]:
        """The upstream answered: entries made of its models, stored and announced."""
        self.healthy = True
        self.breaker.success()
        fetched_at = self.clock.now_ms()
        results = []
        written: list[Entry] = []
        for cell, by_part in zip(cells, models):
            entries = {}
            for part in parts:
                fresh_until, next_update = self.freshness.times(part, by_part[part], fetched_at)
                entries[part] = Entry.from_model(part, cell, by_part[part], fetched_at, fresh_until, next_update)
            results.append(entries)
            written += entries.values()
        self.memo.fetched(written)
        self.usage.upstream(weight)
        try:
            await self.store.write(written)
        except CacheError:
            # the breaker logs the outage once; a line per fetch would flood the log while it lasts
            log.debug("Redis unavailable: %d entries refreshed for this process only", len(written))
            self.rendezvous.announce_locally(written)
        return results

    async def renew(self, entries: Sequence[Entry]) -> list[Entry]:
        """Keep unchanged entries fresh without asking the upstream (it cannot have newer)."""
        now = self.clock.now_ms()
        renewed = [entry.renewed(self.freshness.renewal(entry, now)) for entry in entries]
        with contextlib.suppress(CacheError):
            await self.store.write(renewed, announce=False)
        return renewed


def _attributes(cells: Sequence[Cell], parts: Sequence[Part], prewarm: bool) -> dict[str, Any]:
    """A refresh span's: how many cells (not which: a pre-warm batch holds a hundred), which parts, for whom."""
    return {
        "weathernote.cells": len(cells),
        "weathernote.parts": [part.value for part in parts],
        "weathernote.prewarm": prewarm,
    }


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    # Waiters receive the error through their futures; this only keeps asyncio
    # from logging it again as "never retrieved" when every waiter has left.
    if not future.cancelled():
        future.exception()
