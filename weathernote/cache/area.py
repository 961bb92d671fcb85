"""The current weather of many cells at once (a map's box): hits in one read, misses in one request.

What is fresh in Redis, or stands in by the budget's choice, answers from one read of
every cell's entry (one round trip on a single server; on a Cluster, where the cells
live in different slots, the gateway groups them by slot). The other cells go through
what a single miss goes through, together: an entry whose data cannot have changed is
renewed, older data within the freshness target or kept back by the spend policy
stands in, and the rest are refreshed once across instances: each joins a refresh of
its cell under way in this process (the Refresher's flights) or on another instance
(its refresh lock: the cell's announcement is awaited), and the cells nobody is
refreshing go to the upstream in one multi-location request, drawn from the reader's
share of the budget by its weight. Past that share, the largest half (quarter, …) of
them that fits is fetched, and the rest answer what is cached or ShareSpent. Each
location of the answer is validated on its own: a flawed one is not cached, and only
its cell answers stale or UpstreamUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Sequence
from typing import Any

from weathernote.cache.refresh import ShareRefused
from weathernote.cache.service import Reading, WeatherService
from weathernote.errors import (
    CacheError,
    ShareSpent,
    SkipCause,
    UpstreamError,
    UpstreamFailed,
    UpstreamSkipped,
    UpstreamUnavailable,
)
from weathernote.model import Cell, Entry, Part
from weathernote.ops import metrics, requestlog
from weathernote.upstream import Payer, request_weight

PART = Part.CURRENT
Outcome = Entry | UpstreamFailed | UpstreamSkipped


async def read_area(
    service: WeatherService, cells: Sequence[Cell], payer: Payer | None
) -> list[Reading | UpstreamError]:
    """Each cell's current-weather reading, in the order given, or its failure (ShareSpent when the
    payer's share kept it from being fetched, UpstreamUnavailable otherwise) when nothing is cached."""
    return await _AreaRead(service, payer).read(cells)


class _AreaRead:
    """One area read: the service's parts, and who pays for the misses."""

    def __init__(self, service: WeatherService, payer: Payer | None) -> None:
        self.service = service
        self.refresher = service.refresher
        self.payer = payer

    async def read(self, cells: Sequence[Cell]) -> list[Reading | UpstreamError]:
        service = self.service
        now = service.clock.now_ms()
        answers: dict[str, Reading | UpstreamError] = {}
        try:
            raws: Sequence[bytes | None] = await service.store.read_many([(PART, cell) for cell in cells])
        except CacheError:
            # Redis is down: this process's latest entries answer while fresh (as a single read does)
            raws = [None] * len(cells)
            for cell in cells:
                known = service.memo.latest(PART, cell)
                if known is not None and known.is_fresh(now):
                    answers[cell.label] = Reading(known, cached=True, stale=False)
        for cell, raw in zip(cells, raws):
            entry = service.memo.checked(PART, cell, raw) if cell.label not in answers else None
            if entry is not None and entry.is_fresh(now):
                answers[cell.label] = Reading(entry, cached=True, stale=False)
                service.maybe_refresh_early(entry, now)
        for cell in cells:
            service.requested.read(PART, cell)
        metrics.CACHE_HITS.labels(PART.value).inc(len(answers))
        for cell in cells:
            standing = service.memo.standing(PART, cell, now) if cell.label not in answers else None
            if standing is not None:
                metrics.STALE_SERVED.labels(PART.value, standing.cause).inc()
                answers[cell.label] = Reading(standing.entry, cached=True, stale=True)
        missing = [cell for cell in cells if cell.label not in answers]
        if missing:
            metrics.CACHE_MISSES.labels(PART.value).inc(len(missing))
            answers.update(await self._refresh_renew_or_stale(missing))
        outcome = "hit"
        if any(isinstance(a, UpstreamError) or a.stale for a in answers.values()):
            outcome = "stale"
        elif missing:
            outcome = "miss"
        if cells:
            requestlog.note_read(f"{cells[0].label}..{cells[-1].label}", outcome)
        return [answers[cell.label] for cell in cells]

    async def _refresh_renew_or_stale(self, cells: list[Cell]) -> dict[str, Reading | UpstreamError]:
        """The batch counterpart of WeatherService's: renew, stand in, or refresh the cells together."""
        service = self.service
        try:
            raws: Sequence[bytes | None] = await service.store.read_many([(PART, cell) for cell in cells], stale=True)
        except CacheError:
            raws = [None] * len(cells)
        older = {
            cell.label: entry
            for cell, raw in zip(cells, raws)
            if (entry := service.memo.checked(PART, cell, raw, stale=True)) is not None
        }
        now = service.clock.now_ms()
        answers: dict[str, Reading | UpstreamError] = {}
        unchanged = [entry for entry in older.values() if now < entry.next_update_ms]
        # past its TTL but the upstream cannot have newer data yet: keep it, ask nobody
        for entry in await self.refresher.renew(unchanged) if unchanged else ():
            answers[entry.cell.label] = Reading(service.memo.remember(entry), cached=True, stale=False)
        for label, entry in older.items():
            if label not in answers and service.freshness.within_target(entry, now):
                answers[label] = Reading(service.memo.remember(entry), cached=True, stale=False)
        with_data = [cell for cell in cells if cell.label in older and cell.label not in answers]
        objections = await asyncio.gather(
            *(service.spend.objection(cell, [PART], {PART: older[cell.label]}) for cell in with_data)
        )
        for cell, objection in zip(with_data, objections):
            if objection is not None:
                answers[cell.label] = self._stale(older[cell.label], objection)
                service.spend.stand_in([older[cell.label]], objection)
        # cells without any data first: when the share has room for only some, they are the ones fetched
        to_fetch = sorted((cell for cell in cells if cell.label not in answers), key=lambda cell: cell.label in older)
        if not to_fetch:
            return answers
        fetched = await self._refresh_waiting_for_budget(to_fetch, {c.label for c in to_fetch} - older.keys())
        for cell in to_fetch:
            result = fetched[cell.label]
            if isinstance(result, Entry):
                answers[cell.label] = Reading(result, cached=False, stale=False)
            elif cell.label in older:
                answers[cell.label] = self._stale(older[cell.label], result.cause)
            elif isinstance(result, UpstreamSkipped) and result.cause is SkipCause.SHARE:
                answers[cell.label] = ShareSpent(result.reason, result.retry_after or 60.0)
            else:
                answers[cell.label] = UpstreamUnavailable(result.reason)
        return answers

    @staticmethod
    def _stale(entry: Entry, cause: str) -> Reading:
        metrics.STALE_SERVED.labels(PART.value, cause).inc()
        return Reading(entry, cached=True, stale=True)

    async def _refresh_waiting_for_budget(self, cells: list[Cell], empty: set[str]) -> dict[str, Outcome]:
        """Refresh `cells`; those of them with nothing to serve (`empty`) wait for room in the budget
        rather than fail, up to the service's `budget_wait_seconds` (as a single miss does)."""
        service = self.service
        results = await self._refresh(cells)
        waited = 0.0
        while True:
            blocked = [
                cell
                for cell in cells
                if cell.label in empty
                and isinstance(skipped := results[cell.label], UpstreamSkipped)
                and skipped.cause is SkipCause.BUDGET
            ]
            if not blocked:
                return results
            wait = await service.budget.seconds_until_room(request_weight(len(blocked), [PART]))
            if waited + wait > service.budget_wait_seconds:
                return results
            wait += random.uniform(0, 1)  # the misses that waited for one window do not all spend at once
            metrics.BUDGET_WAITS.inc()
            await service.clock.sleep(wait)
            waited += wait
            results.update(await self._refresh(blocked))

    async def _refresh(self, cells: list[Cell], again: bool = True) -> dict[str, Outcome]:
        """Fresh entries for `cells`, each joining a refresh under way in this process (else one
        task refreshes those nobody here is refreshing, however many readers leave meanwhile)."""
        futures, opened = self.refresher.flights.open(cells, PART)
        if opened:
            task = asyncio.create_task(self._resolve(opened))
            task.add_done_callback(_retrieve)
        results: dict[str, Outcome] = {}
        for label, future in futures.items():
            try:
                # shield: a reader's cancellation must not cancel the shared future
                results[label] = await asyncio.shield(future)
            except (UpstreamFailed, UpstreamSkipped) as exc:
                results[label] = exc
        # a refresh joined whose payer had spent its share: ours may not have, so once more on our own
        others = [
            cell
            for cell in cells
            if isinstance(refused := results[cell.label], ShareRefused) and refused.payer != self.payer
        ]
        if others and again:
            results.update(await self._refresh(others, again=False))
        return results

    async def _resolve(self, cells: list[Cell]) -> None:
        results: dict[str, Entry | BaseException] = {}
        try:
            results.update(await self._across_instances(cells))
        except BaseException as exc:
            results = dict.fromkeys((cell.label for cell in cells), exc)
            raise
        finally:
            self.refresher.flights.settle(cells, PART, results)

    async def _across_instances(self, cells: list[Cell]) -> dict[str, Outcome]:
        """The cells whose refresh lock this instance wins are fetched in one request; the others'
        announcements are awaited (fetched here after all if their holder fails or dies)."""
        refresher = self.refresher
        token = secrets.token_hex(8)
        won = set(await refresher.lock([(cell, PART) for cell in cells], token))
        mine = [cell for cell in cells if (cell, PART) in won]
        theirs = [cell for cell in cells if (cell, PART) not in won]
        try:
            fetched, waited = await asyncio.gather(
                self._fetch(mine),
                asyncio.gather(*(refresher.rendezvous.wait_for(cell, PART, refresher.lock_seconds) for cell in theirs)),
            )
            results = dict(fetched)
            lost = []
            for cell, entry in zip(theirs, waited):
                if entry is not None:
                    results[cell.label] = entry
                else:
                    lost.append(cell)  # its holder died or failed: our turn
            results.update(await self._fetch(lost))
        finally:
            await refresher.unlock([(cell, PART) for cell in cells if (cell, PART) in won], token)
        return results

    async def _fetch(self, cells: list[Cell]) -> dict[str, Outcome]:
        """One upstream request for as many of `cells` as the payer's share has room for: all of
        them, else the largest half, quarter, … (the others get the share's refusal)."""
        count = len(cells)
        refused: ShareRefused | None = None
        while count:
            try:
                answers = await self.refresher.fetch_each(cells[:count], [PART], payer=self.payer)
            except ShareRefused as exc:
                refused, count = exc, count // 2
                continue
            except (UpstreamFailed, UpstreamSkipped) as exc:
                return {cell.label: exc for cell in cells}
            results: dict[str, Outcome] = {
                cell.label: answer if isinstance(answer, UpstreamFailed) else answer[PART]
                for cell, answer in zip(cells, answers)
            }
            break
        else:
            results = {}
        if refused is not None:
            results.update({cell.label: refused for cell in cells[count:]})
        return results


def _retrieve(task: asyncio.Task[Any]) -> None:
    # the readers receive the error through their flights; this keeps asyncio from logging it again
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
