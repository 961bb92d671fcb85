"""How long an entry is fresh: until the upstream can have newer data, at most its TTL.

Current values come from 15-minute steps, forecasts from model runs (the
cadence is a setting); an entry is fresh until then, at most the configured
TTL, with a little jitter so that cells filled together do not expire together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from weathernote.model import Current, Entry, Model, Part
from weathernote.upstream.pace import (
    STEP_SECONDS,
    next_current_update_ms,
    next_forecast_update_ms,
    observed_step_ms,
)

# If the upstream has not moved on when it could have, ask again this much later.
_RETRY_LATER_MS = 60_000


@dataclass(frozen=True, slots=True)
class Freshness:
    """Entry lifetimes: TTLs per part, the forecast cadence and the freshness target."""

    ttl_ms: dict[Part, int]
    forecast_cadence_seconds: float = 3600.0
    jitter: float = 0.1  # entries expire up to this fraction of their TTL early
    # Current values this recent are fresh enough for the cells the budget keeps:
    # one step (the latest data) or, to keep more cells within an hour, four.
    target_steps: int = 1

    @property
    def target_ms(self) -> int:
        return self.target_steps * STEP_SECONDS * 1000

    def within_target(self, entry: Entry, now_ms: int) -> bool:
        """Are these current values recent enough to serve without a refresh?"""
        return entry.part is Part.CURRENT and now_ms - observed_step_ms(entry.next_update_ms) < self.target_ms

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
