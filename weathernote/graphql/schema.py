"""The GraphQL schema: resolvers that turn arguments into cells and delegate to the service."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info

from weathernote.cache.service import Reading
from weathernote.errors import UpstreamError
from weathernote.graphql.context import Context, check_days
from weathernote.graphql.errors import cell_error, mask_internal
from weathernote.graphql.extensions import schema_extensions
from weathernote.graphql.selection import forecast_parts
from weathernote.graphql.types import (
    Cell,
    CurrentWeather,
    Forecast,
    Units,
    daily_rows,
    utc_from_ms,
)
from weathernote.model.cells import Cell as GridCell
from weathernote.model.entries import FORECAST_DAYS, Current, Daily, Hourly, Part
from weathernote.model.units import Units as UnitSystem


def build_current(cell: GridCell, reading: Reading, units: UnitSystem) -> CurrentWeather:
    model = reading.entry.model
    assert isinstance(model, Current)
    return CurrentWeather.build(
        cell,
        model,
        units,
        cached=reading.cached,
        stale=reading.stale,
        fetched_at_ms=reading.entry.fetched_at_ms,
        next_update_ms=reading.entry.next_update_ms,
    )


def build_area_cell(cell: GridCell, answer: Reading | UpstreamError, units: UnitSystem) -> Any:
    """A box's cell: its current weather, or the error that stands in its place (naming the cell)."""
    if isinstance(answer, Reading):
        return build_current(cell, answer, units)
    return cell_error(answer, cell.lat, cell.lon)


_AREA = (
    "every cell whose centre lies in the box (edges included), south to north and west to east; "
    "west <= east (a box does not cross the antimeridian: ask for west..180 and -180..east); at most "
    "WEATHERNOTE_AREA_MAX_CELLS cells (100 by default), each charged as one read"
)


def build_forecast(cell: GridCell, readings: Mapping[Part, Reading], days: int, units: UnitSystem) -> Forecast:
    daily = readings.get(Part.DAILY)
    hourly = readings.get(Part.HOURLY)
    timezone = None
    if daily is not None:
        assert isinstance(daily.entry.model, Daily)
        timezone = daily.entry.model.timezone
    if hourly is not None:
        assert isinstance(hourly.entry.model, Hourly)
        timezone = timezone or hourly.entry.model.timezone
    read = list(readings.values())
    return Forecast(
        cell=Cell.of(cell),
        timezone=timezone,
        days=days,
        units=units,
        daily=daily_rows(daily.entry.model, days, units) if daily else [],  # type: ignore[arg-type]
        hourly_model=hourly.entry.model if hourly else None,  # type: ignore[arg-type]
        cached=all(r.cached for r in read),
        stale=any(r.stale for r in read),
        fetched_at=utc_from_ms(min(r.entry.fetched_at_ms for r in read)) if read else None,
        next_update_at=utc_from_ms(min(r.entry.next_update_ms for r in read)) if read else None,
    )


@dataclass(frozen=True, slots=True)
class ForecastRequest:
    """A forecast field's arguments, validated, defaulted, and the parts its selection needs."""

    cell: GridCell
    days: int
    units: UnitSystem
    parts: frozenset[Part]

    @classmethod
    def of(
        cls, info: Info[Context, None], lat: float, lon: float, days: int | None, units: UnitSystem | None
    ) -> ForecastRequest:
        cell = info.context.cell(lat, lon)
        days = 7 if days is None else days
        check_days(days)
        parts = forecast_parts(info.selected_fields[0].selections)
        return cls(cell, days, units or UnitSystem.METRIC, parts)


@strawberry.type
class Query:
    """The root query type: current weather and forecasts at a point."""

    @strawberry.field(description="Current weather at a point (rounded to its grid cell)")
    async def current(
        self,
        info: Info[Context, None],
        lat: float,
        lon: float,
        units: Units | None = UnitSystem.METRIC,
    ) -> CurrentWeather:
        cell = info.context.cell(lat, lon)
        units = units or UnitSystem.METRIC
        readings = await info.context.read(cell, frozenset({Part.CURRENT}))
        return build_current(cell, readings[Part.CURRENT], units)

    @strawberry.field(description=f"Forecast at a point for 1..{FORECAST_DAYS} days")
    async def forecast(
        self,
        info: Info[Context, None],
        lat: float,
        lon: float,
        days: int | None = 7,
        units: Units | None = UnitSystem.METRIC,
    ) -> Forecast:
        request = ForecastRequest.of(info, lat, lon, days, units)
        readings = await info.context.read(request.cell, request.parts)
        return build_forecast(request.cell, readings, request.days, request.units)

    @strawberry.field(
        description=f"Current weather of {_AREA}; a cell with nothing to show is null, its error naming it"
    )
    async def current_area(
        self,
        info: Info[Context, None],
        south: float,
        west: float,
        north: float,
        east: float,
        units: Units | None = UnitSystem.METRIC,
    ) -> list[CurrentWeather | None]:
        cells = await info.context.area("currentArea", south, west, north, east)
        answers = await info.context.read_area(cells)
        units = units or UnitSystem.METRIC
        return [build_area_cell(cell, answer, units) for cell, answer in zip(cells, answers)]


@strawberry.type
class Subscription:
    """The root subscription type: a point's weather now, then at every refresh."""

    @strawberry.subscription(description="Current weather at a point now, then at every refresh of its cell")
    async def weather_updates(
        self,
        info: Info[Context, None],
        lat: float,
        lon: float,
        units: Units | None = UnitSystem.METRIC,
    ) -> AsyncGenerator[CurrentWeather, None]:
        cell = info.context.cell(lat, lon)
        async for readings in info.context.updates(cell, frozenset({Part.CURRENT})):
            yield build_current(cell, readings[Part.CURRENT], units or UnitSystem.METRIC)

    @strawberry.subscription(
        description=f"Current weather of {_AREA}: each cell's value now, then each cell's every refresh, "
        "one cell a payload (an error payload names a cell with nothing to show yet)"
    )
    async def weather_updates_in_area(
        self,
        info: Info[Context, None],
        south: float,
        west: float,
        north: float,
        east: float,
        units: Units | None = UnitSystem.METRIC,
    ) -> AsyncGenerator[CurrentWeather, None]:
        cells = await info.context.area("weatherUpdatesInArea", south, west, north, east)
        units = units or UnitSystem.METRIC
        async for cell, answer in info.context.area_updates(cells):
            yield build_area_cell(cell, answer, units)

    @strawberry.subscription(description="The forecast at a point now, then at every refresh")
    async def forecast_updates(
        self,
        info: Info[Context, None],
        lat: float,
        lon: float,
        days: int | None = 7,
        units: Units | None = UnitSystem.METRIC,
    ) -> AsyncGenerator[Forecast, None]:
        request = ForecastRequest.of(info, lat, lon, days, units)
        # something must announce the refreshes, even for a selection of `cell` alone
        async for readings in info.context.updates(request.cell, request.parts or frozenset({Part.DAILY})):
            yield build_forecast(request.cell, readings, request.days, request.units)


def build_root(field: str, cell: GridCell, readings: Mapping[Part, Reading], args: Mapping[str, Any]) -> Any:
    """The object a root field resolves to, for rendering outside resolver execution."""
    units = args.get("units") or UnitSystem.METRIC
    if field in ("current", "weatherUpdates"):
        return build_current(cell, readings[Part.CURRENT], units)
    days = args.get("days")
    return build_forecast(cell, readings, 7 if days is None else days, units)


class Schema(strawberry.Schema):
    """Our schema: runs only documents the Planner passed (CheckedDocument), our failures masked and logged."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """The one rule (graphql.errors.mask_internal), applied to every result Strawberry returns.

        Strawberry calls this for each result, every subscription payload and the
        failures of its own hooks included, before the errors reach anyone. Its
        default would log every error with a traceback: any client could flood the
        log with bad input.
        """
        mask_internal(errors)


def build_schema() -> strawberry.Schema:
    return Schema(
        query=Query,
        subscription=Subscription,
        extensions=schema_extensions(),
        config=StrawberryConfig(disable_field_suggestions=False),
    )


schema = build_schema()
