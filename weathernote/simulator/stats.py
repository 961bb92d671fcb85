"""Counters of /v1/forecast traffic, read by tests and benchmarks through /__simulator/stats."""

from __future__ import annotations

from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

_RECENT = 50


class Stats:
    """Counters of forecast traffic, for tests and benchmarks."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0  # every /v1/forecast request received
        self.served = 0  # 200 answers that carried data
        self.locations = 0  # locations in those answers
        self.weight = 0.0  # their weighted call count
        self.weight_by_day: dict[str, float] = {}  # the same by UTC day of the simulated clock, as the limits count
        self.statuses: Counter[int] = Counter()
        self.last_requests: deque[dict[str, Any]] = deque(maxlen=_RECENT)

    def received(self) -> int:
        """Count a request; returns its sequence number since the last reset."""
        self.requests += 1
        return self.requests

    def answered(self, summary: dict[str, Any], status: int) -> None:
        self.statuses[status] += 1
        self.last_requests.append({**summary, "status": status})

    def served_data(self, locations: int, weight: float, now: float) -> None:
        self.served += 1
        self.locations += locations
        self.weight += weight
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        self.weight_by_day[day] = self.weight_by_day.get(day, 0.0) + weight

    def snapshot(self, in_flight: int, max_in_flight: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "served": self.served,
            "locations": self.locations,
            "weight": self.weight,
            "weight_by_day": dict(sorted(self.weight_by_day.items())),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "in_flight": in_flight,
            "max_in_flight": max_in_flight,
            "last_requests": list(self.last_requests),
        }
