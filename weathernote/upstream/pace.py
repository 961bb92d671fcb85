"""When Open-Meteo can have newer data, so that nothing is refetched that cannot have changed.

`current` comes from 15-minute data: its `time` advances every 15 minutes, so
an entry observed for step T cannot change before T + 15 min. Hourly and
daily values change only when a model run lands (hourly at best, for the
models behind `best_match` over most of the world); the cadence is a setting.
"""

from __future__ import annotations

from datetime import datetime

STEP_SECONDS = 15 * 60
# Open-Meteo's `current.time` flips at the step boundary; allow its servers a moment.
AVAILABILITY_LAG_SECONDS = 30


def next_current_update_ms(observation_time: str) -> int:
    """When a step after `observation_time` (ISO with offset) can be served."""
    step_start = datetime.fromisoformat(observation_time).timestamp()
    return int((step_start + STEP_SECONDS + AVAILABILITY_LAG_SECONDS) * 1000)


def next_forecast_update_ms(fetched_at_ms: int, cadence_seconds: float) -> int:
    """The next model-run boundary after the fetch (runs land on the cadence, UTC-aligned)."""
    cadence_ms = int(cadence_seconds * 1000)
    boundary = (fetched_at_ms // cadence_ms + 1) * cadence_ms
    return boundary + AVAILABILITY_LAG_SECONDS * 1000
