"""The Open-Meteo HTTP client: one pooled httpx client, every failure one error type."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import httpx
import orjson

from weathernote.cells import Cell
from weathernote.entries import Model, Part
from weathernote import metrics
from weathernote.errors import UpstreamError
from weathernote.upstream.contract import ContractError, parse_locations, query_params, request_weight

# Beyond this many locations the coordinate lists go in a POST body, as
# Open-Meteo advises for long location lists (URLs over 3500 chars are refused).
_GET_MAX_LOCATIONS = 20


class OpenMeteoClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": "weathernote/0.1 (+https://github.com/weathernote)"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self, cells: Sequence[Cell], parts: Collection[Part]) -> list[dict[Part, Model]]:
        """Fetch `parts` for every cell in one upstream request, in the order given."""
        if not cells or not parts:
            raise ValueError("fetch needs at least one cell and one part")
        params = query_params(parts)
        params["latitude"] = ",".join(f"{cell.lat:g}" for cell in cells)
        params["longitude"] = ",".join(f"{cell.lon:g}" for cell in cells)
        try:
            with metrics.UPSTREAM_DURATION.time():
                if len(cells) <= _GET_MAX_LOCATIONS:
                    response = await self._http.get("/v1/forecast", params=params)
                else:
                    response = await self._http.post("/v1/forecast", data=params)
        except httpx.TimeoutException as exc:
            raise _failed(UpstreamError(f"timeout: {type(exc).__name__}", cause="timeout")) from exc
        except httpx.HTTPError as exc:
            raise _failed(UpstreamError(f"transport: {type(exc).__name__}", cause="transport")) from exc
        if response.status_code != 200:
            cause = "rate_limited" if response.status_code == 429 else "status"
            # Open-Meteo counts a failed request as one call
            metrics.UPSTREAM_WEIGHT.inc()
            raise _failed(UpstreamError(_error_reason(response), status=response.status_code, cause=cause))
        try:
            body = orjson.loads(response.content)
            locations = parse_locations(body, len(cells), parts)
        except (orjson.JSONDecodeError, ContractError) as exc:
            raise _failed(UpstreamError(f"malformed answer: {exc}", status=200, cause="malformed")) from exc
        metrics.UPSTREAM_CALLS.labels("ok").inc()
        metrics.UPSTREAM_WEIGHT.inc(request_weight(len(cells), parts))
        return locations


def _failed(error: UpstreamError) -> UpstreamError:
    metrics.UPSTREAM_CALLS.labels(error.cause).inc()
    return error


def _error_reason(response: httpx.Response) -> str:
    try:
        reason = orjson.loads(response.content).get("reason")
    except (orjson.JSONDecodeError, AttributeError):
        reason = None
    return f"HTTP {response.status_code}" + (f": {reason}" if isinstance(reason, str) else "")
