"""The pre-warmer: keeps what users will ask for fresh, within the upstream budget.

Exactly one instance runs it at a time (a lease in Redis, renewed by its
holder, while a cycle runs too, released on shutdown, taken over within one
lease period when the holder dies), one cycle per period. Cycles fetch just
after each period boundary; with the default period that is just after
Open-Meteo's 15-minute step flips, before the entries it replaces lapse. A
cycle ranks and reads its candidates a moment before (a real second at most),
so that only the judging and the fetches stand between the new step and the
kept cells: until they land, the kept cells serve the previous step. Each
cycle ranks candidates by value — cells users watch (live subscriptions),
cells users ask for most, then the 100 most populous cities — and takes this
step's share of the day's budget: what is left today, spread evenly over the
steps left (misses spend first, so their part is already gone). A requested
cell's value is the demand it expects over the period a refresh serves (the
next step, or the next hour with a 3600 s target): its decayed count of
requests times the daily rhythm's outlook at the cell's longitude (rhythm.py),
so a cell whose morning starts outranks one with the same count whose night
begins. It publishes the cells that share keeps fresh (a miss on any other
cell serves its older data) and refreshes those of them the upstream has newer
data for, in concurrent multi-location batches that hold the cells' refresh
locks; entries whose data cannot have changed are renewed without an upstream
call. A 429 or 5xx backs off with jitter instead of retrying hot.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from weathernote.cache.refresh import Refresher
from weathernote.cache.service import WeatherService
from weathernote.clock import clock
from weathernote.demand import rhythm
from weathernote.errors import CacheError, RedisKeyError, UpstreamError, UpstreamSkipped
from weathernote.model.cells import Cell, Grid
from weathernote.model.entries import Entry, Part
from weathernote.ops import metrics
from weathernote.redis.gateway import AnyPipeline, AnyRedis, RedisGateway
from weathernote.redis.keys import (
    POPULAR_CELLS,
    PREWARM_KEPT,
    PREWARM_LAST_CYCLE,
    PREWARM_LEADER,
    WATCHED_CELLS,
    entry_key,
    rhythm_key,
    stale_key,
    watched_member,
)
from weathernote.upstream import request_weight
from weathernote.upstream.pace import STEP_SECONDS, newer_data_from_ms, observed_step_ms

log = logging.getLogger(__name__)

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_WATCHED_VALUE = 1e9  # live subscribers outrank any request count
# A city nobody asked for yet ranks below any cell someone asked for: a prior,
# spent only from what the cycle's allowance leaves over.
_CITY_VALUE = 0.01
# How long after a period boundary a cycle fetches: the upstream's step has flipped
# (clocks agree within this), and the entries it replaces are still fresh.
_CYCLE_OFFSET_MS = 1000
# How long before its boundary a cycle ranks and reads (real time: that work takes tens of milliseconds).
_PLAN_LEAD_REAL_MS = 1000


def top_cities(grid: Grid) -> list[Cell]:
    with resources.files("weathernote").joinpath("data/cities.csv").open() as handle:
        return [grid.cell(float(row["lat"]), float(row["lon"])) for row in csv.DictReader(handle)]


@dataclass(slots=True)
class CycleReport:
    candidates: int = 0
    due: int = 0
    renewed: int = 0
    refreshed: int = 0
    requests: int = 0
    weight: float = 0.0
    stopped_by: str | None = None  # "budget", "allowance", "upstream"
    rhythm_hours: int = 0  # local hours the daily rhythm knows
    skipped: list[str] = field(default_factory=list)


class Lease:
    """A leader lease in Redis: SET NX with expiry, renewed and released only by its holder."""

    def __init__(self, redis: RedisGateway, seconds: float) -> None:
        self.redis = redis
        self.seconds = seconds
        self.token = secrets.token_hex(12)
        self.held = False
        self._renew = redis.script(_RENEW)
        self._release = redis.script(_RELEASE)

    async def acquire_or_renew(self) -> bool:
        expiry = clock.real_ms(self.seconds * 1000)
        try:
            if self.held and await self._renew([PREWARM_LEADER], [self.token, expiry]):
                return True
            self.held = bool(
                await self.redis.call(lambda client: client.set(PREWARM_LEADER, self.token, nx=True, px=expiry))
            )
        except RedisKeyError:
            # not a lease (a foreign key of another type): nobody holds it, so clear it
            metrics.REDIS_KEY_ERRORS.labels("lease").inc()
            with contextlib.suppress(CacheError):
                await self.redis.call(lambda client: client.delete(PREWARM_LEADER))
            self.held = False
        except CacheError:
            self.held = False
        return self.held

    async def release(self) -> None:
        if self.held:
            with contextlib.suppress(CacheError):
                await self._release([PREWARM_LEADER], [self.token])
            self.held = False


class Prewarmer:
    """Keeps the most valuable cells fresh, one cycle per period, on one instance at a time."""

    def __init__(
        self,
        redis: RedisGateway,
        service: WeatherService,
        grid: Grid,
        *,
        interval_seconds: float,
        batch_size: int = 100,
        max_candidates: int = 2000,
        lease_seconds: float | None = None,
        decay: float = 0.8,
    ) -> None:
        self.redis = redis
        self.service = service
        self.refresher: Refresher = service.refresher
        self.grid = grid
        self.interval_ms = int(interval_seconds * 1000)
        self.offset_ms = min(_CYCLE_OFFSET_MS, self.interval_ms // 10)
        self.batch_size = batch_size
        self.max_candidates = max_candidates
        self.decay = decay
        self.lease = Lease(redis, lease_seconds or max(3.0, min(interval_seconds, 60.0)))
        # within a third of the lease: the lease, renewed before the cycle, outlasts the wait
        self.lead_ms = int(min(_PLAN_LEAD_REAL_MS * clock.speed, self.lease.seconds * 1000 / 3, self.interval_ms / 10))
        self.cities = top_cities(grid)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="prewarmer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.lease.release()

    async def _run_forever(self) -> None:
        while True:
            try:
                if await self.lease.acquire_or_renew() and await self._cycle_due():
                    await self._cycle_holding_lease()
            except CacheError as exc:
                log.warning("pre-warm cycle skipped: Redis unavailable (%s)", exc)
                metrics.PREWARM_CYCLES.labels("redis").inc()
            except Exception:  # a failed cycle must not end the pre-warmer
                log.exception("pre-warm cycle failed")
                metrics.PREWARM_CYCLES.labels("error").inc()
            next_plan = self._slot(clock.now_ms() + self.lead_ms) + self.interval_ms - self.lead_ms
            await clock.sleep(min(self.lease.seconds / 3, max(0.001, (next_plan - clock.now_ms()) / 1000)))

    async def _cycle_holding_lease(self) -> None:
        """This period's cycle, renewing the lease while it runs.

        A cycle can outlast the lease (a slow upstream, thousands of cells on a fast
        clock); were the lease to lapse, another instance would run the same period
        again and spend a second share of the day on it.
        """
        cycle = asyncio.create_task(self.cycle(), name="prewarm-cycle")
        try:
            while not (await asyncio.wait({cycle}, timeout=clock.real_seconds(self.lease.seconds / 3)))[0]:
                await self.lease.acquire_or_renew()
        finally:
            if not cycle.done():  # we are being stopped: so is the cycle, before the lease is released
                cycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
        cycle.result()  # its failure is the loop's to log and count

    def _slot(self, now_ms: int) -> int:
        """When the current period's cycle is due: just after the period's boundary."""
        return (now_ms - self.offset_ms) // self.interval_ms * self.interval_ms + self.offset_ms

    async def _cycle_due(self) -> bool:
        """Has nobody run the cycle of the period about to start (or started)?"""
        [last] = await self.redis.get_many([PREWARM_LAST_CYCLE])
        try:
            return last is None or int(last) < self._slot(clock.now_ms() + self.lead_ms)
        except ValueError:
            return True  # unreadable: as if no cycle had run

    async def cycle(self) -> CycleReport:
        """One pass: rank and read (ahead of the period's boundary), then at the boundary take
        this step's share, publish what it keeps, refresh what is due.

        Only a cycle that completes counts as this period's: one stopped by the upstream
        or Redis runs again at the next try (within a third of the lease), not a period later.
        """
        now = clock.now_ms()
        slot = self._slot(now + self.lead_ms)  # the period this cycle serves
        report = CycleReport()
        candidates = await self._candidates(report, max(now, slot) / 1000)  # ranked for when it fetches
        report.candidates = len(candidates)
        entries = await self._read(candidates, report)
        # Until the boundary the upstream has nothing newer; entries written meanwhile hold the old step.
        if (wait := slot - clock.now_ms()) > 0:
            await clock.sleep(wait / 1000)
        allowance = await self._allowance()
        kept = await self._publish_kept(candidates, allowance)
        due, early = self._due(candidates, entries, kept)
        if renew := self._to_renew(candidates, entries):
            await self.refresher.renew(renew)
            report.renewed = len(renew)
        target_steps = self.refresher.freshness.target_steps
        if target_steps > 1:
            # After a cold start the kept cells were all fetched in the same hour and would fall
            # due together, more than one cycle affords: a cycle with fewer due than an even share
            # of the kept set refreshes the oldest early, so refreshes spread over the target.
            current = sum(1 for part, _ in due if part is Part.CURRENT)
            due += early[: max(0, math.ceil(kept / target_steps) - current)]
        report.due = len(due)
        planned: list[tuple[list[Part], list[Cell]]] = []
        for parts, cells in self._batches(due):
            # the most valuable come first: when the allowance runs short, the tail waits
            affordable = int(allowance / request_weight(1, parts) + 1e-9)
            if affordable < len(cells):
                report.stopped_by = "allowance"
                cells = cells[:affordable]
            if cells:
                planned.append((parts, cells))
                allowance -= request_weight(len(cells), parts)
            if report.stopped_by:
                break
        # concurrently: the last batch lands as soon as the first, before its entries lapse
        outcomes = await asyncio.gather(
            *(self._fetch_with_backoff(cells, parts) for parts, cells in planned), return_exceptions=True
        )
        for (parts, _), outcome in zip(planned, outcomes):
            if isinstance(outcome, UpstreamSkipped) and outcome.cause == "budget":
                report.stopped_by = "budget"
            elif isinstance(outcome, UpstreamError | UpstreamSkipped | CacheError):
                report.stopped_by = "upstream" if not isinstance(outcome, CacheError) else "redis"
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome:
                report.requests += 1
                report.weight += request_weight(len(outcome), parts)
                report.refreshed += len(outcome) * len(parts)
        metrics.PREWARM_CELLS.inc(report.refreshed)
        metrics.PREWARM_LANDED.observe((clock.now_ms() - slot + self.offset_ms) / 1000)
        metrics.PREWARM_CYCLES.labels("ok" if report.stopped_by is None else report.stopped_by).inc()
        if report.stopped_by not in ("upstream", "redis") and not report.skipped:
            await self._mark_done(slot)
        await self._decay()
        log.info("pre-warm cycle", extra={"report": asdict(report)})
        return report

    async def _publish_kept(self, candidates: list[tuple[Part, Cell, float]], allowance: float) -> int:
        """The cells this step's share keeps within the freshness target, most valuable first:
        how many of the candidates (their head) it keeps.

        Refreshing each once every `target_steps` steps, the share keeps that many
        times the cells it refreshes now. A miss on any other cell that has data serves
        that data rather than spend what keeps the most requested cells fresh.
        """
        room = allowance * self.refresher.freshness.target_steps
        kept: list[str] = []
        for part, cell, _ in candidates:
            room -= request_weight(1, [part])
            if room < -1e-9:  # weights are tenths: forgive the float rounding
                break
            kept.append(watched_member(part, cell))

        def build(pipe: AnyPipeline) -> None:
            pipe.delete(PREWARM_KEPT)
            # "" keeps the key when nothing is kept: the set exists once a cycle has judged
            pipe.sadd(PREWARM_KEPT, "", *kept)
            pipe.pexpire(PREWARM_KEPT, clock.real_ms(self.interval_ms * 3))

        with contextlib.suppress(CacheError):
            await self.redis.pipeline(build, transaction=True)
        return len(kept)

    async def _mark_done(self, slot_ms: int) -> None:
        """The cycle of the period starting at `slot_ms` is done: a new leader waits for the next period."""
        expiry = clock.real_ms(self.interval_ms * 2)
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.set(PREWARM_LAST_CYCLE, slot_ms, px=expiry))

    async def _candidates(self, report: CycleReport, at: float) -> list[tuple[Part, Cell, float]]:
        """(part, cell, value) for the period starting at `at`, most valuable first, each once."""
        values: dict[tuple[Part, str], float] = {}
        cells: dict[str, Cell] = {}

        def add(part: Part, cell: Cell, value: float) -> None:
            cells[cell.label] = cell
            values[(part, cell.label)] = values.get((part, cell.label), 0.0) + value

        watched = await self._repairing(
            WATCHED_CELLS, lambda client: client.zrangebyscore(WATCHED_CELLS, time.time(), "+inf")
        )
        for member in _parse_members(watched, self.grid):
            add(*member, _WATCHED_VALUE)
        popular = await self._repairing(
            POPULAR_CELLS, lambda client: client.zrevrange(POPULAR_CELLS, 0, self.max_candidates - 1, withscores=True)
        )
        shape = await self._rhythm(at)
        report.rhythm_hours = shape.known
        ahead = self.refresher.freshness.target_steps * STEP_SECONDS  # what a refresh now serves
        period = self.interval_ms / 1000
        outlooks: dict[float, float] = {}  # per half degree of longitude (two minutes of solar time)
        for (part, cell), score in zip(_parse_members((m for m, _ in popular), self.grid), (s for _, s in popular)):
            meridian = round(cell.lon * 2) / 2
            if meridian not in outlooks:
                outlooks[meridian] = shape.outlook(meridian, at, ahead, period, self.decay)
            add(part, cell, float(score) * outlooks[meridian])
        for rank, cell in enumerate(self.cities):
            add(Part.CURRENT, cell, _CITY_VALUE / (1 + rank / 100))
        ranked = sorted(values.items(), key=lambda item: -item[1])[: self.max_candidates]
        return [(part, cells[label], value) for (part, label), value in ranked]

    async def _read(self, candidates: list[tuple[Part, Cell, float]], report: CycleReport) -> list[Entry | None]:
        """The candidates' entries, judged by their last good copies: an entry lapses at its step's
        end, yet with a target of an hour its values stay within it for three steps more.

        An undecodable one reads as None (due); Redis unavailable reads every one as unknown:
        the cycle is skipped rather than refetch cells that may be fresh.
        """
        if not candidates:
            return []
        store = self.service.store
        key = stale_key if store.stale_ms else entry_key
        try:
            raws = await store.read([key(part, cell) for part, cell, _ in candidates])
        except CacheError:
            report.skipped.append("redis unavailable")
            return []
        return [
            None if raw is None else self.service.checked(part, cell, raw, stale=store.stale_ms > 0)
            for (part, cell, _), raw in zip(candidates, raws)
        ]

    def _due(
        self, candidates: list[tuple[Part, Cell, float]], entries: list[Entry | None], kept: int
    ) -> tuple[list[tuple[Part, Cell]], list[tuple[Part, Cell]]]:
        """Candidates to fetch, in value order, and the kept cells' current values that could be
        refreshed early, oldest first.

        Current values are due once they fall out of the freshness target (with the
        default, as soon as the upstream has a newer step); forecasts once a newer
        model run can have landed.
        """
        now = clock.now_ms()
        step_start = now // (STEP_SECONDS * 1000) * STEP_SECONDS * 1000
        target_ms = self.refresher.freshness.target_steps * STEP_SECONDS * 1000
        due: list[tuple[Part, Cell]] = []
        early: list[tuple[int, int, Part, Cell]] = []  # (observed step, value rank, ...)
        for rank, ((part, cell, _), entry) in enumerate(zip(candidates, entries)):
            if entry is None:
                due.append((part, cell))
            elif part is Part.CURRENT:
                observed = observed_step_ms(entry.next_update_ms)
                if observed + target_ms <= step_start:
                    due.append((part, cell))
                elif rank < kept and observed < step_start:
                    early.append((observed, rank, part, cell))
            elif newer_data_from_ms(entry.next_update_ms) <= now:
                due.append((part, cell))
        return due, [(part, cell) for _, _, part, cell in sorted(early, key=lambda item: item[:2])]

    def _to_renew(self, candidates: list[tuple[Part, Cell, float]], entries: list[Entry | None]) -> list[Entry]:
        """Entries that would lapse before the next cycle, yet cannot have changed."""
        now = clock.now_ms()
        horizon = now + self.interval_ms
        return [
            entry
            for entry in entries
            if entry is not None and newer_data_from_ms(entry.next_update_ms) > now and entry.fresh_until_ms < horizon
        ]

    def _batches(self, due: list[tuple[Part, Cell]]) -> Iterable[tuple[list[Part], list[Cell]]]:
        """Multi-location batches by part set, most valuable cells first.

        A cell due for both forecast parts fetches them together (cheaper than apart).
        """
        by_cell: dict[str, set[Part]] = {}
        order: list[Cell] = []
        for part, cell in due:
            if cell.label not in by_cell:
                by_cell[cell.label] = set()
                order.append(cell)
            by_cell[cell.label].add(part)
        groups: dict[tuple[Part, ...], list[Cell]] = {}
        for cell in order:
            parts = by_cell[cell.label]
            if Part.CURRENT in parts:
                groups.setdefault((Part.CURRENT,), []).append(cell)
            forecast_parts = tuple(p for p in (Part.DAILY, Part.HOURLY) if p in parts)
            if forecast_parts:
                groups.setdefault(forecast_parts, []).append(cell)
        for group, cells in groups.items():
            for start in range(0, len(cells), self.batch_size):
                yield list(group), cells[start : start + self.batch_size]

    async def _allowance(self) -> float:
        """This period's share of the day: what the pre-warmer may still spend today, spread
        evenly over the periods left, but never more than the shorter windows have now."""
        now = clock.now()
        periods_left = max(1, math.ceil((86400 - now % 86400) * 1000 / self.interval_ms))
        budget = self.refresher.budget
        day_left = budget.limits.of_prewarm("day") - await budget.used("day")
        return max(0.0, min(day_left / periods_left, await budget.remaining(prewarm=True)))

    async def _fetch_with_backoff(self, cells: list[Cell], parts: list[Part]) -> list[Cell]:
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: (
                    isinstance(exc, UpstreamError) and exc.cause in ("rate_limited", "status", "timeout", "transport")
                )
            ),
            wait=wait_exponential_jitter(initial=1, max=60),
            stop=stop_after_attempt(3),
            sleep=clock.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.refresher.refresh_batch(cells, parts)
        raise AssertionError("unreachable: tenacity returns or reraises")

    async def _decay(self) -> None:
        """Old popularity fades: every cycle multiplies the counts, and the long tail is cut."""

        def build(pipe: AnyPipeline) -> None:
            pipe.zunionstore(POPULAR_CELLS, {POPULAR_CELLS: self.decay})
            pipe.zremrangebyrank(POPULAR_CELLS, 0, -(self.max_candidates * 2) - 1)

        # not a transaction: redis-py's Cluster transactions run ZUNIONSTORE on a loop of their own
        with contextlib.suppress(CacheError):
            await self.redis.pipeline(build)

    async def _rhythm(self, now: float) -> rhythm.Shape:
        """The daily rhythm fitted from the last week's counts; the hour of this cycle's period
        (starting at `now`) marked as watched.

        A rhythm hash holding another type is deleted (and that day counts as unseen).
        """
        days = [rhythm_key(rhythm.day(now - age * 86400)) for age in range(rhythm.DAYS)]
        watched = min(self.interval_ms, 3_600_000) / 3_600_000  # of an hour, up to this cycle's next

        def build(pipe: AnyPipeline) -> None:
            pipe.hincrbyfloat(days[0], rhythm.seen_field(rhythm.utc_hour(now)), watched)
            pipe.pexpire(days[0], clock.real_ms((rhythm.DAYS + 1) * 86400 * 1000))
            for key in days:
                pipe.hgetall(key)

        try:
            replies = await self.redis.pipeline(build)
        except CacheError:
            return rhythm.Shape()
        read: list[dict[str, float]] = []
        for key, reply in zip(days, replies[2:]):
            if isinstance(reply, RedisKeyError):
                metrics.REDIS_KEY_ERRORS.labels("prewarm").inc()
                log.warning("%s is not a hash (%s): deleted", key, reply)
                await self._delete(key)
                read.append({})
                continue
            read.append(_numbers(reply))
        return rhythm.fit(read)

    async def _repairing(self, key: str, read: Callable[[AnyRedis], Awaitable[list[Any]]]) -> list[Any]:
        """`read` of a sorted set of ours; one holding another type is deleted and reads as empty."""
        try:
            return await self.redis.call(read)
        except RedisKeyError as exc:
            metrics.REDIS_KEY_ERRORS.labels("prewarm").inc()
            log.warning("%s is not a sorted set (%s): deleted", key, exc)
            await self._delete(key)
            return []

    async def _delete(self, key: str) -> None:
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.delete(key))


def _numbers(fields: dict[Any, Any]) -> dict[str, float]:
    """A hash's fields as text and numbers; an unreadable value is skipped."""
    parsed: dict[str, float] = {}
    for name, value in fields.items():
        with contextlib.suppress(ValueError, TypeError):
            parsed[name.decode() if isinstance(name, bytes) else str(name)] = float(value)
    return parsed


def _parse_members(members: Iterable[bytes | str], grid: Grid) -> Iterable[tuple[Part, Cell]]:
    for member in members:
        text = member.decode() if isinstance(member, bytes) else member
        try:
            part, label = text.split("|", 1)
            yield Part(part), grid.parse(label)
        except ValueError:
            continue  # a member from another version: ignore
