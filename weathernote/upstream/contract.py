"""What we ask Open-Meteo for, and how its answers are checked and mapped onto our entries.

Open-Meteo weighs a request by its variables and days (see `request_weight`),
so each part asks for exactly the variables the GraphQL schema exposes and no
more: a current-only query never pays for a forecast.

An answer is validated whole before anything of it is returned (and so before
anything is cached): types, ISO dates and times, column lengths against each
other and the requested horizon, physically plausible numbers, a sane time
zone. A 200 that fails any check is a `ContractError`, which the client turns
into an upstream failure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeGuard

from astral import Observer, sun

from weathernote.errors import ContractError
from weathernote.model.entries import FORECAST_DAYS, Current, Daily, Hourly, Model, Part

# Our field name -> Open-Meteo variable, in request order.
CURRENT_VARIABLES: dict[str, str] = {
    "temperature": "temperature_2m",
    "apparent_temperature": "apparent_temperature",
    "humidity": "relative_humidity_2m",
    "precipitation": "precipitation",
    "weather_code": "weather_code",
    "cloud_cover": "cloud_cover",
    "pressure": "pressure_msl",
    "wind_speed": "wind_speed_10m",
    "wind_direction": "wind_direction_10m",
    "wind_gusts": "wind_gusts_10m",
}
# `is_day` is astronomy, not weather: worked out here from the step's time and place.
# Ten variables weigh 1 per location where eleven weigh 1.1, so the same budget keeps
# a tenth more cells fresh.
DAILY_VARIABLES: dict[str, str] = {
    "weather_code": "weather_code",
    "temperature_max": "temperature_2m_max",
    "temperature_min": "temperature_2m_min",
    "precipitation_sum": "precipitation_sum",
    "precipitation_probability_max": "precipitation_probability_max",
    "sunrise": "sunrise",
    "sunset": "sunset",
    "wind_speed_max": "wind_speed_10m_max",
    "uv_index_max": "uv_index_max",
}
HOURLY_VARIABLES: dict[str, str] = {
    "temperature": "temperature_2m",
    "precipitation_probability": "precipitation_probability",
    "weather_code": "weather_code",
    "wind_speed": "wind_speed_10m",
}
VARIABLES: dict[Part, dict[str, str]] = {
    Part.CURRENT: CURRENT_VARIABLES,
    Part.DAILY: DAILY_VARIABLES,
    Part.HOURLY: HOURLY_VARIABLES,
}
_SUNRISE_ALTITUDE = -0.833  # degrees: refraction and the sun's half-diameter

# Units we rely on (Open-Meteo's defaults); anything else means a changed contract.
EXPECTED_UNITS: dict[str, str] = {
    "temperature_2m": "°C",
    "apparent_temperature": "°C",
    "temperature_2m_max": "°C",
    "temperature_2m_min": "°C",
    "precipitation": "mm",
    "precipitation_sum": "mm",
    "pressure_msl": "hPa",
    "wind_speed_10m": "km/h",
    "wind_gusts_10m": "km/h",
    "wind_speed_10m_max": "km/h",
}
# Variables whose values are local times (`YYYY-MM-DDTHH:MM`) or null, not numbers.
TIME_VARIABLES = frozenset({"sunrise", "sunset"})
# What the Earth can produce, with a wide margin: beyond these a number is a bug, not weather.
# (Records: -89.2 to 56.7 °C, 1,825 mm of rain in a day, 870 to 1,084 hPa, 408 km/h gusts.)
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature_2m": (-100.0, 70.0),
    "temperature_2m_max": (-100.0, 70.0),
    "temperature_2m_min": (-100.0, 70.0),
    "apparent_temperature": (-120.0, 90.0),
    "relative_humidity_2m": (0.0, 100.0),
    "precipitation": (0.0, 1000.0),
    "precipitation_sum": (0.0, 3000.0),
    "precipitation_probability": (0.0, 100.0),
    "precipitation_probability_max": (0.0, 100.0),
    "weather_code": (0.0, 99.0),  # the WMO 4677 range; unknown codes within it are described as such
    "cloud_cover": (0.0, 100.0),
    "pressure_msl": (800.0, 1100.0),
    "wind_speed_10m": (0.0, 500.0),
    "wind_speed_10m_max": (0.0, 500.0),
    "wind_gusts_10m": (0.0, 500.0),
    "wind_direction_10m": (0.0, 360.0),
    "uv_index_max": (0.0, 50.0),
}
_MAX_OFFSET_SECONDS = 18 * 3600  # ISO 8601's widest offset; real zones span -12 h to +14 h
_TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]{0,63}")  # IANA names, "GMT", "Etc/GMT+5"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MINUTE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")


@dataclass(frozen=True, slots=True)
class _Place:
    """What every part of one location's answer shares."""

    latitude: float
    longitude: float
    timezone: str
    utc_offset_seconds: int
    suffix: str  # the offset as ISO 8601 appends it to a local time, e.g. "+02:00"


def forecast_days(parts: Iterable[Part]) -> int:
    """The horizon a request for `parts` asks for: one day suffices for current values."""
    return FORECAST_DAYS if set(parts) & {Part.DAILY, Part.HOURLY} else 1


def query_params(parts: Iterable[Part]) -> dict[str, str]:
    """The parameters (besides coordinates) that fetch `parts`."""
    params = {"timezone": "auto"}
    wanted = set(parts)
    for part in (Part.CURRENT, Part.HOURLY, Part.DAILY):
        if part in wanted:
            params[part.value] = ",".join(VARIABLES[part].values())
    # The current values do not depend on the horizon; one day weighs least.
    params["forecast_days"] = str(forecast_days(wanted))
    return params


def request_weight(locations: int, parts: Iterable[Part]) -> float:
    """Open-Meteo's weighted call count: per location max(1, V/10 * max(1, D/14))."""
    wanted = set(parts)
    variables = sum(len(VARIABLES[part]) for part in wanted)
    per_location = max(1.0, variables / 10 * max(1.0, forecast_days(wanted) / 14))
    return locations * per_location


def parse_locations(
    body: Any, count: int, parts: Iterable[Part], *, days: int = FORECAST_DAYS
) -> list[dict[Part, Model]]:
    """Validate and parse a decoded answer for `count` locations (an object for one, an array for several).

    `days` is the horizon the request asked for: daily columns must hold that many
    days and hourly columns 24 times as many hours. Raises ContractError on any flaw.
    """
    objects = [body] if count == 1 and isinstance(body, dict) else body
    if not isinstance(objects, list) or len(objects) != count:
        raise ContractError(f"expected {count} location(s)")
    wanted = tuple(parts)
    return [_parse_location(obj, index, wanted, days) for index, obj in enumerate(objects)]


def parse_each(
    body: Any, count: int, parts: Iterable[Part], *, days: int = FORECAST_DAYS
) -> list[dict[Part, Model] | ContractError]:
    """`parse_locations`, location by location: a flawed location is its own ContractError, in its place.

    The answer's shape (an array of `count` locations, or one object for one) must
    hold, else ContractError; each location is then validated whole on its own, so a
    bad one spoils nothing of the others.
    """
    objects = [body] if count == 1 and isinstance(body, dict) else body
    if not isinstance(objects, list) or len(objects) != count:
        raise ContractError(f"expected {count} location(s)")
    wanted = tuple(parts)
    parsed: list[dict[Part, Model] | ContractError] = []
    for index, obj in enumerate(objects):
        try:
            parsed.append(_parse_location(obj, index, wanted, days))
        except ContractError as exc:
            parsed.append(exc)
    return parsed


def _parse_location(obj: Any, index: int, parts: tuple[Part, ...], days: int) -> dict[Part, Model]:
    try:
        if not isinstance(obj, dict):
            raise ContractError("not an object")
        # Open-Meteo labels every location after the first with its index, in request order.
        if obj.get("location_id", 0) != index:
            raise ContractError(f"location_id {obj.get('location_id')!r} out of order")
        place = _place(obj)
        parsed: dict[Part, Model] = {}
        for part in parts:
            section = _section(obj, part)
            if part is Part.CURRENT:
                parsed[part] = _parse_current(section, place)
            elif part is Part.DAILY:
                parsed[part] = _parse_daily(section, place, days)
            else:
                parsed[part] = _parse_hourly(section, place, days)
        daily, hourly = parsed.get(Part.DAILY), parsed.get(Part.HOURLY)
        if isinstance(daily, Daily) and isinstance(hourly, Hourly) and not hourly.time[0].startswith(daily.date[0]):
            raise ContractError("hourly and daily start on different days")
    except (ContractError, OverflowError) as exc:  # overflow: date arithmetic on a year like 9999
        raise ContractError(f"location {index}: {exc}") from None
    return parsed


def _place(obj: Mapping[str, Any]) -> _Place:
    latitude, longitude = obj.get("latitude"), obj.get("longitude")
    if not (_is_number(latitude) and -90 <= latitude <= 90 and _is_number(longitude) and -180 <= longitude <= 180):
        raise ContractError("latitude or longitude missing or out of range")
    offset, timezone = obj.get("utc_offset_seconds"), obj.get("timezone")
    if not (type(offset) is int and abs(offset) <= _MAX_OFFSET_SECONDS and offset % 60 == 0):
        raise ContractError(f"utc_offset_seconds {offset!r} is not a whole-minute offset within ±18 h")
    if not (isinstance(timezone, str) and _TIMEZONE.fullmatch(timezone)):
        raise ContractError(f"timezone {timezone!r} is not a time zone name")
    return _Place(latitude, longitude, timezone, offset, _offset_suffix(offset))


def _section(obj: Mapping[str, Any], part: Part) -> Mapping[str, Any]:
    section = obj.get(part.value)
    units = obj.get(f"{part.value}_units")
    if not isinstance(section, dict) or not isinstance(units, dict):
        raise ContractError(f"missing section {part.value}")
    for variable in VARIABLES[part].values():
        expected = EXPECTED_UNITS.get(variable)
        if expected is not None and units.get(variable) != expected:
            raise ContractError(f"unexpected unit {units.get(variable)!r} for {variable}")
        if variable not in section:
            raise ContractError(f"{part.value}.{variable} missing")
    return section


def _parse_current(section: Mapping[str, Any], place: _Place) -> Current:
    time = section.get("time")
    moment = _minute(time, "current.time")
    values = {
        field: _numbers([section[variable]], Part.CURRENT, variable)[0] for field, variable in CURRENT_VARIABLES.items()
    }
    if all(value is None for value in values.values()):
        raise ContractError("current holds no values")
    if "is_day" in section:
        if section["is_day"] not in (0, 1) or isinstance(section["is_day"], bool):
            raise ContractError("current.is_day is neither 0 nor 1")
        is_day = bool(section["is_day"])
    else:
        is_day = _is_day(moment, place)
    return Current(time=_local(str(time), place.suffix), is_day=is_day, **values)


def _parse_daily(section: Mapping[str, Any], place: _Place, days: int) -> Daily:
    times = section.get("time")
    if not (isinstance(times, list) and len(times) == days and isinstance(times[0], str)):
        raise ContractError(f"daily.time does not hold {days} days")
    if tuple(times) != _day_labels(times[0], days):
        raise ContractError("daily.time is not consecutive YYYY-MM-DD dates")
    columns = _columns(section, Part.DAILY, days)
    for field in ("sunrise", "sunset"):
        columns[field] = [None if t is None else _local(t, place.suffix) for t in columns[field]]
    return Daily(timezone=place.timezone, utc_offset_seconds=place.utc_offset_seconds, date=list(times), **columns)


def _parse_hourly(section: Mapping[str, Any], place: _Place, days: int) -> Hourly:
    hours = days * 24
    times = section.get("time")
    if not (isinstance(times, list) and len(times) == hours and isinstance(times[0], str)):
        raise ContractError(f"hourly.time does not hold {hours} hours")
    if tuple(times) != _hour_labels(times[0], hours):
        raise ContractError("hourly.time is not consecutive YYYY-MM-DDTHH:MM hours from midnight")
    columns = _columns(section, Part.HOURLY, hours)
    return Hourly(
        timezone=place.timezone,
        utc_offset_seconds=place.utc_offset_seconds,
        time=[_local(t, place.suffix) for t in times],
        **columns,
    )


def _columns(section: Mapping[str, Any], part: Part, length: int) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for field, variable in VARIABLES[part].items():
        where = f"{part.value}.{variable}"
        column = section[variable]
        if not isinstance(column, list) or len(column) != length:
            raise ContractError(f"{where} is not a list of {length} values")
        if variable in TIME_VARIABLES:
            for value in column:
                if value is not None:
                    _minute(value, where)
        else:
            column = _numbers(column, part, variable)
        columns[field] = column
    weather = [column for field, column in columns.items() if VARIABLES[part][field] not in TIME_VARIABLES]
    if all(value is None for column in weather for value in column):
        raise ContractError(f"{part.value} holds no values")
    return columns


def _numbers(column: list[Any], part: Part, variable: str) -> list[Any]:
    """The column itself if every value is null or a finite, plausible number (weather codes made ints)."""
    where = f"{part.value}.{variable}"
    present = [value for value in column if value is not None]
    if not present:
        return column
    # exact types: a bool is an int to Python but not a number in this contract
    if not all(type(value) is int or type(value) is float for value in present):
        raise ContractError(f"{where} holds non-numbers")
    low, high = PLAUSIBLE[variable]
    if not all(map(math.isfinite, present)) or min(present) < low or max(present) > high:
        raise ContractError(f"{where} holds values outside {low:g}..{high:g}")
    if variable == "weather_code":
        if not all(type(value) is int or value.is_integer() for value in present):
            raise ContractError(f"{where} holds non-integers")
        return [None if value is None else int(value) for value in column]
    return column


def _minute(value: Any, where: str) -> datetime:
    if not (isinstance(value, str) and _MINUTE.fullmatch(value)):
        raise ContractError(f"{where} is not a YYYY-MM-DDTHH:MM time")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ContractError(f"{where} {value!r} is not a valid time") from None


# Every location of a batch starts on the same day or the one beside it, so these
# expected sequences are built a few times per batch, not once per location.
@lru_cache(maxsize=64)
def _day_labels(first: str, count: int) -> tuple[str, ...]:
    if not _DATE.fullmatch(first):
        raise ContractError("daily.time is not YYYY-MM-DD dates")
    try:
        start = date.fromisoformat(first)
    except ValueError:
        raise ContractError(f"daily.time {first!r} is not a valid date") from None
    return tuple((start + timedelta(days=offset)).isoformat() for offset in range(count))


@lru_cache(maxsize=64)
def _hour_labels(first: str, count: int) -> tuple[str, ...]:
    start = _minute(first, "hourly.time")
    if (start.hour, start.minute) != (0, 0):
        raise ContractError("hourly.time does not start at midnight")
    return tuple((start + timedelta(hours=offset)).isoformat(timespec="minutes") for offset in range(count))


def _is_day(local_time: datetime, place: _Place) -> bool:
    """Is the sun up (its centre above -0.833°, the sunrise convention) at this step?"""
    moment = local_time.replace(tzinfo=UTC) - timedelta(seconds=place.utc_offset_seconds)
    observer = Observer(place.latitude, place.longitude)
    return bool(sun.elevation(observer, moment, with_refraction=False) > _SUNRISE_ALTITUDE)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return (type(value) is int or type(value) is float) and math.isfinite(value)


def _offset_suffix(offset_seconds: int) -> str:
    sign = "+" if offset_seconds >= 0 else "-"
    minutes = abs(offset_seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _local(time: str, suffix: str) -> str:
    return time + suffix
