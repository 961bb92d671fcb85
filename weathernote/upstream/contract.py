"""What we ask Open-Meteo for and how its answers map onto our entries.

Open-Meteo weighs a request by its variables and days (see `request_weight`),
so each part asks for exactly the variables the GraphQL schema exposes and no
more: a current-only query never pays for a forecast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from astral import Observer, sun

from weathernote.entries import FORECAST_DAYS, Current, Daily, Hourly, Model, Part

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


class ContractError(ValueError):
    """An upstream answer that does not have the shape we rely on."""


def query_params(parts: Iterable[Part]) -> dict[str, str]:
    """The parameters (besides coordinates) that fetch `parts`."""
    params = {"timezone": "auto"}
    wanted = set(parts)
    for part in (Part.CURRENT, Part.HOURLY, Part.DAILY):
        if part in wanted:
            params[part.value] = ",".join(VARIABLES[part].values())
    if wanted & {Part.DAILY, Part.HOURLY}:
        params["forecast_days"] = str(FORECAST_DAYS)
    else:
        # The current values do not depend on the horizon; one day weighs least.
        params["forecast_days"] = "1"
    return params


def request_weight(locations: int, parts: Iterable[Part]) -> float:
    """Open-Meteo's weighted call count: per location max(1, V/10 * max(1, D/14))."""
    wanted = set(parts)
    variables = sum(len(VARIABLES[part]) for part in wanted)
    days = FORECAST_DAYS if wanted & {Part.DAILY, Part.HOURLY} else 1
    per_location = max(1.0, variables / 10 * max(1.0, days / 14))
    return locations * per_location


def parse_locations(body: Any, count: int, parts: Iterable[Part]) -> list[dict[Part, Model]]:
    """Parse a decoded answer for `count` locations (an object for one, an array for several)."""
    objects = [body] if count == 1 and isinstance(body, dict) else body
    if not isinstance(objects, list) or len(objects) != count:
        raise ContractError(f"expected {count} location(s)")
    wanted = tuple(parts)
    return [{part: _parse_part(obj, part) for part in wanted} for obj in objects]


def _parse_part(obj: Any, part: Part) -> Model:
    if not isinstance(obj, dict):
        raise ContractError("location is not an object")
    offset = obj.get("utc_offset_seconds")
    timezone = obj.get("timezone")
    if not isinstance(offset, int) or not isinstance(timezone, str):
        raise ContractError("missing timezone or utc_offset_seconds")
    section = obj.get(part.value)
    units = obj.get(f"{part.value}_units")
    if not isinstance(section, dict) or not isinstance(units, dict):
        raise ContractError(f"missing section {part.value}")
    _check_units(units, VARIABLES[part].values())
    suffix = _offset_suffix(offset)
    if part is Part.CURRENT:
        return _parse_current(section, suffix, offset, obj.get("latitude"), obj.get("longitude"))
    columns = _columns(section, VARIABLES[part])
    times = columns.pop("time")
    if part is Part.DAILY:
        for name in ("sunrise", "sunset"):
            columns[name] = [_local(t, suffix) if isinstance(t, str) else None for t in columns[name]]
        return Daily(timezone=timezone, utc_offset_seconds=offset, date=_strings(times), **columns)
    return Hourly(
        timezone=timezone,
        utc_offset_seconds=offset,
        time=[_local(t, suffix) for t in _strings(times)],
        **columns,
    )


def _parse_current(section: Mapping[str, Any], suffix: str, offset: int, lat: Any, lon: Any) -> Current:
    time = section.get("time")
    if not isinstance(time, str):
        raise ContractError("current.time is not a string")
    values = {field: section.get(variable) for field, variable in VARIABLES[Part.CURRENT].items()}
    for field, value in values.items():
        if value is not None and not _is_number(value):
            raise ContractError(f"current.{field} is not a number")
    code = values.pop("weather_code")
    return Current(
        time=_local(time, suffix),
        is_day=_is_day(time, offset, lat, lon) if "is_day" not in section else bool(section["is_day"]),
        weather_code=None if code is None else int(code),
        **values,
    )


def _is_day(local_time: str, offset: int, lat: Any, lon: Any) -> bool | None:
    """Is the sun up (its centre above -0.833°, the sunrise convention) at this step?"""
    if not (_is_number(lat) and _is_number(lon)):
        return None
    try:
        moment = datetime.fromisoformat(local_time).replace(tzinfo=UTC) - timedelta(seconds=offset)
    except ValueError as exc:
        raise ContractError("current.time is not ISO 8601") from exc
    return bool(sun.elevation(Observer(lat, lon), moment, with_refraction=False) > _SUNRISE_ALTITUDE)


def _columns(section: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, list[Any]]:
    times = section.get("time")
    if not isinstance(times, list) or not times:
        raise ContractError("time column missing or empty")
    columns: dict[str, list[Any]] = {"time": times}
    for field, variable in variables.items():
        column = section.get(variable)
        if not isinstance(column, list) or len(column) != len(times):
            raise ContractError(f"column {variable} missing or of the wrong length")
        if variable in ("sunrise", "sunset"):
            if not all(v is None or isinstance(v, str) for v in column):
                raise ContractError(f"column {variable} holds non-strings")
        elif not all(v is None or _is_number(v) for v in column):
            raise ContractError(f"column {variable} holds non-numbers")
        if variable == "weather_code":
            column = [None if v is None else int(v) for v in column]
        columns[field] = column
    return columns


def _check_units(units: Mapping[str, Any], variables: Iterable[str]) -> None:
    for variable in variables:
        expected = EXPECTED_UNITS.get(variable)
        if expected is not None and units.get(variable) != expected:
            raise ContractError(f"unexpected unit {units.get(variable)!r} for {variable}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(values: Sequence[Any]) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise ContractError("time column holds non-strings")
    return list(values)


def _offset_suffix(offset_seconds: int) -> str:
    sign = "+" if offset_seconds >= 0 else "-"
    minutes = abs(offset_seconds) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _local(time: str, suffix: str) -> str:
    return time + suffix
