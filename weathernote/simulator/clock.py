"""The simulated clock: real time (or a given time) at start, then `clock_speed` simulated seconds per real second."""

from __future__ import annotations

import time

from weathernote.simulator.config import SimulatorConfig


class SimulatedClock:
    """Simulated time for the simulator: a start, then `clock_speed` simulated seconds per real one."""

    def __init__(self, config: SimulatorConfig, start: float | None = None) -> None:
        self._config = config
        self._speed = config.clock_speed
        self._base_simulated = time.time() if start is None else start
        self._base_monotonic = time.monotonic()

    def now(self) -> float:
        """Simulated unix seconds; a change of `clock_speed` re-anchors so the clock never jumps."""
        elapsed = time.monotonic() - self._base_monotonic
        current = self._base_simulated + elapsed * self._speed
        if self._config.clock_speed != self._speed:
            self._base_simulated = current
            self._base_monotonic += elapsed
            self._speed = self._config.clock_speed
        return current
