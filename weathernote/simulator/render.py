"""The JSON writer: compact, fixed key order, unit-driven decimals, as the server streams it by hand.

One location is a bare object; several are an array in which every element
after the first carries `location_id`. Layout per location (§3 of the reference):
latitude, longitude, generationtime_ms, utc_offset_seconds, timezone,
timezone_abbreviation, elevation (if finite), location_id (if not 0),
current_units/current, hourly_units/hourly, daily_units/daily (if requested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

import orjson

from weathernote.simulator.forecast.grid import snap, terrain_height
from weathernote.simulator.forecast.numbers import float32_text
from weathernote.simulator.forecast.timezones import abbreviation
from weathernote.simulator.forecast.units import Kind
from weathernote.simulator.forecast.variables import DAILY, HOURLY, Day
from weathernote.simulator.forecast.weather import DAY, HOUR, Conditions, Site, WeatherModel
from weathernote.simulator.params import ForecastQuery, Location, Selection

CURRENT_INTERVAL = 900  # seconds: the forecast endpoint's 15-minute data
# Downscaling far outside real terrain would leave the physical formulas' domain.
_ELEVATION_RANGE = (-500.0, 9000.0)


def render_forecast(query: ForecastQuery, now: float, model: WeatherModel) -> bytes:
    objects = [_location(query, index, now, model) for index in range(len(query.locations))]
    text = objects[0] if len(objects) == 1 else "[" + ",".join(objects) + "]"
    return text.encode()


class _Hours:
    """Conditions per hour for one location, computed once even when hourly and daily overlap."""

    def __init__(self, model: WeatherModel, site: Site) -> None:
        self._model = model
        self._site = site
        self._cache: dict[int, Conditions] = {}

    def at(self, unix_seconds: int) -> Conditions:
        conditions = self._cache.get(unix_seconds)
        if conditions is None:
            conditions = self._cache[unix_seconds] = self._model.hour(self._site, unix_seconds)
        return conditions


def _location(query: ForecastQuery, index: int, now: float, model: WeatherModel) -> str:
    started = time.perf_counter()
    location = query.locations[index]
    cell = snap(location.latitude, location.longitude)
    elevation = _elevation(location)
    if not math.isfinite(elevation):  # elevation=nan: no downscaling, the cell's own height
        elevation_for_weather = terrain_height(cell.latitude, cell.longitude)
    else:
        elevation_for_weather = min(max(elevation, _ELEVATION_RANGE[0]), _ELEVATION_RANGE[1])
    site = Site(cell, elevation_for_weather)
    offset = location.zone.offset_seconds(now)
    hours = _Hours(model, site)
    clock = _Clock(offset, query.unixtime)

    sections = []
    if query.current is not None:
        sections.append(_current(query, query.current, model, site, now, clock))
    if query.hourly is not None:
        sections.append(_hourly(query, query.hourly, hours, now, clock))
    if query.daily is not None:
        sections.append(_daily(query, query.daily, model, site, hours, now, clock))

    head = [
        f'"latitude":{float32_text(cell.latitude)}',
        f'"longitude":{float32_text(cell.longitude)}',
        f'"generationtime_ms":{(time.perf_counter() - started) * 1000!r}',
        f'"utc_offset_seconds":{offset}',
        f'"timezone":{_string(location.zone.name)}',
        f'"timezone_abbreviation":{_string(abbreviation(offset))}',
    ]
    if math.isfinite(elevation):
        head.append(f'"elevation":{float32_text(elevation)}')
    if index:
        head.append(f'"location_id":{index}')
    return "{" + ",".join(head + sections) + "}"


def _elevation(location: Location) -> float:
    """The requested elevation, else the terrain height at the requested point (not the cell)."""
    if location.elevation is not None:
        return location.elevation
    return terrain_height(location.latitude, location.longitude)


class _Clock:
    """Prints instants as the query wants them: local `YYYY-MM-DDTHH:MM` or unix seconds."""

    def __init__(self, offset: int, unixtime: bool) -> None:
        self.offset = offset
        self.unixtime = unixtime
        self.unit = "unixtime" if unixtime else "iso8601"

    def minute(self, unix_seconds: float) -> str:
        if self.unixtime:
            return str(int(unix_seconds))
        local = int(unix_seconds) + self.offset
        day, seconds = divmod(local, DAY)
        return f'"{_date_text(day)}T{seconds // HOUR:02d}:{seconds % HOUR // 60:02d}"'

    def day(self, local_day: int) -> str:
        if self.unixtime:
            return str(local_day * DAY - self.offset)  # local midnight as a UTC instant
        return f'"{_date_text(local_day)}"'


def _current(
    query: ForecastQuery, selection: Selection, model: WeatherModel, site: Site, now: float, clock: _Clock
) -> str:
    local_step = math.floor((now + clock.offset) / CURRENT_INTERVAL) * CURRENT_INTERVAL
    step = local_step - clock.offset
    conditions = model.current(site, step, CURRENT_INTERVAL)
    units = [("time", clock.unit), ("interval", "seconds")]
    values = [f'"time":{clock.minute(step)}', f'"interval":{CURRENT_INTERVAL}']
    for requested, name in zip(selection.requested, selection.canonical):
        variable = HOURLY[name]
        unit = query.units.format(variable.kind)
        units.append((requested, unit.label))
        values.append(f"{_string(requested)}:{unit.text(variable.value(conditions))}")
    return f'"current_units":{_object(units)},"current":{{{",".join(values)}}}'


def _hourly(query: ForecastQuery, selection: Selection, hours: _Hours, now: float, clock: _Clock) -> str:
    instants = _hourly_instants(query, now, clock.offset)
    rows = [hours.at(t) for t in instants]
    units = [("time", clock.unit)]
    columns = [f'"time":{_array(clock.minute(t) for t in instants)}']
    for requested, name in zip(selection.requested, selection.canonical):
        variable = HOURLY[name]
        unit = query.units.format(variable.kind)
        units.append((requested, unit.label))
        columns.append(f"{_string(requested)}:{_array(unit.text(variable.value(row)) for row in rows)}")
    return f'"hourly_units":{_object(units)},"hourly":{{{",".join(columns)}}}'


def _hourly_instants(query: ForecastQuery, now: float, offset: int) -> list[int]:
    """From local midnight (minus past days), or from the current hour when hours narrow the range."""
    today = math.floor((now + offset) / DAY) * DAY
    end = today + query.forecast_days * DAY
    if query.forecast_hours is None and query.past_hours is None:
        start = today - query.past_days * DAY
    else:
        this_hour = math.floor((now + offset) / HOUR) * HOUR
        start = this_hour - (query.past_hours or 0) * HOUR
        if query.forecast_hours is not None:
            end = this_hour + query.forecast_hours * HOUR
    return [local - offset for local in range(start, end, HOUR)]


def _daily(
    query: ForecastQuery,
    selection: Selection,
    model: WeatherModel,
    site: Site,
    hours: _Hours,
    now: float,
    clock: _Clock,
) -> str:
    today = math.floor((now + clock.offset) / DAY)
    local_days = range(today - query.past_days, today + query.forecast_days)
    days = [
        Day(
            hours=[hours.at(local_day * DAY - clock.offset + hour * HOUR) for hour in range(24)],
            sun=model.sun(site, local_day),
        )
        for local_day in local_days
    ]
    units = [("time", clock.unit)]
    columns = [f'"time":{_array(clock.day(d) for d in local_days)}']
    for requested, name in zip(selection.requested, selection.canonical):
        variable = DAILY[name]
        if variable.kind is Kind.TIME:
            units.append((requested, clock.unit))
            texts = (_optional_minute(clock, variable.value(day)) for day in days)
        else:
            unit = query.units.format(variable.kind)
            units.append((requested, unit.label))
            texts = (unit.text(variable.value(day)) for day in days)
        columns.append(f"{_string(requested)}:{_array(texts)}")
    return f'"daily_units":{_object(units)},"daily":{{{",".join(columns)}}}'


def _optional_minute(clock: _Clock, unix_seconds: float | None) -> str:
    return "null" if unix_seconds is None else clock.minute(unix_seconds)


@lru_cache(maxsize=4096)
def _date_text(local_day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=local_day)).isoformat()


def _string(text: str) -> str:
    return orjson.dumps(text).decode()


def _object(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_string(key)}:{_string(value)}" for key, value in pairs) + "}"


def _array(texts: Iterable[str]) -> str:
    return "[" + ",".join(texts) + "]"
