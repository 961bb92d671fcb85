"""Typed results: the operations' selections as frozen dataclasses, read strictly from JSON.

Field names are the schema's in snake case. A response that does not fit (a
missing field, a value of the wrong type) raises `ServerError`: the server and
this client disagree about the schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from weathernote_client.errors import ServerError


class Units(StrEnum):
    """The unit system of the values: °C, mm, km/h (METRIC) or °F, inch, mph (IMPERIAL)."""

    METRIC = "METRIC"
    IMPERIAL = "IMPERIAL"


@dataclass(frozen=True, slots=True)
class Cell:
    """The grid cell a position rounds to (0.1° by default): everyone in it shares one value."""

    lat: float
    lon: float

    @classmethod
    def from_json(cls, data: Any) -> Cell:
        fields = _object(data, "cell")
        return cls(lat=_number(fields, "lat"), lon=_number(fields, "lon"))


@dataclass(frozen=True, slots=True)
class Condition:
    """A WMO weather code and its meaning."""

    code: int | None
    description: str

    @classmethod
    def from_json(cls, data: Any) -> Condition:
        fields = _object(data, "condition")
        return cls(code=_optional_int(fields, "code"), description=_string(fields, "description"))


@dataclass(frozen=True, slots=True)
class CurrentWeather:
    """Conditions now at a cell (`current`, `weatherUpdates`)."""

    cell: Cell
    time: dt.datetime
    temperature: float | None
    apparent_temperature: float | None
    humidity: float | None
    precipitation: float | None
    weather_code: int | None
    condition: Condition
    cloud_cover: float | None
    pressure: float | None
    wind_speed: float | None
    wind_direction: float | None
    wind_gusts: float | None
    is_day: bool | None
    units: Units
    cached: bool
    stale: bool
    fetched_at: dt.datetime

    @classmethod
    def from_json(cls, data: Any) -> CurrentWeather:
        fields = _object(data, "CurrentWeather")
        return cls(
            cell=Cell.from_json(fields.get("cell")),
            time=_datetime(fields, "time"),
            temperature=_optional_number(fields, "temperature"),
            apparent_temperature=_optional_number(fields, "apparentTemperature"),
            humidity=_optional_number(fields, "humidity"),
            precipitation=_optional_number(fields, "precipitation"),
            weather_code=_optional_int(fields, "weatherCode"),
            condition=Condition.from_json(fields.get("condition")),
            cloud_cover=_optional_number(fields, "cloudCover"),
            pressure=_optional_number(fields, "pressure"),
            wind_speed=_optional_number(fields, "windSpeed"),
            wind_direction=_optional_number(fields, "windDirection"),
            wind_gusts=_optional_number(fields, "windGusts"),
            is_day=_optional_bool(fields, "isDay"),
            units=_units(fields),
            cached=_bool(fields, "cached"),
            stale=_bool(fields, "stale"),
            fetched_at=_datetime(fields, "fetchedAt"),
        )


@dataclass(frozen=True, slots=True)
class DailyForecast:
    """One local day of a forecast."""

    date: dt.date
    temperature_max: float | None
    temperature_min: float | None
    precipitation_sum: float | None
    precipitation_probability_max: float | None
    weather_code: int | None
    condition: Condition
    sunrise: dt.datetime | None
    sunset: dt.datetime | None
    wind_speed_max: float | None
    uv_index_max: float | None

    @classmethod
    def from_json(cls, data: Any) -> DailyForecast:
        fields = _object(data, "DailyForecast")
        return cls(
            date=_date(fields, "date"),
            temperature_max=_optional_number(fields, "temperatureMax"),
            temperature_min=_optional_number(fields, "temperatureMin"),
            precipitation_sum=_optional_number(fields, "precipitationSum"),
            precipitation_probability_max=_optional_number(fields, "precipitationProbabilityMax"),
            weather_code=_optional_int(fields, "weatherCode"),
            condition=Condition.from_json(fields.get("condition")),
            sunrise=_optional_datetime(fields, "sunrise"),
            sunset=_optional_datetime(fields, "sunset"),
            wind_speed_max=_optional_number(fields, "windSpeedMax"),
            uv_index_max=_optional_number(fields, "uvIndexMax"),
        )


@dataclass(frozen=True, slots=True)
class HourlyForecast:
    """One hour of a forecast."""

    time: dt.datetime
    temperature: float | None
    precipitation_probability: float | None
    weather_code: int | None
    wind_speed: float | None

    @classmethod
    def from_json(cls, data: Any) -> HourlyForecast:
        fields = _object(data, "HourlyForecast")
        return cls(
            time=_datetime(fields, "time"),
            temperature=_optional_number(fields, "temperature"),
            precipitation_probability=_optional_number(fields, "precipitationProbability"),
            weather_code=_optional_int(fields, "weatherCode"),
            wind_speed=_optional_number(fields, "windSpeed"),
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """Daily and hourly forecast at a cell (`forecast`, `forecastUpdates`); `fetched_at` is its oldest part's."""

    cell: Cell
    timezone: str | None
    days: int
    units: Units
    daily: tuple[DailyForecast, ...]
    hourly: tuple[HourlyForecast, ...]
    cached: bool
    stale: bool
    fetched_at: dt.datetime | None

    @classmethod
    def from_json(cls, data: Any) -> Forecast:
        fields = _object(data, "Forecast")
        timezone = fields.get("timezone")
        if timezone is not None and not isinstance(timezone, str):
            raise _mismatch("timezone", timezone)
        return cls(
            cell=Cell.from_json(fields.get("cell")),
            timezone=timezone,
            days=_int(fields, "days"),
            units=_units(fields),
            daily=tuple(DailyForecast.from_json(day) for day in _list(fields, "daily")),
            hourly=tuple(HourlyForecast.from_json(hour) for hour in _list(fields, "hourly")),
            cached=_bool(fields, "cached"),
            stale=_bool(fields, "stale"),
            fetched_at=_optional_datetime(fields, "fetchedAt"),
        )


def _mismatch(name: str, value: object) -> ServerError:
    return ServerError(f"unexpected response: `{name}` is {value!r}")


def _object(data: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _mismatch(name, data)
    return data


def _list(fields: Mapping[str, Any], name: str) -> list[Any]:
    value = fields.get(name)
    if not isinstance(value, list):
        raise _mismatch(name, value)
    return value


def _optional_number(fields: Mapping[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _mismatch(name, value)
    return float(value)


def _number(fields: Mapping[str, Any], name: str) -> float:
    value = _optional_number(fields, name)
    if value is None:
        raise _mismatch(name, value)
    return value


def _optional_int(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _mismatch(name, value)
    return value


def _int(fields: Mapping[str, Any], name: str) -> int:
    value = _optional_int(fields, name)
    if value is None:
        raise _mismatch(name, value)
    return value


def _optional_bool(fields: Mapping[str, Any], name: str) -> bool | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, bool):
        raise _mismatch(name, value)
    return value


def _bool(fields: Mapping[str, Any], name: str) -> bool:
    value = _optional_bool(fields, name)
    if value is None:
        raise _mismatch(name, value)
    return value


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise _mismatch(name, value)
    return value


def _units(fields: Mapping[str, Any]) -> Units:
    value = _string(fields, "units")
    try:
        return Units(value)
    except ValueError:
        raise _mismatch("units", value) from None


def _optional_datetime(fields: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _mismatch(name, value)
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise _mismatch(name, value) from None


def _datetime(fields: Mapping[str, Any], name: str) -> dt.datetime:
    value = _optional_datetime(fields, name)
    if value is None:
        raise _mismatch(name, value)
    return value


def _date(fields: Mapping[str, Any], name: str) -> dt.date:
    value = _string(fields, name)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _mismatch(name, value) from None
