"""Unit systems. Entries are stored metric; conversion happens on the way out."""

from __future__ import annotations

import enum


class Units(enum.Enum):
    """A unit system a client may ask for; entries are stored metric."""

    METRIC = "metric"  # °C, km/h, mm, hPa
    IMPERIAL = "imperial"  # °F, mph, inch, hPa


def temperature(celsius: float | None, units: Units) -> float | None:
    if celsius is None or units is Units.METRIC:
        return celsius
    return round(celsius * 9 / 5 + 32, 1)


def speed(kmh: float | None, units: Units) -> float | None:
    if kmh is None or units is Units.METRIC:
        return kmh
    return round(kmh / 1.609344, 1)


def precipitation(mm: float | None, units: Units) -> float | None:
    if mm is None or units is Units.METRIC:
        return mm
    return round(mm / 25.4, 3)
