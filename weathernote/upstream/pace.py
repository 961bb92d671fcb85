"""When Open-Meteo can have newer data, so that nothing is refetched that cannot have changed.

`current` comes from 15-minute data: its `time` advances every 15 minutes, so
an entry observed for step T cannot change before T + 15 min. Hourly and
daily values change only when a model run lands (hourly at best, for the
models behind `best_match` over most of the world); the cadence is a setting.
"""

from __future__ import annotations

from datetime import datetime

STEP_SECONDS = 15 * 60
# Open-Meteo's `current.time` flips at the step boundary (its clock, NTP-synced like
# ours): an entry stays fresh this long past the boundary, so that the pre-warmer,
# which refreshes just after it, replaces the entry before any reader finds it expired.
AVAILABILITY_LAG_SECONDS = 10


def next_current_update_ms(observation_time: str) -> int:
    """When a step after `observation_time` (ISO with offset) can be served."""
    step_start = datetime.fromisoformat(observation_time).timestamp()
    return int((step_start + STEP_SECONDS + AVAILABILITY_LAG_SECONDS) * 1000)


def newer_data_from_ms(next_update_ms: int) -> int:
    """When the upstream has newer data than an entry whose next possible update is given."""
    return next_update_ms - AVAILABILITY_LAG_SECONDS * 1000


def observed_step_ms(next_update_ms: int) -> int:
    """The 15-minute step a current-values entry holds, from its next possible update."""
    return newer_data_from_ms(next_update_ms) - STEP_SECONDS * 1000


def next_forecast_update_ms(fetched_at_ms: int, cadence_seconds: float) -> int:
    """The next model-run boundary after the fetch (runs land on the cadence, UTC-aligned)."""
    cadence_ms = int(cadence_seconds * 1000)
    boundary = (fetched_at_ms // cadence_ms + 1) * cadence_ms
    return boundary + AVAILABILITY_LAG_SECONDS * 1000
