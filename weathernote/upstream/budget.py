"""The upstream budget: Open-Meteo's weighted calls, drawn from windows shared in Redis.

Open-Meteo counts weighted calls per client address (a minute, an hour, a day)
and refuses once a window is spent. Every instance behind one address shares
those windows, so the budget lives in Redis: one atomic script spends a call's
weight from every window, or from none (windows.py: the minute and hour slide,
so they hold in any span of their length). The pre-warmer paces the day itself
and of the minute and hour windows takes only its share, so that a burst of
misses always finds room.

What every user shares, no one client may take: a miss is also drawn from its
client's and its address's own windows, each a configured share of the
budget's. Past its share a client is served what is cached, or told when to
come back; never the others' share.

Nothing is spent uncounted. While the shared windows cannot be read (Redis
down or hung, its breaker open, its topology unknown) each process spends from
a local allowance: its share of each window (the budget divided by the
expected number of instances), shares per client included; what it spent is
added to the shared windows once Redis answers again. A day window lost in
Redis (evicted, deleted, replaced) is put back to what this process last saw
of it, so it never starts over at zero.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from weathernote.clock import Clock
from weathernote.errors import CacheError, RedisKeyError, RedisUnavailable
from weathernote.ops import metrics
from weathernote.redis import RedisGateway
from weathernote.upstream.windows import DAY_MS, SPEND, Kind, LocalWindows, Outcome, Window, outcome

log = logging.getLogger(__name__)

WINDOWS = (("minute", 60), ("hour", 3600), ("day", 86400))
_PREFIX = "{upstream_budget}"  # one hash tag: every window in one Cluster slot, one script spends all
_LOCAL_PAYERS = 10_000  # payers whose local windows are kept during an outage (least recently seen forgotten)


@dataclass(frozen=True, slots=True)
class Limits:
    """The budget's windows, and the pre-warmer's share of them."""

    per_minute: float
    per_hour: float
    per_day: float
    prewarm_share: float = 0.8  # of the minute and hour windows the pre-warmer may spend
    day_reserve: float = 0.005  # of the day kept for misses after the pre-warmer's last step

    def of(self, window: str) -> float:
        return {"minute": self.per_minute, "hour": self.per_hour, "day": self.per_day}[window]

    def of_prewarm(self, window: str) -> float:
        """What the pre-warmer may spend of `window`."""
        if window == "day":
            return self.per_day * (1 - self.day_reserve)
        return self.of(window) * self.prewarm_share


@dataclass(frozen=True, slots=True)
class Shares:
    """The most of each window one client id, and one address, may spend (fractions of the budget's).

    The hour is held to the day's share.
    """

    client_minute: float = 0.1
    client_day: float = 0.05
    address_minute: float = 0.2
    address_day: float = 0.1

    def of(self, scope: str, window: str) -> float:
        minute, day = (
            (self.client_minute, self.client_day) if scope == "client" else (self.address_minute, self.address_day)
        )
        return minute if window == "minute" else day


@dataclass(frozen=True, slots=True)
class Payer:
    """Who a miss's call is drawn from besides the budget: a hashed client id and a hashed address."""

    client: str
    address: str


@dataclass(frozen=True, slots=True)
class Spent:
    """A spend's answer: allowed, or who refused ("budget", "client", "address") and when to come back."""

    allowed: bool
    scope: str | None = None
    retry_after: float | None = None  # seconds; None: not within the window


class UpstreamBudget:
    """The minute, hour and day windows of weighted upstream calls, shared by every instance."""

    def __init__(
        self,
        redis: RedisGateway,
        limits: Limits,
        clock: Clock,
        *,
        shares: Shares | None = None,
        expected_instances: int = 1,
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.clock = clock
        self.shares = shares or Shares()
        self.expected_instances = max(1, expected_instances)
        self._script = redis.script(SPEND)
        self._day_seen: tuple[int, float] = (0, 0.0)  # (day start ms, the most this process saw spent)
        self._local = LocalWindows()
        self._local_payers: OrderedDict[str, None] = OrderedDict()
        self._unreported = 0.0  # spent from the local allowance, not yet added to the shared windows

    def _windows(self, now_ms: int, *, prewarm: bool = False, payer: Payer | None = None) -> list[Window]:
        windows = []
        for name, seconds in WINDOWS:
            limit = self.limits.of_prewarm(name) if prewarm else self.limits.of(name)
            windows.append(self._window(_PREFIX, name, seconds, limit, now_ms, shared=True))
        if payer is not None:
            for scope, who in (("client", payer.client), ("address", payer.address)):
                for name, seconds in WINDOWS:
                    limit = self.limits.of(name) * self.shares.of(scope, name)
                    windows.append(self._window(f"{_PREFIX}:{scope}:{who}", name, seconds, limit, now_ms))
        return windows

    @staticmethod
    def _window(prefix: str, name: str, seconds: int, limit: float, now_ms: int, *, shared: bool = False) -> Window:
        if name != "day":
            return Window(f"{prefix}:{name}", Kind.SLIDING, limit, seconds * 1000)
        start = now_ms // DAY_MS * DAY_MS
        # the shared day keeps its calendar name: `{upstream_budget}:day:<UTC midnight, seconds>`
        return Window(f"{prefix}:day:{start // 1000}", Kind.FLOORED if shared else Kind.DAY, limit, DAY_MS)

    def _args(self, windows: list[Window], weight: float, now_ms: int, mode: str) -> list[str | float | int]:
        day, seen = self._day_seen
        floor = seen if day == now_ms // DAY_MS * DAY_MS else 0.0
        args: list[str | float | int] = [weight, now_ms, mode, floor]
        for window in windows:
            # a window outlives its span by a bucket and a little; the day by an hour
            expiry = self.clock.real_ms(
                window.span_ms + window.bucket_ms + (3_600_000 if window.span_ms == DAY_MS else 1000)
            )
            args += window.args(expiry)
        return args

    async def _run(self, windows: list[Window], weight: float, now_ms: int, mode: str) -> Outcome:
        """The script over `windows`; a window of another type is repaired once (day windows from the record)."""
        names = [window.key for window in windows]
        for attempt in (1, 2):
            try:
                result = outcome(await self._script(names, self._args(windows, weight, now_ms, mode)))
            except RedisKeyError as exc:
                if attempt == 2:
                    raise
                # a window holding something else: it starts over (the shared day from what this process saw)
                metrics.REDIS_KEY_ERRORS.labels("budget").inc()
                log.warning("upstream budget window unreadable (%s): replaced", exc)
                await self.redis.call(lambda client: client.delete(*names))
                continue
            self._saw_day(now_ms, result.totals[2])
            return result
        raise AssertionError("unreachable")

    def _saw_day(self, now_ms: int, total: float) -> None:
        day = now_ms // DAY_MS * DAY_MS
        seen_day, seen = self._day_seen
        self._day_seen = (day, max(total, seen) if seen_day == day else total)

    async def spend(self, weight: float, *, prewarm: bool = False, payer: Payer | None = None) -> Spent:
        """Take `weight` from every window (and the payer's), or nothing.

        Redis unavailable: a miss spends from this process's local allowance; the
        pre-warmer gets RedisUnavailable, so its cycle stops on Redis rather than on
        a spent budget.
        """
        now_ms = int(self.clock.now() * 1000)
        windows = self._windows(now_ms, prewarm=prewarm, payer=payer)
        try:
            if not self.redis.topology_known:
                raise RedisUnavailable("Redis topology unknown")
            result = await self._run(windows, weight, now_ms, "spend")
        except CacheError:
            if prewarm:
                raise
            return self._spend_locally(windows, weight, now_ms, payer)
        if result.allowed:
            self._mirror(windows, weight, now_ms, payer)
        if self._unreported:
            await self._report(now_ms)
        return self._answer(result, windows, weight, prewarm)

    def _mirror(self, windows: list[Window], weight: float, now_ms: int, payer: Payer | None) -> None:
        """Count a shared spend in the local allowance too.

        So that when Redis stops answering, this process's allowance already holds
        what it spent of the last minute and hour (a client past its share does not
        get a fresh share at the outage's start). The shared day is left out: the
        local day starts from what was seen of it.
        """
        if payer is not None:
            self._remember_payer(payer)
        self._local.add([window for window in windows if window.kind is not Kind.FLOORED], weight, now_ms)

    def _answer(self, result: Outcome, windows: list[Window], weight: float, prewarm: bool) -> Spent:
        if result.allowed:
            return Spent(True)
        assert result.refusing is not None
        scope = (
            "budget"
            if result.refusing < len(WINDOWS)
            else ("client" if result.refusing < 2 * len(WINDOWS) else "address")
        )
        metrics.BUDGET_REFUSALS.labels("prewarm" if prewarm else scope).inc()
        retry = None if result.retry_ms is None else self.clock.real_seconds(result.retry_ms / 1000)
        return Spent(False, scope, retry)

    def _spend_locally(self, windows: list[Window], weight: float, now_ms: int, payer: Payer | None) -> Spent:
        """This process's share of each window (shares per payer included), while Redis cannot say."""
        day, seen = self._day_seen
        spent_today = seen if day == now_ms // DAY_MS * DAY_MS else 0.0
        local = [
            # the shared day: what was left of it when last seen, split among the instances
            Window(window.key, Kind.DAY, max(0.0, window.limit - spent_today) / self.expected_instances, window.span_ms)
            if window.kind is Kind.FLOORED
            else Window(window.key, window.kind, window.limit / self.expected_instances, window.span_ms)
            for window in windows
        ]
        if payer is not None:
            self._remember_payer(payer)
        result = self._local.spend(local, weight, now_ms)
        if result.allowed:
            self._unreported += weight
            metrics.UPSTREAM_LOCAL_WEIGHT.inc(weight)
        return self._answer(result, local, weight, prewarm=False)

    def _remember_payer(self, payer: Payer) -> None:
        for who in (payer.client, payer.address):
            self._local_payers[who] = None
            self._local_payers.move_to_end(who)
        while len(self._local_payers) > _LOCAL_PAYERS:
            forgotten, _ = self._local_payers.popitem(last=False)
            for scope in ("client", "address"):
                self._local.forget(f"{_PREFIX}:{scope}:{forgotten}:")

    async def _report(self, now_ms: int) -> None:
        """Add what was spent locally to the shared windows (as if spent now: the safe side)."""
        weight, self._unreported = self._unreported, 0.0
        try:
            await self._run(self._windows(now_ms), weight, now_ms, "force")
        except CacheError:
            self._unreported += weight
            return
        log.warning(
            "Redis answers again: %.1f weighted calls spent from the local allowance added to the budget", weight
        )

    async def totals(self, *, prewarm: bool = False) -> list[tuple[Window, float]]:
        """Each shared window with what it holds now; CacheError when unknown."""
        now_ms = int(self.clock.now() * 1000)
        if self._unreported:
            await self._report(now_ms)  # Redis may answer again: the pre-warmer's next look reports it
        windows = self._windows(now_ms, prewarm=prewarm)
        result = await self._run(windows, 0, now_ms, "check")
        return list(zip(windows, result.totals))

    async def used(self, window: str) -> float:
        """Weight spent in the current `window` ("minute", "hour" or "day"); CacheError when unknown."""
        index = [name for name, _ in WINDOWS].index(window)
        return (await self.totals())[index][1]

    async def remaining(self, *, prewarm: bool = False) -> float:
        """What can still be spent now (the tightest window); CacheError when unknown."""
        return min(window.limit - total for window, total in await self.totals(prewarm=prewarm))

    async def ahead_of_pace(self, slack: float = 0.1) -> bool:
        """Has today's spending run ahead of an even pace (plus `slack` of the day)?

        Misses that spend the whole budget by noon leave the afternoon stale; when
        spending runs ahead, a miss that has recent data serves it instead.
        """
        elapsed = (self.clock.now() % 86400) / 86400
        try:
            return await self.used("day") > self.limits.per_day * min(1.0, elapsed + slack)
        except CacheError:
            return False  # unknown: a miss is not held back

    async def seconds_until_room(self, weight: float) -> float:
        """How long (simulated seconds) until `weight` fits every shared window again."""
        now_ms = int(self.clock.now() * 1000)
        with contextlib.suppress(CacheError):
            result = await self._run(self._windows(now_ms), weight, now_ms, "check")
            if not result.allowed:
                return 86400.0 if result.retry_ms is None else result.retry_ms / 1000
        return 0.0
