"""The daily rhythm of demand: how much people ask for the weather at each local solar hour.

A cell's requests follow its local daytime (quiet nights, morning and evening
peaks), and local time is the cell's longitude. Reads are counted per 15-degree
longitude band and UTC hour of the day (`Usage` adds them to today's hash), and
the pre-warmer's leader marks each UTC hour it watched. A fit splits the counts
into each band's level times one shape over the local hour, shared by every
band: at any moment the bands sit at many local hours, so a service that starts
cold knows the shape of most hours within its first hour or two. Days weigh half
the day after them; hours nobody has watched stay neutral (1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

BANDS = 24
HOURS = 24
DAYS = 7  # the rhythm's memory: a week ago weighs 1/64 of today
_SAMPLES = 12  # points per averaged period: enough for a shape that changes by the hour
_FIT_ROUNDS = 100  # alternating ratios converge slowly along a chain of bands: enough for 2 %
_OUTLIER = 2.0  # a band-hour counted at most this many times its fit: one storm bends no one else's shape
_FLOOR = 0.05  # the quietest hour's share of the mean, so no cell's outlook falls to nothing


def day(seconds: float) -> str:
    """The rhythm's day (YYYY-MM-DD, UTC) of a moment on the service's clock."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def utc_hour(seconds: float) -> int:
    return int(seconds % 86400 // 3600)


def band(lon: float) -> int:
    """The 15-degree longitude band of `lon`: 0 for [-180, -165), 23 for [165, 180]."""
    return min(BANDS - 1, max(0, int((lon + 180) // 15)))


def local_hour(band_index: int, utc_hour: int) -> int:
    """The local solar hour at the middle of a band's UTC hour (whole: bands are 15 degrees)."""
    # middle of the band: lon = band * 15 - 172.5, so local = utc + 0.5 + lon / 15
    return (utc_hour + band_index - 11) % HOURS


def member_band(member: str) -> int | None:
    """The band of a `<part>|<cell label>` member (its label ends in the longitude); None if unreadable."""
    try:
        return band(float(member.rsplit(":", 1)[1]))
    except (IndexError, ValueError):
        return None


def field(band_index: int, utc_hour: int) -> str:
    """A band's count in a UTC hour, as the rhythm hash spells it."""
    return f"{band_index}:{utc_hour}"


def seen_field(utc_hour: int) -> str:
    """How long the pre-warmer watched a UTC hour (in hours), as the rhythm hash spells it."""
    return f"seen:{utc_hour}"


@dataclass(frozen=True, slots=True)
class Shape:
    """Relative demand by local solar hour (mean 1), and what it says of a cell's periods."""

    by_hour: tuple[float, ...] = (1.0,) * HOURS
    known: int = 0  # local hours fitted from counts (the others are neutral)

    def at(self, lon: float, utc_seconds: float) -> float:
        """Relative demand at a longitude and moment, between the whole local hours around it."""
        hour = (utc_seconds / 3600 + lon / 15) % HOURS
        below = int(hour)
        part = hour - below
        return self.by_hour[below] * (1 - part) + self.by_hour[(below + 1) % HOURS] * part

    def mean(self, lon: float, start: float, seconds: float) -> float:
        """Average relative demand over [start, start + seconds)."""
        return sum(self.at(lon, start + (i + 0.5) * seconds / _SAMPLES) for i in range(_SAMPLES)) / _SAMPLES

    def outlook(self, lon: float, now: float, ahead: float, period: float, decay: float) -> float:
        """Demand over the next `ahead` seconds relative to what a decayed count of past
        periods saw: a count of requests times this is what the refresh will serve."""
        weights = [decay**k for k in range(int(math.log(0.01) / math.log(decay)) + 1)] if 0 < decay < 1 else [1.0]
        seen = sum(w * self.at(lon, now - (k + 0.5) * period) for k, w in enumerate(weights)) / sum(weights)
        return self.mean(lon, now, ahead) / seen


def fit(days: Sequence[Mapping[str, float]]) -> Shape:
    """The shape of the rhythm hashes given, newest first (each day weighs half the one after)."""
    counts: dict[tuple[int, int], float] = {}
    seen = [0.0] * HOURS
    for age, fields in enumerate(days):
        weight = 0.5**age
        for name, value in fields.items():
            first, _, second = name.partition(":")
            try:
                if first == "seen":
                    seen[int(second) % HOURS] += weight * value
                else:
                    key = (int(first) % BANDS, int(second) % HOURS)
                    counts[key] = counts.get(key, 0.0) + weight * value
            except ValueError:
                continue  # a field of another version
    # every watched hour of every band anyone asked from: an hour without requests is news too
    active = {b for (b, _), value in counts.items() if value > 0}
    cells = {(b, u): counts.get((b, u), 0.0) for b in active for u in range(HOURS) if seen[u] > 0}
    if not cells:
        return Shape()
    shape, level = _fitted(cells, seen, [1.0] * HOURS, _FIT_ROUNDS)
    # a burst in one band (a storm) is that band's news, not everyone's shape: clip it and fit again
    clipped = {
        key: min(value, _OUTLIER * level[key[0]] * shape[local_hour(*key)] * seen[key[1]])
        for key, value in cells.items()
    }
    shape, _ = _fitted(clipped, seen, [value or 1.0 for value in shape], _FIT_ROUNDS // 5)  # from the first fit
    known = [value for value in shape if value > 0]
    mean = sum(known) / len(known)
    return Shape(tuple(max(_FLOOR, value / mean) if value > 0 else 1.0 for value in shape), len(known))


def _fitted(
    cells: Mapping[tuple[int, int], float], seen: list[float], shape: list[float], rounds: int
) -> tuple[list[float], list[float]]:
    """Counts ~ level[band] * shape[local hour] * hours watched, by alternating ratios (Poisson's
    maximum likelihood); shape 0 where no band was watched."""
    terms = [(b, local_hour(b, u), value, seen[u]) for (b, u), value in cells.items()]
    totals_by_band, totals_by_hour = [0.0] * BANDS, [0.0] * HOURS
    for b, k, value, _ in terms:
        totals_by_band[b] += value
        totals_by_hour[k] += value
    level = [0.0] * BANDS
    for _ in range(rounds):
        exposure = [0.0] * BANDS
        for b, k, _, watched in terms:
            exposure[b] += shape[k] * watched
        level = [t / e if e > 0 else 0.0 for t, e in zip(totals_by_band, exposure)]
        exposure = [0.0] * HOURS
        for b, k, _, watched in terms:
            exposure[k] += level[b] * watched
        shape = [t / e if e > 0 else 0.0 for t, e in zip(totals_by_hour, exposure)]
    return shape, level
