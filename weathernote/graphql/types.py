"""GraphQL object types, built from cache entries with plain attributes.

Leaf fields are plain attributes (no per-field resolvers): an async or method
resolver per field costs several times more at volume.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TypeAlias

import strawberry

from weathernote.graphql.errors import bad_user_input
from weathernote.model import conditions
from weathernote.model import units as convert
from weathernote.model.cells import Cell as GridCell
from weathernote.model.entries import Current, Daily, Hourly
from weathernote.model.units import Units as UnitSystem

# strawberry.enum registers the GraphQL enum on the class itself; the alias keeps it a type for mypy
strawberry.enum(UnitSystem, name="Units", description="Unit system of the values")
Units: TypeAlias = UnitSystem


@strawberry.type(description="A grid cell: the rounded point a whole neighbourhood shares")
class Cell:
    """GraphQL `Cell`: the centre of the grid cell a point rounds to."""

    lat: float
    lon: float

    @classmethod
    def of(cls, cell: GridCell) -> Cell:
        return cls(lat=cell.lat, lon=cell.lon)


@strawberry.type(description="A WMO weather interpretation code and its meaning")
class Condition:
    """GraphQL `Condition`: a WMO code and its description."""

    code: int | None
    description: str

    @classmethod
    def of(cls, code: int | None) -> Condition:
        return cls(code=code, description=conditions.describe(code))


@strawberry.type(description="Conditions now, at a 15-minute step")
class CurrentWeather:
    """GraphQL `CurrentWeather`, converted to the units asked for."""

    cell: Cell
    time: datetime = strawberry.field(description="Observation time, local with its UTC offset")
    temperature: float | None = strawberry.field(description="Air temperature at 2 m (°C or °F)")
    apparent_temperature: float | None = strawberry.field(description="Feels-like temperature")
    humidity: float | None = strawberry.field(description="Relative humidity at 2 m, %")
    precipitation: float | None = strawberry.field(description="Past 15 minutes (mm or inch)")
    weather_code: int | None = strawberry.field(description="WMO code")
    condition: Condition
    cloud_cover: float | None = strawberry.field(description="Total cloud cover, %")
    pressure: float | None = strawberry.field(description="Sea-level pressure, hPa")
    wind_speed: float | None = strawberry.field(description="Wind at 10 m (km/h or mph)")
    wind_direction: float | None = strawberry.field(description="Wind direction, degrees")
    wind_gusts: float | None = strawberry.field(description="Gusts at 10 m (km/h or mph)")
    is_day: bool | None
    units: Units
    cached: bool = strawberry.field(description="Answered from the cache")
    stale: bool = strawberry.field(description="Past its freshness, served because the weather provider failed")
    fetched_at: datetime = strawberry.field(description="When the provider was asked")
    next_update_at: datetime = strawberry.field(
        description="When the provider can have newer values: until then, asking again answers the same"
    )

    @classmethod
    def build(
        cls,
        cell: GridCell,
        model: Current,
        units: UnitSystem,
        *,
        cached: bool,
        stale: bool,
        fetched_at_ms: int,
        next_update_ms: int,
    ) -> CurrentWeather:
        return cls(
            cell=Cell.of(cell),
            time=datetime.fromisoformat(model.time),
            temperature=convert.temperature(model.temperature, units),
            apparent_temperature=convert.temperature(model.apparent_temperature, units),
            humidity=model.humidity,
            precipitation=convert.precipitation(model.precipitation, units),
            weather_code=model.weather_code,
            condition=Condition.of(model.weather_code),
            cloud_cover=model.cloud_cover,
            pressure=model.pressure,
            wind_speed=convert.speed(model.wind_speed, units),
            wind_direction=model.wind_direction,
            wind_gusts=convert.speed(model.wind_gusts, units),
            is_day=model.is_day,
            units=units,
            cached=cached,
            stale=stale,
            fetched_at=utc_from_ms(fetched_at_ms),
            next_update_at=utc_from_ms(next_update_ms),
        )


@strawberry.type(description="One local day of the forecast")
class DailyForecast:
    """GraphQL `DailyForecast`: one local day."""

    date: date
    temperature_max: float | None
    temperature_min: float | None
    precipitation_sum: float | None
    precipitation_probability_max: float | None
    weather_code: int | None
    condition: Condition
    sunrise: datetime | None
    sunset: datetime | None
    wind_speed_max: float | None
    uv_index_max: float | None


@strawberry.type(description="One hour of the forecast")
class HourlyForecast:
    """GraphQL `HourlyForecast`: one hour."""

    time: datetime
    temperature: float | None
    precipitation_probability: float | None
    weather_code: int | None
    wind_speed: float | None


MAX_HOURS_PER_DAY = 24


@strawberry.type(description="Daily and hourly forecast for a cell")
class Forecast:
    """GraphQL `Forecast`: the daily and hourly parts read, with the cache's flags."""

    cell: Cell
    timezone: str | None = strawberry.field(description="IANA zone (or GMT offset) of the local times")
    days: int
    units: Units
    daily: list[DailyForecast]
    cached: bool = strawberry.field(description="Every part read was answered from the cache")
    stale: bool = strawberry.field(description="A part read is past its freshness (provider failed)")
    fetched_at: datetime | None = strawberry.field(description="When the oldest part read was fetched")
    next_update_at: datetime | None = strawberry.field(
        description="When the provider can have newer values of a part read (the earliest)"
    )
    # the hourly entry read (None when the selection needs none), its rows built only as far as asked
    hourly_model: strawberry.Private[Hourly | None]

    @strawberry.field(description="Hourly steps from local midnight today; hours 1..24×days, default 24")
    def hourly(self, hours: int | None = 24) -> list[HourlyForecast]:
        hours = 24 if hours is None else hours
        if not 1 <= hours <= self.days * MAX_HOURS_PER_DAY:
            raise bad_user_input(f"hours must be between 1 and {self.days * MAX_HOURS_PER_DAY}")
        return [] if self.hourly_model is None else hourly_rows(self.hourly_model, hours, self.units)


def daily_rows(model: Daily, days: int, units: UnitSystem) -> list[DailyForecast]:
    return [
        DailyForecast(
            date=date.fromisoformat(model.date[i]),
            temperature_max=convert.temperature(model.temperature_max[i], units),
            temperature_min=convert.temperature(model.temperature_min[i], units),
            precipitation_sum=convert.precipitation(model.precipitation_sum[i], units),
            precipitation_probability_max=model.precipitation_probability_max[i],
            weather_code=model.weather_code[i],
            condition=Condition.of(model.weather_code[i]),
            sunrise=_local(model.sunrise[i]),
            sunset=_local(model.sunset[i]),
            wind_speed_max=convert.speed(model.wind_speed_max[i], units),
            uv_index_max=model.uv_index_max[i],
        )
        for i in range(min(days, len(model.date)))
    ]


def hourly_rows(model: Hourly, hours: int, units: UnitSystem) -> list[HourlyForecast]:
    """The first `hours` rows (as many as the entry holds)."""
    return [
        HourlyForecast(
            time=datetime.fromisoformat(model.time[i]),
            temperature=convert.temperature(model.temperature[i], units),
            precipitation_probability=model.precipitation_probability[i],
            weather_code=model.weather_code[i],
            wind_speed=convert.speed(model.wind_speed[i], units),
        )
        for i in range(min(hours, len(model.time)))
    ]


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _local(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
