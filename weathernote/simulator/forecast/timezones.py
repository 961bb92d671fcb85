"""Time zones: IANA names, `auto` resolution and the abbreviation the server prints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

DEFAULT = "GMT"
AUTO = "auto"

# `auto` picks the zone of the nearest of these cities within _AUTO_RADIUS_KM,
# and otherwise a whole-hour zone from the longitude (`Etc/GMT-2` is UTC+2).
_AUTO_CITIES: tuple[tuple[str, float, float], ...] = (
    ("Europe/London", 51.51, -0.13),
    ("Europe/Dublin", 53.35, -6.26),
    ("Europe/Lisbon", 38.72, -9.14),
    ("Europe/Madrid", 40.42, -3.70),
    ("Europe/Paris", 48.86, 2.35),
    ("Europe/Brussels", 50.85, 4.35),
    ("Europe/Amsterdam", 52.37, 4.90),
    ("Europe/Zurich", 47.37, 8.54),
    ("Europe/Berlin", 52.52, 13.40),
    ("Europe/Rome", 41.90, 12.50),
    ("Europe/Vienna", 48.21, 16.37),
    ("Europe/Copenhagen", 55.68, 12.57),
    ("Europe/Stockholm", 59.33, 18.07),
    ("Europe/Oslo", 59.91, 10.75),
    ("Europe/Helsinki", 60.17, 24.94),
    ("Europe/Warsaw", 52.23, 21.01),
    ("Europe/Athens", 37.98, 23.73),
    ("Europe/Istanbul", 41.01, 28.98),
    ("Europe/Kyiv", 50.45, 30.52),
    ("Europe/Moscow", 55.76, 37.62),
    ("Africa/Cairo", 30.04, 31.24),
    ("Africa/Lagos", 6.52, 3.38),
    ("Africa/Nairobi", -1.29, 36.82),
    ("Africa/Johannesburg", -26.20, 28.05),
    ("Asia/Dubai", 25.20, 55.27),
    ("Asia/Kolkata", 28.61, 77.21),
    ("Asia/Bangkok", 13.76, 100.50),
    ("Asia/Singapore", 1.35, 103.82),
    ("Asia/Shanghai", 31.23, 121.47),
    ("Asia/Tokyo", 35.68, 139.69),
    ("Australia/Perth", -31.95, 115.86),
    ("Australia/Sydney", -33.87, 151.21),
    ("Pacific/Auckland", -36.85, 174.76),
    ("America/New_York", 40.71, -74.01),
    ("America/Toronto", 43.65, -79.38),
    ("America/Chicago", 41.88, -87.63),
    ("America/Denver", 39.74, -104.99),
    ("America/Los_Angeles", 34.05, -118.24),
    ("America/Mexico_City", 19.43, -99.13),
    ("America/Bogota", 4.71, -74.07),
    ("America/Sao_Paulo", -23.55, -46.63),
    ("America/Argentina/Buenos_Aires", -34.60, -58.38),
)
_AUTO_RADIUS_KM = 400.0
_EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Zone:
    """A time zone as the server prints it: name, abbreviation, offset."""

    name: str  # as printed in `timezone`
    info: ZoneInfo

    def offset_seconds(self, unix_seconds: float) -> int:
        """The UTC offset in force at that instant (applied to the whole answer, like the server)."""
        moment = datetime.fromtimestamp(unix_seconds, tz=UTC)
        offset = self.info.utcoffset(moment)
        return int(offset.total_seconds()) if offset is not None else 0


def named(name: str) -> Zone | None:
    """The zone for an IANA name, or None if there is no such zone."""
    info = _zone_info(name)
    return None if info is None else Zone(name, info)


def automatic(latitude: float, longitude: float) -> Zone:
    """A deterministic stand-in for the server's coordinate-to-zone lookup."""
    best_name, best_km = "", math.inf
    for name, city_lat, city_lon in _AUTO_CITIES:
        km = _distance_km(latitude, longitude, city_lat, city_lon)
        if km < best_km:
            best_name, best_km = name, km
    if best_km <= _AUTO_RADIUS_KM:
        return Zone(best_name, ZoneInfo(best_name))
    hours = max(-12, min(12, round(longitude / 15)))
    name = DEFAULT if hours == 0 else f"Etc/GMT{-hours:+d}"
    return Zone(name, ZoneInfo(name))


def abbreviation(offset_seconds: int) -> str:
    """`GMT`, `GMT+2`, `GMT-4`, `GMT+5:30`: the style of 2025-2026 server builds."""
    if offset_seconds == 0:
        return "GMT"
    sign = "+" if offset_seconds > 0 else "-"
    hours, seconds = divmod(abs(offset_seconds), 3600)
    minutes = seconds // 60
    return f"GMT{sign}{hours}" + (f":{minutes:02d}" if minutes else "")


@lru_cache(maxsize=512)
def _zone_info(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError for odd paths, OSError for directories
        return None


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
