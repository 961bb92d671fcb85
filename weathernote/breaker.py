"""A circuit breaker: after repeated failures, stop waiting on a dependency for a while.

Closed: calls go through, consecutive failures are counted. Open: calls are
refused at once (the caller degrades) until `reset_seconds` pass. Half-open:
one probe goes through; its success closes the breaker, its failure opens it
again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class State(enum.Enum):
    """A breaker's state: calls go through (closed), are refused (open), or one probes (half-open)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one dependency and stops calls to it for a while past a threshold."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.on_change = on_change
        self.state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go through now? In half-open, only one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() - self._opened_at < self.reset_seconds:
                return False
            self._set(State.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not State.CLOSED:
            self._set(State.CLOSED)

    def abandon(self) -> None:
        """An allowed call that was not made after all: frees the half-open probe."""
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self.state is State.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            if self.state is not State.OPEN:
                self._set(State.OPEN)

    def _set(self, state: State) -> None:
        log.warning("%s circuit breaker %s", self.name, state.value)
        self.state = state
        if self.on_change:
            self.on_change(self.name, state)
