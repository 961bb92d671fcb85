"""Pacing of connection starts: a reconnect storm is admitted at a steady rate, not all at once.

When an instance dies, every client it held reconnects to the others in the same second. Each
start (a WebSocket `connection_init`) costs a handshake, an identity and, soon after, a
subscription that reads its cell: thousands at once would slow every request of the survivors.
The pacer admits `rate` starts a second with a burst of `burst` (GCRA: one theoretical arrival
time, no timer, no task) and tells each refused start when to come back. The hints are spread
one admission interval apart in the order of refusal, so the refused return in a line at the rate
the pacer admits rather than all together at the next second; clients add their own jitter.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """At most `rate` starts a second after a burst of `burst`; `admit` answers 0 or seconds to wait."""

    def __init__(
        self, rate: float, burst: int, *, horizon: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a pacer admits a positive rate and a burst of at least one")
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.horizon = horizon
        self.monotonic = monotonic
        self._arrival = 0.0  # theoretical arrival time of the next start (GCRA)
        self._next_hint = 0.0  # when the next refused start is told to come back

    def admit(self) -> float:
        """0.0 if a start may go on now (and counts it), else the seconds after which to try again."""
        now = self.monotonic()
        arrival = max(self._arrival, now)
        if arrival - now <= self.tolerance:
            self._arrival = arrival + self.interval
            return 0.0
        free_at = arrival - self.tolerance
        hint = min(max(self._next_hint, free_at), now + self.horizon)
        self._next_hint = hint + self.interval
        return hint - now
