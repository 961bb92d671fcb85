"""The daily rhythm's fit and outlook, in memory: the shape of a day pooled over longitude bands.

Learned from requests, shared through Redis and ranking by the demand ahead: tests/service/test_rhythm_prewarm.py.
"""

from __future__ import annotations

import pytest

from weathernote.demand import rhythm


def daytime(hour: float) -> float:
    """A test rhythm: a tenth at night, full from 07:00 to 21:00 local."""
    return 1.0 if 7 <= hour % 24 < 21 else 0.1


def counted_day(levels: dict[int, float]) -> dict[str, float]:
    """A rhythm hash of a whole watched day: each band's level times the test rhythm."""
    fields = {rhythm.seen_field(u): 1.0 for u in range(24)}
    for band, level in levels.items():
        for u in range(24):
            fields[rhythm.field(band, u)] = level * daytime(rhythm.local_hour(band, u))
    return fields


def test_the_fit_recovers_the_shape_pooled_over_bands_of_any_level() -> None:
    shape = rhythm.fit([counted_day({3: 50, 12: 1000, 20: 7})])
    assert shape.known == 24
    night, day = shape.by_hour[3], shape.by_hour[12]
    assert day / night == pytest.approx(10, rel=0.01)


def test_a_storm_in_one_band_does_not_bend_the_shape_of_the_others() -> None:
    today = counted_day({b: 100 for b in range(6, 18)})
    today[rhythm.field(10, 13)] *= 8  # a storm: one band, one hour
    shape = rhythm.fit([today])
    assert shape.by_hour[rhythm.local_hour(10, 13)] == pytest.approx(shape.by_hour[12], rel=0.15)


def test_hours_nobody_watched_stay_neutral_and_a_cold_start_learns_within_hours() -> None:
    levels = {b: 100 * (1 + b % 3) for b in range(4, 20)}
    full = counted_day(levels)
    watched = (5, 6, 7)  # three hours since a cold start
    partial = {
        name: value
        for name, value in full.items()
        if int(name.split(":")[1]) in watched  # "seen:<hour>" and "<band>:<hour>" alike
    }
    shape = rhythm.fit([partial])
    assert 0 < shape.known < 24
    known = [h for h in range(24) if shape.by_hour[h] != 1.0]
    # the bands sit at many local hours at once: three watched hours reveal far more than three
    assert len(known) >= 12
    assert max(shape.by_hour[h] for h in known) / min(shape.by_hour[h] for h in known) == pytest.approx(10, rel=0.1)
    # a cell at lon 0 at 06:00 UTC: its morning is coming, its night is behind
    assert shape.outlook(0.0, 6.5 * 3600, 3600, 900, 0.8) > 1


def test_the_outlook_is_neutral_without_a_rhythm() -> None:
    assert rhythm.Shape().outlook(-74.0, 1e9, 900, 900, 0.8) == pytest.approx(1.0)
