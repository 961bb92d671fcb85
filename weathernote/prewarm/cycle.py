"""The pre-warmer: keeps what users will ask for fresh, within the upstream budget.

Exactly one instance runs it at a time (a lease in Redis, renewed by its
holder, while a cycle runs too, released on shutdown, taken over within one
lease period when the holder dies), one cycle per period. Traced, a cycle is a
span (a trace of its own) with its refreshes under it. Cycles fetch just
after each period boundary; with the default period that is just after
Open-Meteo's 15-minute step flips, before the entries it replaces lapse. A
cycle ranks and reads its candidates a moment before (a real second at most),
so that only the judging and the fetches stand between the new step and the
kept cells: until they land, the kept cells serve the previous step.

A cycle ranks (ranking.py), takes this step's share of the day's budget (what
is left today, spread evenly over the steps left: misses spend first, so their
part is already gone), publishes the cells that share keeps fresh (a miss on
any other cell serves its older data), renews what cannot have changed and
refreshes what is due (due.py), in concurrent multi-location batches that
hold the cells' refresh locks. A 429 or 5xx backs off with jitter instead of
retrying hot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, field

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from weathernote.cache import EntryMemo, EntryStore, Freshness, Refresher
from weathernote.clock import Clock
from weathernote.demand import Demand
from weathernote.errors import CacheError, FailureCause, SkipCause, UpstreamFailed, UpstreamSkipped
from weathernote.model import Cell, Entry, Grid, Part
from weathernote.ops import metrics, tracing
from weathernote.ops.tracing import Tracer
from weathernote.prewarm import due as planning
from weathernote.prewarm.cities import top_cities
from weathernote.prewarm.lease import Lease
from weathernote.prewarm.ranking import Candidate, keep, rank
from weathernote.redis import RedisGateway
from weathernote.redis.keys import PREWARM_LAST_CYCLE
from weathernote.tasks import cancel_and_wait
from weathernote.upstream import STEP_SECONDS, UpstreamBudget, request_weight

log = logging.getLogger(__name__)

# How long after a period boundary a cycle fetches: the upstream's step has flipped
# (clocks agree within this), and the entries it replaces are still fresh.
_CYCLE_OFFSET_MS = 1000
# How long before its boundary a cycle ranks and reads (real time: that work takes tens of milliseconds).
_PLAN_LEAD_REAL_MS = 1000
_RETRIED = frozenset({FailureCause.RATE_LIMITED, FailureCause.STATUS, FailureCause.TIMEOUT, FailureCause.TRANSPORT})


@dataclass(slots=True)
class CycleReport:
    """What one cycle did, logged and printed by `weathernote prewarm --once`."""

    candidates: int = 0
    kept: int = 0
    due: int = 0
    renewed: int = 0
    refreshed: int = 0
    requests: int = 0
    weight: float = 0.0
    stopped_by: str | None = None  # "budget", "allowance", "upstream", "redis"
    rhythm_hours: int = 0  # local hours the daily rhythm knows
    skipped: list[str] = field(default_factory=list)


class Prewarmer:
    """Keeps the most valuable cells fresh, one cycle per period, on one instance at a time."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        store: EntryStore,
        memo: EntryMemo,
        refresher: Refresher,
        budget: UpstreamBudget,
        freshness: Freshness,
        demand: Demand,
        grid: Grid,
        clock: Clock,
        interval_seconds: float,
        batch_size: int = 100,
        max_candidates: int = 2000,
        lease_seconds: float | None = None,
        decay: float = 0.8,
        watched_share: float = 0.5,
        tracer: Tracer | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.memo = memo
        self.refresher = refresher
        self.budget = budget
        self.freshness = freshness
        self.demand = demand
        self.clock = clock
        self.interval_ms = int(interval_seconds * 1000)
        self.offset_ms = min(_CYCLE_OFFSET_MS, self.interval_ms // 10)
        self.batch_size = batch_size
        self.max_candidates = max_candidates
        self.decay = decay
        self.watched_share = watched_share
        self.tracer = tracer  # None: tracing is off
        self.lease = Lease(redis, clock, lease_seconds or max(3.0, min(interval_seconds, 60.0)))
        # within a third of the lease: the lease, renewed before the cycle, outlasts the wait
        self.lead_ms = int(min(_PLAN_LEAD_REAL_MS * clock.speed, self.lease.seconds * 1000 / 3, self.interval_ms / 10))
        self.cities = top_cities(grid)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="prewarmer")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
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
            next_plan = self._slot(self.clock.now_ms() + self.lead_ms) + self.interval_ms - self.lead_ms
            await self.clock.sleep(min(self.lease.seconds / 3, max(0.001, (next_plan - self.clock.now_ms()) / 1000)))

    async def _cycle_holding_lease(self) -> None:
        """This period's cycle, renewing the lease while it runs.

        A cycle can outlast the lease (a slow upstream, thousands of cells on a fast
        clock); were the lease to lapse, another instance would run the same period
        again and spend a second share of the day on it.
        """
        cycle = asyncio.create_task(self.cycle(), name="prewarm-cycle")
        try:
            while not (await asyncio.wait({cycle}, timeout=self.clock.real_seconds(self.lease.seconds / 3)))[0]:
                await self.lease.acquire_or_renew()
        finally:
            # we are being stopped: so is the cycle, before the lease is released
            await cancel_and_wait(cycle)
        cycle.result()  # its failure is the loop's to log and count

    def _slot(self, now_ms: int) -> int:
        """When the current period's cycle is due: just after the period's boundary."""
        return (now_ms - self.offset_ms) // self.interval_ms * self.interval_ms + self.offset_ms

    async def _cycle_due(self) -> bool:
        """Has nobody run the cycle of the period about to start (or started)?"""
        [last] = await self.redis.get_many([PREWARM_LAST_CYCLE])
        try:
            return last is None or int(last) < self._slot(self.clock.now_ms() + self.lead_ms)
        except ValueError:
            return True  # unreadable: as if no cycle had run

    async def cycle(self) -> CycleReport:
        """One pass: rank and read (ahead of the period's boundary), then at the boundary take
        this step's share, publish what it keeps, refresh what is due.

        Only a cycle that completes counts as this period's: one stopped by the upstream
        or Redis runs again at the next try (within a third of the lease), not a period later.
        """
        with tracing.span(self.tracer, "prewarm cycle") as span:
            report = await self._cycle()
            if span is not None:
                span.set_attributes({f"weathernote.prewarm.{name}": value for name, value in _figures(report).items()})
            return report

    async def _cycle(self) -> CycleReport:
        now = self.clock.now_ms()
        slot = self._slot(now + self.lead_ms)  # the period this cycle serves
        report = CycleReport()
        candidates = await self._candidates(report, max(now, slot) / 1000)  # ranked for when it fetches
        report.candidates = len(candidates)
        entries = await self._read(candidates, report)
        # Until the boundary the upstream has nothing newer; entries written meanwhile hold the old step.
        if (wait := slot - self.clock.now_ms()) > 0:
            await self.clock.sleep(wait / 1000)
        allowance = await self._allowance()
        target_steps = self.freshness.target_steps
        # refreshing each once every `target_steps` steps, the share keeps that many times the cells it refreshes now
        ordered, report.kept = keep(candidates, allowance * target_steps, self.watched_share)
        entries = _reordered(entries, candidates, ordered)
        await self.demand.keep([(c.part, c.cell) for c in ordered[: report.kept]], self.interval_ms)
        now = self.clock.now_ms()
        if renew := planning.to_renew(entries, now, self.interval_ms):
            await self.refresher.renew(renew)
            report.renewed = len(renew)
        fetch = planning.spread(
            planning.due(ordered, entries, report.kept, now, self.freshness.target_ms),
            report.kept,
            target_steps,
        )
        report.due = len(fetch)
        planned, short = planning.affordable(planning.batches(fetch, self.batch_size), allowance)
        if short:
            report.stopped_by = "allowance"
        await self._fetch(planned, report)
        metrics.PREWARM_CELLS.inc(report.refreshed)
        metrics.PREWARM_LANDED.observe((self.clock.now_ms() - slot + self.offset_ms) / 1000)
        metrics.PREWARM_CYCLES.labels("ok" if report.stopped_by is None else report.stopped_by).inc()
        if report.stopped_by not in ("upstream", "redis") and not report.skipped:
            await self._mark_done(slot)
        await self.demand.decay(self.decay, keep=self.max_candidates * 2)
        log.info("pre-warm cycle", extra={"report": asdict(report)})
        return report

    async def _fetch(self, planned: list[planning.Batch], report: CycleReport) -> None:
        # concurrently: the last batch lands as soon as the first, before its entries lapse
        outcomes = await asyncio.gather(
            *(self._fetch_with_backoff(cells, parts) for parts, cells in planned), return_exceptions=True
        )
        for (parts, _), outcome in zip(planned, outcomes):
            if isinstance(outcome, UpstreamSkipped) and outcome.cause is SkipCause.BUDGET:
                report.stopped_by = "budget"
            elif isinstance(outcome, UpstreamFailed | UpstreamSkipped):
                report.stopped_by = "upstream"
            elif isinstance(outcome, CacheError):
                report.stopped_by = "redis"
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome:
                report.requests += 1
                report.weight += request_weight(len(outcome), parts)
                report.refreshed += len(outcome) * len(parts)

    async def _mark_done(self, slot_ms: int) -> None:
        """The cycle of the period starting at `slot_ms` is done: a new leader waits for the next period."""
        expiry = self.clock.real_ms(self.interval_ms * 2)
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.set(PREWARM_LAST_CYCLE, slot_ms, px=expiry))

    async def _candidates(self, report: CycleReport, at: float) -> list[Candidate]:
        """The candidates for the period starting at `at`, most valuable first, each once."""
        watchers = await self.demand.watchers()
        popular = await self.demand.popular(self.max_candidates)
        # of an hour, up to this cycle's next: the hour of this cycle's period marked as watched
        shape = await self.demand.rhythm(at, min(self.interval_ms, 3_600_000) / 3_600_000)
        report.rhythm_hours = shape.known
        return rank(
            watchers=watchers,
            popular=popular,
            cities=self.cities,
            shape=shape,
            at=at,
            ahead=self.freshness.target_steps * STEP_SECONDS,  # what a refresh now serves
            period=self.interval_ms / 1000,
            decay=self.decay,
            limit=self.max_candidates,
        )

    async def _read(self, candidates: list[Candidate], report: CycleReport) -> list[Entry | None]:
        """The candidates' entries, judged by their last good copies: an entry lapses at its step's
        end, yet with a target of an hour its values stay within it for three steps more.

        An undecodable one reads as None (due); Redis unavailable reads every one as unknown:
        the cycle is skipped rather than refetch cells that may be fresh.
        """
        if not candidates:
            return []
        stale = self.store.stale_ms > 0
        try:
            raws = await self.store.read_many([(c.part, c.cell) for c in candidates], stale=stale)
        except CacheError:
            report.skipped.append("redis unavailable")
            return []
        return [self.memo.checked(c.part, c.cell, raw, stale=stale) for c, raw in zip(candidates, raws)]

    async def _allowance(self) -> float:
        """This period's share of the day (due.share_of_day), from the budget's windows now."""
        budget = self.budget
        day_left = budget.limits.of_prewarm("day") - await budget.used("day")
        return planning.share_of_day(day_left, await budget.remaining(prewarm=True), self.clock.now(), self.interval_ms)

    async def _fetch_with_backoff(self, cells: list[Cell], parts: list[Part]) -> list[Cell]:
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, UpstreamFailed) and exc.cause in _RETRIED),
            wait=wait_exponential_jitter(initial=1, max=60),
            stop=stop_after_attempt(3),
            sleep=self.clock.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.refresher.refresh_batch(cells, parts)
        raise AssertionError("unreachable: tenacity returns or reraises")


def _figures(report: CycleReport) -> dict[str, int | float | str]:
    """A cycle's report as span attributes (the skipped cells' list left out)."""
    return {name: value for name, value in asdict(report).items() if isinstance(value, int | float | str)}


def _reordered(entries: list[Entry | None], before: list[Candidate], after: list[Candidate]) -> list[Entry | None]:
    """`entries` (read in the order of `before`) in the order of `after`; none when none were read."""
    if not entries:
        return []
    by_candidate = {(c.part, c.cell.label): entry for c, entry in zip(before, entries)}
    return [by_candidate[(c.part, c.cell.label)] for c in after]
