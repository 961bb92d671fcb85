"""REST compatibility routes for app versions that predate GraphQL (the seed design's JSON)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from weathernote.cache import Reading, WeatherService
from weathernote.clock import Clock
from weathernote.errors import BadRequest, ShareSpent, UpstreamUnavailable
from weathernote.fairuse import Admission
from weathernote.http.caching import NO_STORE, Validity, entity_tag
from weathernote.http.querystring import query_params
from weathernote.model import FORECAST_DAYS, Cell, Current, Daily, Grid, InvalidCoordinates, Part, conditions
from weathernote.ops import requestlog
from weathernote.upstream import Payer


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message}}, {**NO_STORE, **(headers or {})})


def _number(request: Request, name: str) -> float:
    text = query_params(request).get(name)
    if text is None:
        raise BadRequest(f"query parameter `{name}` is required")
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"`{name}` must be a number, got {text[:32]!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"`{name}` must be a finite number")
    return value


def _cell(request: Request, grid: Grid) -> Cell:
    try:
        return grid.cell(_number(request, "lat"), _number(request, "lon"))
    except InvalidCoordinates as exc:
        raise BadRequest(str(exc)) from None


def _days(request: Request) -> int:
    text = query_params(request).get("days", "7")
    try:
        days = int(text)
    except ValueError:
        raise BadRequest(f"`days` must be an integer, got {text[:32]!r}") from None
    if not 1 <= days <= FORECAST_DAYS:
        raise BadRequest(f"`days` must be between 1 and {FORECAST_DAYS}, got {days}")
    return days


def _meta(cell: Cell, readings: list[Reading]) -> dict[str, Any]:
    return {
        "location": {"lat": cell.lat, "lon": cell.lon},
        "cached": all(r.cached for r in readings),
        "stale": any(r.stale for r in readings),
        "fetched_at": min(r.entry.fetched_at_ms for r in readings) / 1000,
        "next_update_at": min(r.entry.next_update_ms for r in readings) / 1000,
    }


def current_body(cell: Cell, reading: Reading) -> dict[str, Any]:
    model = reading.entry.model
    assert isinstance(model, Current)
    return {
        **_meta(cell, [reading]),
        "units": {"temperature": "°C", "wind_speed": "km/h", "precipitation": "mm", "pressure": "hPa"},
        "current": {
            "time": model.time,
            "temperature": model.temperature,
            "apparent_temperature": model.apparent_temperature,
            "humidity": model.humidity,
            "precipitation": model.precipitation,
            "weather_code": model.weather_code,
            "condition": conditions.describe(model.weather_code),
            "cloud_cover": model.cloud_cover,
            "pressure": model.pressure,
            "wind_speed": model.wind_speed,
            "wind_direction": model.wind_direction,
            "wind_gusts": model.wind_gusts,
            "is_day": model.is_day,
        },
    }


def forecast_body(cell: Cell, reading: Reading, days: int) -> dict[str, Any]:
    model = reading.entry.model
    assert isinstance(model, Daily)
    count = min(days, len(model.date))
    return {
        **_meta(cell, [reading]),
        "timezone": model.timezone,
        "days": days,
        "daily": [
            {
                "date": model.date[i],
                "temperature_max": model.temperature_max[i],
                "temperature_min": model.temperature_min[i],
                "precipitation_sum": model.precipitation_sum[i],
                "precipitation_probability_max": model.precipitation_probability_max[i],
                "weather_code": model.weather_code[i],
                "condition": conditions.describe(model.weather_code[i]),
                "sunrise": model.sunrise[i],
                "sunset": model.sunset[i],
                "wind_speed_max": model.wind_speed_max[i],
                "uv_index_max": model.uv_index_max[i],
            }
            for i in range(count)
        ],
    }


class RestRoutes:
    """GET /api/v1/weather and /api/v1/forecast, answered by the same service as GraphQL."""

    def __init__(self, weather: WeatherService, grid: Grid, admission: Admission, clock: Clock) -> None:
        self.weather_service = weather
        self.grid = grid
        self.admission = admission
        self.clock = clock

    async def weather(self, request: Request) -> Response:
        return await self._answer(request, "current", Part.CURRENT)

    async def forecast(self, request: Request) -> Response:
        return await self._answer(request, "forecast", Part.DAILY)

    async def _answer(self, request: Request, operation: str, part: Part) -> Response:
        # labelled like the GraphQL root field it stands in for; transport="rest" tells them apart
        requestlog.note(operation=operation)
        cell: Cell | None = None
        try:
            cell = _cell(request, self.grid)
            days = _days(request) if part is Part.DAILY else 0
        except BadRequest as exc:
            problem: BadRequest | None = exc
        else:
            problem = None
        # one Redis round trip decides the limit and reads the entry (a refused request counts too)
        admission = self.admission
        identity = admission.identity(request.client.host if request.client else None, request.headers)
        read_keys = self.weather_service.entry_keys(cell, [part]) if cell else ()
        decision, raws = await admission.check(identity, read_keys=read_keys)
        headers = admission.headers(decision)
        if not decision.allowed:
            return error(429, "RATE_LIMITED", f"too many requests: retry in {decision.retry_after_seconds} s", headers)
        if problem is not None or cell is None:
            return error(400, "BAD_USER_INPUT", str(problem), headers)
        try:
            readings = await self.weather_service.read(
                cell, (part,), raws, payer=Payer(identity.client, identity.address)
            )
        except ShareSpent as exc:
            retry = str(max(1, math.ceil(exc.retry_after)))
            return error(
                429,
                "RATE_LIMITED",
                f"this client's share of the provider's budget is spent: retry in {retry} s",
                {**headers, "Retry-After": retry},
            )
        except UpstreamUnavailable:
            return error(
                503,
                "UPSTREAM_UNAVAILABLE",
                "the weather provider is unavailable and nothing is cached for this place",
                {**headers, "Retry-After": "30"},
            )
        reading = readings[part]
        body = orjson.dumps(current_body(cell, reading) if part is Part.CURRENT else forecast_body(cell, reading, days))
        validity = Validity(reading.entry.fetched_at_ms, reading.entry.next_update_ms, reading.stale)
        etag = entity_tag(body)
        headers.update(validity.headers(etag, self.clock.now_ms()))
        if validity.unchanged_for(request.headers, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)
