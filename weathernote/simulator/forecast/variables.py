"""The variables the simulator knows: hourly/current ones read from `Conditions`, daily ones aggregated.

Names are the server's current spellings; the legacy spellings (`weathercode`,
`windspeed_10m`, ...) are accepted too and echoed back as requested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from weathernote.simulator.forecast.units import Kind
from weathernote.simulator.forecast.weather import Conditions, SunTimes, saturation_vapour_pressure


@dataclass(frozen=True, slots=True)
class Day:
    """The 24 local hours of a calendar day and its sun times: what daily values derive from."""

    hours: Sequence[Conditions]
    sun: SunTimes


@dataclass(frozen=True, slots=True)
class HourlyVariable:
    """An hourly (or current) variable: how it is read from the model's conditions."""

    kind: Kind
    value: Callable[[Conditions], float]


@dataclass(frozen=True, slots=True)
class DailyVariable:
    """A daily variable: how it aggregates a day's hours."""

    kind: Kind
    value: Callable[[Day], float | None]


def _height_wind(height: int) -> Callable[[Conditions], float]:
    # Power law; the stable night-time layer makes the wind increase faster with height.
    return lambda c: c.wind_speed * (height / 10) ** (0.14 if c.is_day else 0.25)


def _height_direction(height: int) -> Callable[[Conditions], float]:
    veer = height / 15  # degrees: the wind turns clockwise with height
    return lambda c: (c.wind_direction + veer) % 360


def _height_temperature(height: int) -> Callable[[Conditions], float]:
    # Lapse rate by day, a weak inversion by night.
    return lambda c: c.temperature - 0.0065 * height + (0 if c.is_day else height / 90)


def _soil_moisture(dry: float, span: float) -> Callable[[Conditions], float]:
    return lambda c: dry + span * c.soil_wetness


HOURLY: dict[str, HourlyVariable] = {
    "temperature_2m": HourlyVariable(Kind.TEMPERATURE, lambda c: c.temperature),
    "relative_humidity_2m": HourlyVariable(Kind.PERCENT, lambda c: c.relative_humidity),
    "dew_point_2m": HourlyVariable(Kind.TEMPERATURE, lambda c: c.dew_point),
    "apparent_temperature": HourlyVariable(Kind.TEMPERATURE, lambda c: c.apparent_temperature),
    "is_day": HourlyVariable(Kind.FLAG, lambda c: c.is_day),
    "precipitation": HourlyVariable(Kind.PRECIPITATION, lambda c: c.precipitation),
    "rain": HourlyVariable(Kind.PRECIPITATION, lambda c: c.rain),
    "showers": HourlyVariable(Kind.PRECIPITATION, lambda c: c.showers),
    "snowfall": HourlyVariable(Kind.SNOWFALL, lambda c: c.snowfall),
    "snow_depth": HourlyVariable(Kind.LENGTH, lambda c: c.snow_depth),
    "precipitation_probability": HourlyVariable(Kind.PERCENT, lambda c: c.precipitation_probability),
    "weather_code": HourlyVariable(Kind.WMO_CODE, lambda c: c.weather_code),
    "cloud_cover": HourlyVariable(Kind.PERCENT, lambda c: c.cloud_cover),
    "cloud_cover_low": HourlyVariable(Kind.PERCENT, lambda c: c.cloud_cover_low),
    "cloud_cover_mid": HourlyVariable(Kind.PERCENT, lambda c: c.cloud_cover_mid),
    "cloud_cover_high": HourlyVariable(Kind.PERCENT, lambda c: c.cloud_cover_high),
    "pressure_msl": HourlyVariable(Kind.PRESSURE, lambda c: c.pressure_msl),
    "surface_pressure": HourlyVariable(Kind.PRESSURE, lambda c: c.surface_pressure),
    "wind_speed_10m": HourlyVariable(Kind.WIND_SPEED, lambda c: c.wind_speed),
    "wind_direction_10m": HourlyVariable(Kind.DEGREE, lambda c: c.wind_direction),
    "wind_gusts_10m": HourlyVariable(Kind.WIND_SPEED, lambda c: c.wind_gusts),
    "visibility": HourlyVariable(Kind.LENGTH, lambda c: c.visibility),
    "uv_index": HourlyVariable(Kind.INDEX, lambda c: c.uv_index),
    "uv_index_clear_sky": HourlyVariable(Kind.INDEX, lambda c: c.uv_index_clear_sky),
    "sunshine_duration": HourlyVariable(Kind.SECONDS, lambda c: c.sunshine_duration),
    "shortwave_radiation": HourlyVariable(Kind.RADIATION, lambda c: c.shortwave_radiation),
    "direct_radiation": HourlyVariable(Kind.RADIATION, lambda c: c.direct_radiation),
    "diffuse_radiation": HourlyVariable(Kind.RADIATION, lambda c: c.diffuse_radiation),
    "et0_fao_evapotranspiration": HourlyVariable(Kind.PRECIPITATION, lambda c: c.et0_evapotranspiration),
    "evapotranspiration": HourlyVariable(
        Kind.PRECIPITATION, lambda c: c.et0_evapotranspiration * (0.3 + 0.7 * c.soil_wetness)
    ),
    "vapour_pressure_deficit": HourlyVariable(
        Kind.VAPOUR_PRESSURE,
        lambda c: (saturation_vapour_pressure(c.temperature) - saturation_vapour_pressure(c.dew_point)) / 10,
    ),
    "cape": HourlyVariable(Kind.ENERGY, lambda c: c.cape),
    "freezing_level_height": HourlyVariable(Kind.LENGTH, lambda c: c.freezing_level_height),
    "soil_temperature_0cm": HourlyVariable(
        Kind.TEMPERATURE, lambda c: c.temperature + 0.012 * c.shortwave_radiation - (0 if c.is_day else 0.8)
    ),
    "soil_temperature_6cm": HourlyVariable(
        Kind.TEMPERATURE, lambda c: 0.55 * c.temperature + 0.45 * c.mean_temperature
    ),
    "soil_temperature_18cm": HourlyVariable(Kind.TEMPERATURE, lambda c: 0.2 * c.temperature + 0.8 * c.mean_temperature),
    "soil_temperature_54cm": HourlyVariable(
        Kind.TEMPERATURE, lambda c: 0.3 * c.mean_temperature + 0.7 * c.climate_temperature
    ),
    "soil_moisture_0_to_1cm": HourlyVariable(Kind.SOIL_MOISTURE, _soil_moisture(0.08, 0.34)),
    "soil_moisture_1_to_3cm": HourlyVariable(Kind.SOIL_MOISTURE, _soil_moisture(0.10, 0.30)),
    "soil_moisture_3_to_9cm": HourlyVariable(Kind.SOIL_MOISTURE, _soil_moisture(0.12, 0.26)),
    "soil_moisture_9_to_27cm": HourlyVariable(Kind.SOIL_MOISTURE, _soil_moisture(0.15, 0.20)),
    "soil_moisture_27_to_81cm": HourlyVariable(Kind.SOIL_MOISTURE, _soil_moisture(0.20, 0.12)),
}
for _height in (80, 120, 180):
    HOURLY[f"temperature_{_height}m"] = HourlyVariable(Kind.TEMPERATURE, _height_temperature(_height))
    HOURLY[f"wind_speed_{_height}m"] = HourlyVariable(Kind.WIND_SPEED, _height_wind(_height))
    HOURLY[f"wind_direction_{_height}m"] = HourlyVariable(Kind.DEGREE, _height_direction(_height))


def _maximum(field: Callable[[Conditions], float]) -> Callable[[Day], float]:
    return lambda day: max(field(c) for c in day.hours)


def _minimum(field: Callable[[Conditions], float]) -> Callable[[Day], float]:
    return lambda day: min(field(c) for c in day.hours)


def _mean(field: Callable[[Conditions], float]) -> Callable[[Day], float]:
    return lambda day: sum(field(c) for c in day.hours) / len(day.hours)


def _total(field: Callable[[Conditions], float]) -> Callable[[Day], float]:
    return lambda day: sum(field(c) for c in day.hours)


def _dominant_direction(day: Day) -> float:
    """Direction of the speed-weighted mean wind vector."""
    east = sum(c.wind_speed * math.sin(math.radians(c.wind_direction)) for c in day.hours)
    north = sum(c.wind_speed * math.cos(math.radians(c.wind_direction)) for c in day.hours)
    return math.degrees(math.atan2(east, north)) % 360


DAILY: dict[str, DailyVariable] = {
    "weather_code": DailyVariable(Kind.WMO_CODE, _maximum(lambda c: c.weather_code)),  # the most severe
    "sunrise": DailyVariable(Kind.TIME, lambda day: day.sun.sunrise),
    "sunset": DailyVariable(Kind.TIME, lambda day: day.sun.sunset),
    "daylight_duration": DailyVariable(Kind.SECONDS, lambda day: day.sun.daylight_seconds),
    "sunshine_duration": DailyVariable(Kind.SECONDS, _total(lambda c: c.sunshine_duration)),
    "uv_index_max": DailyVariable(Kind.INDEX, _maximum(lambda c: c.uv_index)),
    "uv_index_clear_sky_max": DailyVariable(Kind.INDEX, _maximum(lambda c: c.uv_index_clear_sky)),
    "precipitation_sum": DailyVariable(Kind.PRECIPITATION, _total(lambda c: c.precipitation)),
    "rain_sum": DailyVariable(Kind.PRECIPITATION, _total(lambda c: c.rain)),
    "showers_sum": DailyVariable(Kind.PRECIPITATION, _total(lambda c: c.showers)),
    "snowfall_sum": DailyVariable(Kind.SNOWFALL, _total(lambda c: c.snowfall)),
    "precipitation_hours": DailyVariable(Kind.HOURS, _total(lambda c: 1.0 if c.precipitation > 0 else 0.0)),
    "wind_direction_10m_dominant": DailyVariable(Kind.DEGREE, _dominant_direction),
    # W/m² over an hour is 0.0036 MJ/m².
    "shortwave_radiation_sum": DailyVariable(Kind.RADIATION_SUM, _total(lambda c: c.shortwave_radiation * 0.0036)),
    "et0_fao_evapotranspiration": DailyVariable(Kind.PRECIPITATION, _total(lambda c: c.et0_evapotranspiration)),
}
# `<hourly variable>_max/_min/_mean`, as the server offers them.
for _name in (
    "temperature_2m",
    "apparent_temperature",
    "relative_humidity_2m",
    "dew_point_2m",
    "cloud_cover",
    "pressure_msl",
    "surface_pressure",
    "wind_speed_10m",
    "wind_gusts_10m",
    "visibility",
    "precipitation_probability",
):
    _hourly = HOURLY[_name]
    DAILY[f"{_name}_max"] = DailyVariable(_hourly.kind, _maximum(_hourly.value))
    DAILY[f"{_name}_min"] = DailyVariable(_hourly.kind, _minimum(_hourly.value))
    DAILY[f"{_name}_mean"] = DailyVariable(_hourly.kind, _mean(_hourly.value))

# Spellings from before the 2023 renaming, still accepted by the server.
_LEGACY_SPELLINGS = (
    ("relative_humidity", "relativehumidity"),
    ("dew_point", "dewpoint"),
    ("cloud_cover", "cloudcover"),
    ("weather_code", "weathercode"),
    ("wind_speed", "windspeed"),
    ("wind_direction", "winddirection"),
    ("wind_gusts", "windgusts"),
    ("freezing_level_height", "freezinglevel_height"),
)


def _legacy_aliases(names: Sequence[str]) -> dict[str, str]:
    aliases = {}
    for name in names:
        legacy = name
        for modern, old in _LEGACY_SPELLINGS:
            legacy = legacy.replace(modern, old)
        if legacy != name:
            aliases[legacy] = name
    return aliases


_HOURLY_ALIASES = _legacy_aliases(list(HOURLY))
_DAILY_ALIASES = _legacy_aliases(list(DAILY))


def hourly_name(requested: str) -> str | None:
    """The canonical hourly/current variable for a requested spelling, or None if unknown."""
    return requested if requested in HOURLY else _HOURLY_ALIASES.get(requested)


def daily_name(requested: str) -> str | None:
    """The canonical daily variable for a requested spelling, or None if unknown."""
    return requested if requested in DAILY else _DAILY_ALIASES.get(requested)
