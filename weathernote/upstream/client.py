"""The Open-Meteo HTTP client: one pooled httpx client, one deadline per call, every failure one error type.

Traced, each call is an HTTP client span (method, server, status; the URL without its
query, which lists the coordinates of up to a thousand locations).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

import httpx
import orjson

from weathernote.errors import ContractError, FailureCause, UpstreamFailed
from weathernote.model.cells import Cell
from weathernote.model.entries import Model, Part
from weathernote.ops import metrics, tracing
from weathernote.ops.tracing import SpanKind, Tracer
from weathernote.upstream.contract import forecast_days, parse_each, parse_locations, query_params, request_weight
from weathernote.upstream.health import UpstreamHealth, connection_symptom

log = logging.getLogger(__name__)

# Beyond this many locations the coordinate lists go in a POST body, as
# Open-Meteo advises for long location lists (URLs over 3500 chars are refused).
_GET_MAX_LOCATIONS = 20
# A full answer (current values, 16 days of daily and hourly) is about 16 KB a location:
# 8 MiB covers any request of up to 256 locations many times over, and larger batches get
# twice what they need (1,000 locations: 31 MiB), so a runaway body stops long before it
# costs real memory.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES_PER_LOCATION = 32 * 1024
# An error answer is read only for its reason.
_MAX_ERROR_BODY_BYTES = 64 * 1024


class _TooLarge(Exception):
    """A body that went past its cap while being read."""


class OpenMeteoClient:
    """Open-Meteo's forecast endpoint over one pooled httpx client.

    `timeout` bounds each call as a whole: waiting for a pooled connection, connecting,
    sending and reading the body, however slowly it trickles in. A body may hold at most
    `max_body_bytes`, or `max_body_bytes_per_location` per location for larger batches
    (decoded bytes, so a compressed bomb stops too), and is validated whole before
    anything of it is returned. Every failure is an UpstreamFailed, and the upstream's
    changes of state (failing and why, failing otherwise, healthy again) are logged once each.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 4,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_body_bytes_per_location: int = DEFAULT_MAX_BODY_BYTES_PER_LOCATION,
        tracer: Tracer | None = None,
    ) -> None:
        url = httpx.URL(base_url.rstrip("/"))
        # where the upstream is, fit for logs: without any user or password in the URL
        self.base_url = str(url.copy_with(username=None, password=None))
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.max_body_bytes_per_location = max_body_bytes_per_location
        self.health = UpstreamHealth(self.base_url)
        self.tracer = tracer  # None: tracing is off
        self._span_attributes = {
            "http.request.method": "GET",
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "url.full": f"{self.base_url}/v1/forecast",
        }
        self._http = httpx.AsyncClient(
            base_url=url,
            # httpx's timeouts apply per phase and per read; the deadline in `fetch` bounds the whole
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "weathernote/0.1 (+https://github.com/weathernote)"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def body_cap(self, locations: int) -> int:
        """The most bytes an answer for `locations` locations may hold."""
        return max(self.max_body_bytes, self.max_body_bytes_per_location * locations)

    async def fetch(self, cells: Sequence[Cell], parts: Collection[Part]) -> list[dict[Part, Model]]:
        """Fetch `parts` for every cell in one upstream request, in the order given (any flaw fails it all)."""
        body = await self._request(cells, parts)
        try:
            locations = parse_locations(body, len(cells), parts, days=forecast_days(parts))
        except ContractError as exc:
            raise self._malformed(str(exc)) from exc
        self._succeeded(len(cells), parts)
        return locations

    async def fetch_each(
        self, cells: Sequence[Cell], parts: Collection[Part]
    ) -> list[dict[Part, Model] | UpstreamFailed]:
        """`fetch`, location by location: a location whose answer is flawed is an UpstreamFailed in its
        place, and the others stand. An answer of the wrong shape, or flawed everywhere, fails it all."""
        body = await self._request(cells, parts)
        try:
            parsed = parse_each(body, len(cells), parts, days=forecast_days(parts))
        except ContractError as exc:
            raise self._malformed(str(exc)) from exc
        flawed = [result for result in parsed if isinstance(result, ContractError)]
        if len(flawed) == len(parsed):
            raise self._malformed(str(flawed[0]))
        self._succeeded(len(cells), parts)
        if flawed:
            log.warning(
                "malformed answer for %d of %d locations (the others kept): %s", len(flawed), len(parsed), flawed[0]
            )
        return [
            UpstreamFailed(f"malformed answer: {result}", FailureCause.MALFORMED, status=200)
            if isinstance(result, ContractError)
            else result
            for result in parsed
        ]

    def _succeeded(self, locations: int, parts: Collection[Part]) -> None:
        metrics.UPSTREAM_CALLS.labels("ok").inc()
        metrics.UPSTREAM_WEIGHT.inc(request_weight(locations, parts))
        self.health.succeeded()

    async def _request(self, cells: Sequence[Cell], parts: Collection[Part]) -> Any:
        """One request for `parts` of `cells`: its decoded 200 body; any other outcome an UpstreamFailed."""
        if not cells or not parts:
            raise ValueError("fetch needs at least one cell and one part")
        params = query_params(parts)
        params["latitude"] = ",".join(f"{cell.lat:g}" for cell in cells)
        params["longitude"] = ",".join(f"{cell.lon:g}" for cell in cells)
        method = "GET" if len(cells) <= _GET_MAX_LOCATIONS else "POST"
        attributes = {**self._span_attributes, "http.request.method": method, "weathernote.locations": len(cells)}
        try:
            with (
                metrics.UPSTREAM_DURATION.time(),
                tracing.span(self.tracer, method, attributes, SpanKind.CLIENT) as span,
            ):
                async with asyncio.timeout(self.timeout):
                    status, content = await self._exchange(params, len(cells))
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 400:
                        span.set_attribute("error.type", str(status))
                        span.set_status(tracing.Status(tracing.StatusCode.ERROR))
        except (TimeoutError, httpx.TimeoutException) as exc:
            reason = f"timeout: no complete answer within {self.timeout:g} s"
            raise self._failed(UpstreamFailed(reason, FailureCause.TIMEOUT), "timeout") from exc
        except httpx.HTTPError as exc:
            symptom, detail = connection_symptom(exc)
            raise self._failed(UpstreamFailed(f"{symptom}: {detail}", FailureCause.TRANSPORT), symptom) from exc
        except _TooLarge as exc:
            raise self._malformed(str(exc)) from exc
        if status != 200:
            cause = FailureCause.RATE_LIMITED if status == 429 else FailureCause.STATUS
            # Open-Meteo counts a failed request as one call
            metrics.UPSTREAM_WEIGHT.inc()
            raise self._failed(UpstreamFailed(_error_reason(status, content), cause, status=status), f"HTTP {status}")
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise self._malformed(str(exc)) from exc

    async def _exchange(self, params: dict[str, str], locations: int) -> tuple[int, bytes]:
        """One request: its status and body, the body read no further than its cap."""
        if locations <= _GET_MAX_LOCATIONS:
            stream = self._http.stream("GET", "/v1/forecast", params=params)
        else:
            stream = self._http.stream("POST", "/v1/forecast", data=params)
        async with stream as response:
            if response.status_code == 200:
                return 200, await _read(response, self.body_cap(locations))
            try:
                return response.status_code, await _read(response, _MAX_ERROR_BODY_BYTES)
            except _TooLarge:
                return response.status_code, b""

    def _malformed(self, detail: str) -> UpstreamFailed:
        return self._failed(
            UpstreamFailed(f"malformed answer: {detail}", FailureCause.MALFORMED, status=200), "malformed answer"
        )

    def _failed(self, error: UpstreamFailed, symptom: str) -> UpstreamFailed:
        metrics.UPSTREAM_CALLS.labels(error.cause).inc()
        self.health.failed(symptom, error.reason)
        return error


async def _read(response: httpx.Response, cap: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise _TooLarge(f"body larger than {cap} bytes")
    return bytes(body)


def _error_reason(status: int, content: bytes) -> str:
    try:
        reason = orjson.loads(content).get("reason")
    except (orjson.JSONDecodeError, AttributeError):
        reason = None
    return f"HTTP {status}" + (f": {reason}" if isinstance(reason, str) else "")
