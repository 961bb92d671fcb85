"""When to try again: a bounded number of attempts per call, with jittered exponential backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How calls are retried.

    A call is tried at most `attempts` times. After a connection error or a 5xx
    it waits `backoff(n)`; when rate limited it waits what the server asked
    (`Retry-After`, or `extensions.retryAfter`), unless that is longer than
    `max_retry_after`, which raises `RateLimited` at once. A watch reconnects
    with the same backoff, for as long as it is iterated, or when a server pacing
    connection starts closed it with 4429, after the hint it gave (`after`).
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay or self.max_retry_after < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and 0 <= base_delay <= max_delay, max_retry_after >= 0")

    def after(self, retry_after: float) -> float:
        """Seconds to wait when the server said `retry_after`: that, plus up to a fifth more at random,
        so that clients told the same moment spread out."""
        return retry_after * random.uniform(1.0, 1.2)

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (0 for the first): half of the exponential step, plus up
        to as much again at random, so that clients dropped together do not come back together."""
        step = min(self.max_delay, self.base_delay * 2.0 ** min(retry, 32))
        return step / 2 + random.uniform(0, step / 2)
