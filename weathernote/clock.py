"""The one place that owns time.

Everything that reasons about the weather's time (freshness, the upstream's
15-minute steps and model cadence, budget windows, pre-warm cycles) asks a
`Clock`, given to it by the composition root. At speed 1 it is the wall clock.
A benchmark can run it faster (a simulated day in minutes), in step with the
upstream simulator's own clock: durations in simulated seconds turn into real
ones only where something actually waits or expires (sleeps, Redis expiries).
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Simulated time = `origin` + (real time - `real_origin`) x `speed`."""

    def __init__(self, speed: float = 1.0, origin: float | None = None, real_origin: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._real_origin = time.time() if real_origin is None else real_origin
        self._origin = self._real_origin if origin is None else origin

    @classmethod
    def anchored(cls, speed: float, anchor: str | None) -> Clock:
        """A clock at `speed`; with an anchor 'REAL:SIMULATED' (Unix seconds that coincide), in step with
        another process's clock (the upstream simulator's, in benchmarks)."""
        if not anchor:
            return cls(speed)
        real, simulated = (float(part) for part in anchor.split(":"))
        return cls(speed, origin=simulated, real_origin=real)

    def now(self) -> float:
        """Simulated Unix time, seconds."""
        return self._origin + (time.time() - self._real_origin) * self.speed

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.speed

    def real_ms(self, simulated_ms: float) -> int:
        return max(1, int(simulated_ms / self.speed))

    async def sleep(self, simulated: float) -> None:
        await asyncio.sleep(self.real_seconds(simulated))
