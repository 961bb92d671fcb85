"""The simulator's HTTP application: /v1/forecast as Open-Meteo answers it, plus control endpoints.

A forecast request goes through, in order: the per-client concurrency limit,
the configured latency, a forced status, the rate-limit windows, parameter
validation, fault injection, and finally the deterministic weather answer
(made wrong by the `corrupt` knob: all of it, or only the location `corrupt_location` names), delivered at once, padded to a huge size
or trickled (the `body_padding_bytes` and `trickle_bytes_per_second` knobs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from weathernote.simulator import params as parameters
from weathernote.simulator.clock import SimulatedClock
from weathernote.simulator.config import SimulatorConfig
from weathernote.simulator.faults.corruption import corrupt
from weathernote.simulator.faults.delivery import deliver
from weathernote.simulator.faults.errors import (
    NOT_FOUND,
    TOO_MANY_CONCURRENT,
    ApiError,
    bad_gateway,
    broken_stream,
    error_response,
    forced_response,
    json_response,
)
from weathernote.simulator.faults.limits import ConcurrencyLimiter, RateLimiter
from weathernote.simulator.forecast.noise import hash01
from weathernote.simulator.forecast.weather import WeatherModel
from weathernote.simulator.render import render_forecast
from weathernote.simulator.stats import Stats

log = logging.getLogger("weathernote.simulator")

MAX_BODY_BYTES = 128 * 1024
_FAULT_KEY = 0xFA017
_JITTER_KEY = 0x7177E8
_FAULT_KINDS = 3  # 502, 503, 200 with a broken stream, in rotation
_CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never sent


class Simulator:
    """The state behind the routes: knobs, clock, limits and counters."""

    def __init__(self, config: SimulatorConfig, clock_start: float | None = None) -> None:
        self.config = config
        self.clock = SimulatedClock(config, clock_start)
        self.rate_limiter = RateLimiter(config)
        self.concurrency = ConcurrencyLimiter(config)
        self.stats = Stats()
        self.faults_injected = 0

    async def forecast(self, request: Request) -> Response:
        sequence = self.stats.received()
        client = request.client.host if request.client else "unknown"
        summary = parameters.summarize(parameters.from_query_string(request.query_params.multi_items()))
        if not self.concurrency.try_acquire(client):
            response = error_response(429, TOO_MANY_CONCURRENT)
        else:
            try:
                response = await self._answer(request, sequence, client, summary)
            except ClientDisconnect:
                # the caller gave up (its timeout, its shutdown) before its body was read
                response = Response(status_code=_CLIENT_CLOSED)
            except Exception:
                log.exception("simulator failed on %s", request.url)
                response = error_response(500, "Internal Server Error")
            finally:
                self.concurrency.release(client)
        self.stats.answered(summary, response.status_code)
        return response

    async def _answer(self, request: Request, sequence: int, client: str, summary: dict[str, Any]) -> Response:
        config = self.config
        delay_ms = config.latency_ms + config.latency_jitter_ms * hash01(config.seed, _JITTER_KEY, sequence)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if config.forced_status is not None:
            return forced_response(config.forced_status)
        now = self.clock.now()
        refusal = self.rate_limiter.refusal(client, now)
        if refusal is not None:
            return error_response(429, refusal)
        try:
            params = await _read_params(request)
            summary.update(parameters.summarize(params))
            query = parameters.parse_query(params)
        except ApiError as error:
            self.rate_limiter.charge(client, now, 1)
            return error_response(error.status, error.reason)

        model = WeatherModel(config.seed)
        if config.error_rate and hash01(config.seed, _FAULT_KEY, sequence) < config.error_rate:
            self.rate_limiter.charge(client, now, 1)
            return await self._fault(query, now, model)
        body = await asyncio.to_thread(render_forecast, query, now, model)
        if config.corrupt is not None and config.corrupt_location is None:
            # a fault like the others: charged one call, not counted as data served
            self.rate_limiter.charge(client, now, 1)
            body = corrupt(body, config.corrupt)
        else:
            if config.corrupt is not None:
                # one wrong location among right ones: an answer like any other, charged whole
                body = corrupt(body, config.corrupt, only=config.corrupt_location)
            charged_at = self.clock.now()
            self.rate_limiter.charge(client, charged_at, query.weight)
            self.stats.served_data(len(query.locations), query.weight, charged_at)
        return deliver(
            body, padding_bytes=config.body_padding_bytes, trickle_bytes_per_second=config.trickle_bytes_per_second
        )

    async def _fault(self, query: parameters.ForecastQuery, now: float, model: WeatherModel) -> Response:
        kind = self.faults_injected % _FAULT_KINDS
        self.faults_injected += 1
        if kind == 0:
            return bad_gateway()
        if kind == 1:
            return forced_response(503)
        return broken_stream(await asyncio.to_thread(render_forecast, query, now, model))

    async def stats_endpoint(self, request: Request) -> Response:
        return _json(self._stats())

    async def config_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                overrides = orjson.loads(await request.body())
                if not isinstance(overrides, dict):
                    raise ValueError("Expected a JSON object of knobs")
                self.config.update(overrides)
            except (ValueError, orjson.JSONDecodeError) as error:
                return error_response(400, str(error))
            self.clock.now()  # re-anchor at once if clock_speed changed
        return _json(self.config.as_dict())

    async def reset_endpoint(self, request: Request) -> Response:
        self.stats.reset()
        self.rate_limiter.reset()
        self.concurrency.reset_peak()
        self.faults_injected = 0
        return _json(self._stats())

    async def clock_endpoint(self, request: Request) -> Response:
        """The simulated time, and the wall clock's at that moment: another process anchors its own
        clock to this one exactly (a pair taken on either side of the request would be off by
        its round trip, times the clock's speed)."""
        now = self.clock.now()
        return _json({"now": now, "real": time.time()})

    def _stats(self) -> dict[str, Any]:
        return self.stats.snapshot(self.concurrency.in_flight, self.concurrency.max_in_flight)


def create_app(config: SimulatorConfig | None = None, clock_start: float | None = None) -> Starlette:
    simulator = Simulator(config or SimulatorConfig(), clock_start)
    app = Starlette(
        routes=[
            Route("/v1/forecast", simulator.forecast, methods=["GET", "POST"]),
            Route("/__simulator/stats", simulator.stats_endpoint, methods=["GET"]),
            Route("/__simulator/config", simulator.config_endpoint, methods=["GET", "POST"]),
            Route("/__simulator/reset", simulator.reset_endpoint, methods=["POST"]),
            Route("/__simulator/clock", simulator.clock_endpoint, methods=["GET"]),
        ],
        middleware=[
            # The real server compresses and allows any origin.
            Middleware(GZipMiddleware, minimum_size=1024),
            Middleware(CORSMiddleware, allow_origins=["*"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.simulator = simulator
    return app


async def _read_params(request: Request) -> parameters.Params:
    """GET: the query string. POST: the query string plus a form or JSON body of at most 128 kB."""
    params = parameters.from_query_string(request.query_params.multi_items())
    if request.method != "POST":
        return params
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("Payload Too Large", status=413)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        from_body = parameters.from_json(bytes(body))
    else:
        from_body = parameters.from_form(bytes(body))
    for key, values in from_body.items():
        params.setdefault(key, []).extend(values)
    return params


async def _http_error(request: Request, exc: Exception) -> Response:
    # Vapor answers an unknown path or method with 404 and its JSON error body.
    status = getattr(exc, "status_code", 500)
    if status in (404, 405):
        return error_response(404, NOT_FOUND)
    return error_response(status, getattr(exc, "detail", None) or "Error")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("simulator failed on %s", request.url, exc_info=exc)
    return error_response(500, "Internal Server Error")


def _json(document: Any) -> Response:
    return json_response(orjson.dumps(document))
