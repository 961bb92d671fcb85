"""Parameters of /v1/forecast: reading them from a query or body, and validating them like the server.

Checks run in the order of the reference's simulator checklist (§10): coordinates,
time zone, variable names (and the other enumerations), forecast_days,
past_days, forecast/past hours, location count, weight. Reasons are the
server's exact texts, including the forecast_days "Given 16" quirk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from weathernote.simulator.faults.errors import ApiError
from weathernote.simulator.faults.limits import request_weight
from weathernote.simulator.forecast import timezones
from weathernote.simulator.forecast.numbers import float32_text
from weathernote.simulator.forecast.timezones import Zone
from weathernote.simulator.forecast.units import PRECIPITATION_UNITS, TEMPERATURE_UNITS, WIND_SPEED_UNITS, UnitChoice
from weathernote.simulator.forecast.variables import daily_name, hourly_name

Params = dict[str, list[str]]  # raw values per key, one per occurrence

MAX_LOCATIONS = 1000
MAX_WEIGHT = 5000.0
MAX_FORECAST_DAYS = 16
MAX_PAST_DAYS = 93
DEFAULT_FORECAST_DAYS = 7

_CORRUPTED = "Data corrupted at path ''. Cannot initialize {type} from invalid String value {value}."
_HOURLY_TYPE = (
    "SurfacePressureAndHeightVariable<VariableAndPreviousDay, VariableOrSpread<ForecastPressureVariable>, "
    "ForecastHeightVariable>"
)
_DAILY_TYPE = "ForecastVariableDaily"
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class Location:
    """One requested location: its coordinates and time zone."""

    latitude: float
    longitude: float
    elevation: float | None  # None: from the terrain model; NaN: not printed
    zone: Zone


@dataclass(frozen=True, slots=True)
class Selection:
    """Requested variables: spelled as requested (echoed back) and their canonical names."""

    requested: tuple[str, ...]
    canonical: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForecastQuery:
    """A /v1/forecast request's parameters, validated as Open-Meteo validates them."""

    locations: tuple[Location, ...]
    current: Selection | None  # None: section not requested
    hourly: Selection | None
    daily: Selection | None
    forecast_days: int
    past_days: int
    forecast_hours: int | None
    past_hours: int | None
    units: UnitChoice
    unixtime: bool
    weight: float


def from_query_string(pairs: Iterable[tuple[str, str]]) -> Params:
    params: Params = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def from_form(body: bytes) -> Params:
    return from_query_string(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def from_json(body: bytes) -> Params:
    """A JSON object body: values may be scalars, comma strings or arrays of scalars."""
    try:
        document = json.loads(body)
    except ValueError:
        raise ApiError("The given data was not valid JSON.") from None
    if not isinstance(document, dict):
        raise ApiError("Expected to decode Dictionary<String, Any> but found an array or a scalar instead.")
    params: Params = {}
    for key, value in document.items():
        values = value if isinstance(value, list) else [value]
        params[key] = [_json_scalar(key, item) for item in values if item is not None]
    return params


def parse_query(params: Params) -> ForecastQuery:
    """Validate in the server's order; raises ApiError with the server's reason."""
    latitudes = _floats(params, "latitude")
    longitudes = _floats(params, "longitude")
    elevations = _floats(params, "elevation")
    for key, values in (("latitude", latitudes), ("longitude", longitudes)):
        if not values:
            raise ApiError(f"Value of type 'Float' required for key '{key}'.")
    if len(latitudes) != len(longitudes):
        raise ApiError("Parameter 'latitude' and 'longitude' must have the same number of elements")
    if "elevation" in params and len(elevations) != len(latitudes):
        raise ApiError("Parameter 'latitude' and 'elevation' must have the same number of elements")
    for latitude, longitude in zip(latitudes, longitudes):
        if not -90 <= latitude <= 90:
            raise ApiError(f"Latitude must be in range of -90 to 90°. Given: {float32_text(latitude)}.")
        if not -180 <= longitude <= 180:
            raise ApiError(f"Longitude must be in range of -180 to 180°. Given: {float32_text(longitude)}.")
    zones = _zones(params, latitudes, longitudes)

    current = _selection(params, "current", hourly_name, _HOURLY_TYPE)
    hourly = _selection(params, "hourly", hourly_name, _HOURLY_TYPE)
    daily = _selection(params, "daily", daily_name, _DAILY_TYPE)
    models = _items(params, "models")
    if models and any(model != "best_match" for model in models):
        raise ApiError(_CORRUPTED.format(type="MultiDomains", value=_raw(params, "models")))
    units = _units(params)
    unixtime = _choice(params, "timeformat", ("iso8601", "unixtime"), "Timeformat", "iso8601") == "unixtime"
    _choice(params, "cell_selection", ("land", "sea", "nearest"), "GridSelectionMode", "land")

    forecast_days = _int(params, "forecast_days", DEFAULT_FORECAST_DAYS)
    if not 0 <= forecast_days <= MAX_FORECAST_DAYS:
        # The server reports its maximum as the value given (a bug real clients see).
        raise ApiError(f"Forecast days is invalid. Allowed range 0 to {MAX_FORECAST_DAYS}. Given {MAX_FORECAST_DAYS}.")
    past_days = _int(params, "past_days", 0)
    if not 0 <= past_days <= MAX_PAST_DAYS:
        raise ApiError(f"Past days is invalid. Allowed range 0 to {MAX_PAST_DAYS}. Given {past_days}.")
    forecast_hours = _hours(params, "forecast_hours", "Forecast hours", MAX_FORECAST_DAYS * 24)
    past_hours = _hours(params, "past_hours", "Past hours", MAX_PAST_DAYS * 24)

    if len(latitudes) > MAX_LOCATIONS:
        raise ApiError(f"Only up to {MAX_LOCATIONS} locations can be requested at once")
    variables = sum(len(s.requested) for s in (current, hourly, daily) if s is not None)
    weight = request_weight(variables, forecast_days + past_days, len(latitudes))
    if weight > MAX_WEIGHT:
        raise ApiError(
            "Your API call requests too much data. Please reduce the number of variables, locations "
            "and/or weather models."
        )
    return ForecastQuery(
        locations=tuple(
            Location(lat, lon, elevations[i] if elevations else None, zones[i])
            for i, (lat, lon) in enumerate(zip(latitudes, longitudes))
        ),
        current=current,
        hourly=hourly,
        daily=daily,
        forecast_days=forecast_days,
        past_days=past_days,
        forecast_hours=forecast_hours,
        past_hours=past_hours,
        units=units,
        unixtime=unixtime,
        weight=weight,
    )


def summarize(params: Params) -> dict[str, Any]:
    """What a request asked for, without validating it (for the stats endpoint)."""
    forecast_days = _raw(params, "forecast_days")
    return {
        "locations": len(_items(params, "latitude") or ()),
        "current": _items(params, "current") or [],
        "hourly": _items(params, "hourly") or [],
        "daily": _items(params, "daily") or [],
        "forecast_days": (
            DEFAULT_FORECAST_DAYS
            if forecast_days is None
            else int(forecast_days)
            if _INT.fullmatch(forecast_days)
            else None
        ),
    }


def _items(params: Params, key: str) -> list[str] | None:
    """A list parameter: comma lists and repeated keys combined, empty items dropped; None if absent."""
    if key not in params:
        return None
    return [item for value in params[key] for item in value.split(",") if item]


def _raw(params: Params, key: str) -> str | None:
    return ",".join(params[key]) if key in params else None


def _floats(params: Params, key: str) -> list[float]:
    values = []
    for item in _items(params, key) or ():
        if not _FLOAT.fullmatch(item):
            raise ApiError(_CORRUPTED.format(type="Float", value=item))
        values.append(float(item))
    return values


def _int(params: Params, key: str, default: int) -> int:
    raw = _raw(params, key)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):
        raise ApiError(_CORRUPTED.format(type="Int", value=raw))
    return int(raw)


def _hours(params: Params, key: str, label: str, maximum: int) -> int | None:
    if key not in params:
        return None
    hours = _int(params, key, 0)
    if not 0 <= hours <= maximum:
        raise ApiError(f"{label} is invalid. Allowed range 0 to {maximum}. Given {hours}.")
    return hours


def _choice(params: Params, key: str, allowed: Iterable[str], type_name: str, default: str) -> str:
    raw = _raw(params, key)
    if raw is None:
        return default
    if raw not in allowed:
        raise ApiError(_CORRUPTED.format(type=type_name, value=raw))
    return raw


def _units(params: Params) -> UnitChoice:
    temperature = _choice(params, "temperature_unit", TEMPERATURE_UNITS, "TemperatureUnit", "celsius")
    # The legacy spelling wins when both are given, as on the server.
    wind_key = "windspeed_unit" if "windspeed_unit" in params else "wind_speed_unit"
    wind_speed = _choice(params, wind_key, WIND_SPEED_UNITS, "WindspeedUnit", "kmh")
    imperial = _choice(params, "length_unit", ("metric", "imperial"), "LengthUnit", "metric") == "imperial"
    precipitation = _choice(
        params, "precipitation_unit", PRECIPITATION_UNITS, "PrecipitationUnit", "inch" if imperial else "mm"
    )
    return UnitChoice(temperature, wind_speed, precipitation)


def _selection(params: Params, key: str, resolve: Callable[[str], str | None], type_name: str) -> Selection | None:
    requested = _items(params, key)
    if requested is None:
        return None
    canonical = [resolve(name) for name in requested]
    if None in canonical:
        # The server echoes the whole list, not just the unknown name.
        raise ApiError(_CORRUPTED.format(type=type_name, value=_raw(params, key)))
    return Selection(tuple(requested), tuple(name for name in canonical if name is not None))


def _zones(params: Params, latitudes: list[float], longitudes: list[float]) -> list[Zone]:
    names = _items(params, "timezone") or [timezones.DEFAULT]
    if len(names) not in (1, len(latitudes)):
        raise ApiError("Parameter 'latitude' and 'timezone' must have the same number of elements")
    zones = []
    for index, (latitude, longitude) in enumerate(zip(latitudes, longitudes)):
        name = names[index if len(names) > 1 else 0]
        zone = timezones.automatic(latitude, longitude) if name == timezones.AUTO else timezones.named(name)
        if zone is None:
            raise ApiError("Invalid timezone")
        zones.append(zone)
    return zones


def _json_scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value if isinstance(value, str) else repr(value)
    raise ApiError(f"Data corrupted at path '{key}'. Expected a string, a number or an array of them.")
