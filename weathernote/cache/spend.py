"""Whether a miss on a cell that already has data spends on a refresh, or its older data stands in.

Misses spend first, but not blindly: a cell with older data is refreshed only
if the budget keeps it (the pre-warmer's kept cells, or someone watches it
live, as `Demand` says), and only while the day's spending keeps to an even
pace. Otherwise its data stands in (`stale: true`), and that decision holds for
a minute at most and never past the upstream's next step, so a popular cell
costs one decision a minute, not a Redis round trip per read. A cell with no
data at all is always fetched, waiting for room in the budget if it must.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from weathernote.cache.memo import EntryMemo
from weathernote.clock import Clock
from weathernote.demand import Demand
from weathernote.errors import SkipCause
from weathernote.model import Cell, Entry, Part
from weathernote.upstream import STEP_SECONDS, UpstreamBudget

# Data this recent may stand in for a refresh while the budget's spending runs ahead of pace.
_RECENT_MS = 3600 * 1000
_STANDING_MS = 60_000


class SpendPolicy:
    """The budget's choice for a miss that has older data: spend, or let the data stand in."""

    def __init__(self, budget: UpstreamBudget, demand: Demand, memo: EntryMemo, clock: Clock) -> None:
        self.budget = budget
        self.demand = demand
        self.memo = memo
        self.clock = clock

    async def objection(self, cell: Cell, parts: Sequence[Part], older: Mapping[Part, Entry]) -> SkipCause | None:
        """Why these parts should not be fetched now (their older data stands in), or None to fetch."""
        now = self.clock.now_ms()
        if await self._ahead_of_pace(parts, older, now):
            return SkipCause.PACE
        if not await self.demand.worth_spending(cell, parts):
            return SkipCause.VALUE
        return None

    def stand_in(self, entries: Sequence[Entry], cause: SkipCause) -> None:
        """These entries stand in for their refresh for a minute at most, never past the next step."""
        now = self.clock.now_ms()
        step_ms = STEP_SECONDS * 1000
        until = min((now // step_ms + 1) * step_ms, now + _STANDING_MS)
        for entry in entries:
            self.memo.stand_in(entry, cause, until)

    async def _ahead_of_pace(self, parts: Sequence[Part], older: Mapping[Part, Entry], now: int) -> bool:
        """Serve recent data instead of spending, while spending runs ahead of the day's pace.

        Only when every part has data under an hour old.
        """
        if any(now - older[part].fetched_at_ms > _RECENT_MS for part in parts):
            return False
        return await self.budget.ahead_of_pace()
