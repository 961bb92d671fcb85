"""Call weighting, per-client rate-limit windows and per-client concurrency, as the server counts them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from weathernote.simulator.config import SimulatorConfig
from weathernote.simulator.faults.errors import DAILY_LIMIT, HOURLY_LIMIT, MINUTELY_LIMIT

_FULL_WEIGHT_DAYS = 14
_FULL_WEIGHT_VARIABLES = 10


def request_weight(variables: int, days: int, locations: int) -> float:
    """Open-Meteo's fractional call count: per location max(1, V/10, V/10 * D/14), summed."""
    per_variable = variables / _FULL_WEIGHT_VARIABLES
    per_location = max(1.0, per_variable, per_variable * days / _FULL_WEIGHT_DAYS)
    return per_location * locations


@dataclass
class _Window:
    index: int = -1  # which minute/hour/day since the epoch this usage belongs to
    used: float = 0.0


@dataclass
class _Usage:
    minute: _Window = field(default_factory=_Window)
    hour: _Window = field(default_factory=_Window)
    day: _Window = field(default_factory=_Window)


class RateLimiter:
    """Fixed windows aligned to the simulated clock: refused when usage is already at the limit."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._clients: dict[str, _Usage] = defaultdict(_Usage)

    def refusal(self, client: str, now: float) -> str | None:
        """The 429 reason if `client` is over a limit now, else None."""
        usage = self._clients[client]
        config = self._config
        for window, seconds, limit, reason in (
            (usage.minute, 60, config.rate_limit_per_minute, MINUTELY_LIMIT),
            (usage.hour, 3600, config.rate_limit_per_hour, HOURLY_LIMIT),
            (usage.day, 86400, config.rate_limit_per_day, DAILY_LIMIT),
        ):
            if window.index == int(now // seconds) and window.used >= limit:
                return reason
        return None

    def charge(self, client: str, now: float, calls: float) -> None:
        """Count a finished request: its weight if it succeeded, 1 if it failed."""
        usage = self._clients[client]
        for window, seconds in ((usage.minute, 60), (usage.hour, 3600), (usage.day, 86400)):
            index = int(now // seconds)
            if window.index != index:
                window.index, window.used = index, 0.0
            window.used += calls

    def reset(self) -> None:
        self._clients.clear()


class ConcurrencyLimiter:
    """Requests in flight per client; beyond `max_concurrent` (0 = unlimited) they are refused."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._per_client: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.max_in_flight = 0

    def try_acquire(self, client: str) -> bool:
        limit = self._config.max_concurrent
        if limit and self._per_client[client] >= limit:
            return False
        self._per_client[client] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return True

    def release(self, client: str) -> None:
        self._per_client[client] -= 1
        if not self._per_client[client]:
            del self._per_client[client]
        self.in_flight -= 1

    def reset_peak(self) -> None:
        self.max_in_flight = self.in_flight
