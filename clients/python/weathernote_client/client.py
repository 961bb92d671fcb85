"""The client: queries over HTTP by Automatic Persisted Query, live updates over WebSocket."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from weathernote_client._version import __version__
from weathernote_client.errors import (
    PERSISTED_QUERY_NOT_FOUND,
    ConnectionFailed,
    OperationRefused,
    RateLimited,
    ServerError,
    WeatherNoteClientError,
    error_from_graphql,
)
from weathernote_client.live import LiveOperation, T, watch
from weathernote_client.models import CurrentWeather, Forecast, Units
from weathernote_client.operations import CURRENT_WEATHER, FORECAST, FORECAST_UPDATES, WEATHER_UPDATES, Operation
from weathernote_client.retry import RetryPolicy
from weathernote_client.sse import watch_sse

DEFAULT_URL = "http://127.0.0.1:8000"
ACCEPT = "application/graphql-response+json, application/json;q=0.9"
_COMPACT = (",", ":")
Transport = Literal["websocket", "sse"]


class WeatherNoteClient:
    """An async client of one WeatherNote server (its base URL, e.g. `http://127.0.0.1:8000`).

    `client_id` (a device UUID) is sent as `x-client-id`, the identity the server's
    rate limit counts. Queries are sent by hash first (`GET /graphql`, cacheable),
    then by text when the server answers PERSISTED_QUERY_NOT_FOUND; they are retried
    by `retry`. Use it as `async with WeatherNoteClient(url) as client:`, or call
    `aclose()`.

    Watches go over WebSocket (`graphql-transport-ws`), or with `transport="sse"` over
    Server-Sent Events (graphql-sse, one `POST /graphql` stream per watch), for networks
    that drop WebSockets; both reconnect and never yield the same update twice.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        client_id: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        transport: Transport = "websocket",
    ) -> None:
        if transport not in ("websocket", "sse"):
            raise ValueError(f"transport is 'websocket' or 'sse', not {transport!r}")
        self.transport = transport
        base = url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.graphql_url = f"{base}/graphql"
        self.websocket_url = f"{'wss' if parts.scheme == 'https' else 'ws'}{self.graphql_url[len(parts.scheme) :]}"
        self.retry = retry or RetryPolicy()
        self.headers = {"user-agent": f"weathernote-client/{__version__}"}
        if client_id is not None:
            self.headers["x-client-id"] = client_id
        self._http = httpx.AsyncClient(headers={**self.headers, "accept": ACCEPT}, timeout=timeout)

    async def __aenter__(self) -> WeatherNoteClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (watches close their own sockets when their iteration ends)."""
        await self._http.aclose()

    async def current(self, lat: float, lon: float, units: Units = Units.METRIC) -> CurrentWeather:
        """Current weather at a position (answered for its cell)."""
        data = await self._query(CURRENT_WEATHER, {"lat": lat, "lon": lon, "units": units.value})
        return CurrentWeather.from_json(data.get("current"))

    async def forecast(
        self, lat: float, lon: float, days: int = 7, hours: int = 24, units: Units = Units.METRIC
    ) -> Forecast:
        """`days` local days (1..16) and the first `hours` hours from local midnight today (1..24×days)."""
        variables = {"lat": lat, "lon": lon, "days": days, "hours": hours, "units": units.value}
        data = await self._query(FORECAST, variables)
        return Forecast.from_json(data.get("forecast"))

    def watch_current(
        self, lat: float, lon: float, units: Units = Units.METRIC
    ) -> AsyncGenerator[CurrentWeather, None]:
        """The current weather now, then at every refresh of its cell, never the same update twice.

        Reconnects (with backoff) for as long as it is iterated; stop it by cancelling, or
        by leaving an `async with contextlib.aclosing(...)` block.
        """
        live = LiveOperation(WEATHER_UPDATES, "weatherUpdates", CurrentWeather.from_json)
        return self._watch(live, {"lat": lat, "lon": lon, "units": units.value})

    def watch_forecast(
        self, lat: float, lon: float, days: int = 7, hours: int = 24, units: Units = Units.METRIC
    ) -> AsyncGenerator[Forecast, None]:
        """The forecast now, then at every refresh of its daily or hourly part (as `watch_current`)."""
        live = LiveOperation(FORECAST_UPDATES, "forecastUpdates", Forecast.from_json)
        variables = {"lat": lat, "lon": lon, "days": days, "hours": hours, "units": units.value}
        return self._watch(live, variables)

    def _watch(self, live: LiveOperation[T], variables: Mapping[str, Any]) -> AsyncGenerator[T, None]:
        if self.transport == "sse":
            return watch_sse(self._http, self.graphql_url, live, variables, self.retry)
        return watch(self.websocket_url, self.headers, live, variables, self.retry)

    async def _query(self, operation: Operation, variables: Mapping[str, Any]) -> Mapping[str, Any]:
        """The operation's `data`: by hash, then by text if need be, retried by the policy."""
        with_text = False
        failures = 0
        while True:
            failure: WeatherNoteClientError
            try:
                response = await self._send(operation, variables, with_text)
            except httpx.RequestError as exc:
                failure = ConnectionFailed(f"cannot reach {self.graphql_url}: {exc or type(exc).__name__}")
                delay = self.retry.backoff(failures)
            else:
                if response.status_code >= 500:
                    failure = ServerError(f"{self.graphql_url}: HTTP {response.status_code}")
                    delay = self.retry.backoff(failures)
                else:
                    try:
                        return _data(response)
                    except RateLimited as limited:
                        if limited.retry_after > self.retry.max_retry_after:
                            raise
                        failure, delay = limited, limited.retry_after
                    except OperationRefused as refused:
                        if refused.code != PERSISTED_QUERY_NOT_FOUND or with_text:
                            raise
                        with_text = True
                        continue
            failures += 1
            if failures >= self.retry.attempts:
                raise failure
            await asyncio.sleep(delay)

    async def _send(self, operation: Operation, variables: Mapping[str, Any], with_text: bool) -> httpx.Response:
        extensions = {"persistedQuery": {"version": 1, "sha256Hash": operation.sha256}}
        if with_text:
            body = {"query": operation.body, "operationName": operation.name, "variables": variables}
            return await self._http.post(self.graphql_url, json={**body, "extensions": extensions})
        params = {
            "operationName": operation.name,
            "variables": json.dumps(variables, separators=_COMPACT),
            "extensions": json.dumps(extensions, separators=_COMPACT),
        }
        return await self._http.get(self.graphql_url, params=params)


def _data(response: httpx.Response) -> Mapping[str, Any]:
    """A response's `data`, or the exception its status or errors call for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if response.status_code == 429:
        error = error_from_graphql(errors) if isinstance(errors, list) and errors else None
        retry_after = _retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            retry_after = error.retry_after if isinstance(error, RateLimited) else 1.0
        raise RateLimited(f"rate limited: retry in {retry_after:g} s", retry_after)
    if not isinstance(body, dict):
        raise ServerError(f"HTTP {response.status_code}: not a GraphQL response")
    if errors:
        raise error_from_graphql(errors if isinstance(errors, list) else [])
    data = body.get("data")
    if not isinstance(data, dict):
        raise ServerError(f"HTTP {response.status_code}: a GraphQL response without data")
    return data


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
