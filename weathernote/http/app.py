"""The ASGI application: routes, and the services one process owns for its lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from weathernote import clock
from weathernote.breaker import CircuitBreaker, State
from weathernote.cache.refresh import Freshness, Refresher
from weathernote.cache.service import WeatherService
from weathernote.cache.store import EntryStore
from weathernote.demand.usage import Usage
from weathernote.errors import CacheError
from weathernote.fairuse.admission import Admission
from weathernote.fairuse.identity import Identifier
from weathernote.fairuse.limiter import RateLimiter
from weathernote.graphql.context import Context
from weathernote.graphql.documents.limits import DocumentLimits
from weathernote.graphql.documents.persisted import PersistedQueries, load_manifest
from weathernote.graphql.fastpath import PayloadRenderer, Planner
from weathernote.graphql.schema import build_root, schema
from weathernote.http import csp, lifecycle
from weathernote.http.graphql_http import GraphQLEndpoint
from weathernote.http.graphql_ws import GraphQLWebSocket, Limits, Operations
from weathernote.http.observability import RequestObservability, metrics_endpoint
from weathernote.http.rest import RestRoutes
from weathernote.live.watches import LiveWeather
from weathernote.model.cells import Grid
from weathernote.model.entries import Part
from weathernote.ops.logs import configure_logging
from weathernote.ops.metrics import breaker_changed
from weathernote.prewarm.cycle import Prewarmer
from weathernote.redis.gateway import RedisGateway, redacted
from weathernote.settings import Settings
from weathernote.upstream import OpenMeteoClient
from weathernote.upstream.budget import Limits as BudgetLimits
from weathernote.upstream.budget import UpstreamBudget
from weathernote.upstream.pace import STEP_SECONDS

log = logging.getLogger(__name__)

GRAPHIQL_DIR = Path(__file__).resolve().parent.parent / "static" / "graphiql"


class Services:
    """Everything one process starts at boot and stops at shutdown."""

    redis: RedisGateway
    upstream: OpenMeteoClient
    weather: WeatherService
    live: LiveWeather
    admission: Admission
    persisted: PersistedQueries

    def __init__(self, settings: Settings, *, prewarm_in_background: bool = True) -> None:
        self.prewarm_in_background = prewarm_in_background and settings.prewarm_interval_seconds > 0
        # one clock per process, as the settings say (benchmarks run it fast, anchored)
        if settings.clock_anchor:
            real, simulated = (float(part) for part in settings.clock_anchor.split(":"))
            clock.configure(settings.clock_speed, origin=simulated, real_origin=real)
        else:
            clock.configure(settings.clock_speed)
        if not settings.redis_url:
            raise RuntimeError("WEATHERNOTE_REDIS_URL is not set; `weathernote serve` starts an embedded Redis for you")
        self.settings = settings
        self.grid = Grid(settings.grid_step)
        self.ready = False
        self.breaker = CircuitBreaker(
            "redis",
            failures=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
            on_change=breaker_changed,
        )
        breaker_changed("redis", State.CLOSED)
        self.safelist = load_manifest(settings.graphql_safelist) if settings.graphql_safelist else None

    async def start(self) -> None:
        settings = self.settings
        assert settings.redis_url
        self.redis = await RedisGateway.connect(settings.redis_url, settings.redis_timeout_seconds, self.breaker)
        log.info("Redis at %s (%s)", redacted(settings.redis_url), "cluster" if self.redis.cluster else "single server")
        log.info("Upstream at %s (offline? `make offline` runs against the bundled simulator)", settings.upstream_url)
        secret = settings.client_id_secret
        if not secret:
            log.warning(
                "WEATHERNOTE_CLIENT_ID_SECRET is not set: client ids are hashed under a key of this"
                " process only, so limits are not shared with other instances"
            )
            secret = secrets.token_hex(32)
        self.usage = Usage(self.redis)
        self.admission = Admission(
            Identifier(secret, settings.trusted_proxies),
            RateLimiter(
                self.redis,
                client_limit=settings.rate_limit_per_minute,
                address_limit=settings.effective_ip_rate_limit,
                period_seconds=settings.rate_limit_period_seconds,
            ),
            self.usage,
        )
        self.persisted = PersistedQueries(self.redis, self.safelist)
        self.upstream = OpenMeteoClient(
            settings.upstream_url,
            timeout=settings.upstream_timeout_seconds,
            max_connections=settings.upstream_max_connections,
        )
        store = EntryStore(self.redis, stale_ms=int(settings.stale_seconds * 1000))
        self.upstream_breaker = CircuitBreaker(
            "upstream",
            failures=settings.upstream_breaker_failures,
            reset_seconds=settings.upstream_breaker_reset_seconds,
            on_change=breaker_changed,
        )
        breaker_changed("upstream", State.CLOSED)
        self.budget = UpstreamBudget(
            self.redis,
            BudgetLimits(
                settings.upstream_budget_per_minute,
                settings.upstream_budget_per_hour,
                settings.upstream_budget_per_day,
                settings.prewarm_budget_share,
            ),
        )
        refresher = Refresher(
            store,
            self.upstream,
            self.budget,
            self.upstream_breaker,
            Freshness(
                ttl_ms={
                    Part.CURRENT: int(settings.weather_ttl_seconds * 1000),
                    Part.DAILY: int(settings.forecast_ttl_seconds * 1000),
                    Part.HOURLY: int(settings.forecast_ttl_seconds * 1000),
                },
                forecast_cadence_seconds=settings.forecast_cadence_seconds,
                target_steps=round(settings.freshness_target_seconds / STEP_SECONDS),
            ),
            lock_seconds=settings.upstream_timeout_seconds + 5,
        )
        self.weather = WeatherService(
            store, refresher, self.usage, budget_wait_seconds=settings.upstream_budget_wait_seconds
        )
        self.live = LiveWeather(self.redis, self.weather, watch_ttl_seconds=settings.watch_ttl_seconds)
        await self.live.start()
        await self.usage.start()
        self.prewarmer = Prewarmer(
            self.redis,
            self.weather,
            self.grid,
            interval_seconds=settings.prewarm_interval_seconds or STEP_SECONDS,
            batch_size=settings.prewarm_batch_size,
        )
        if self.prewarm_in_background:
            await self.prewarmer.start()
        self._readiness = asyncio.create_task(self._become_ready(), name="readiness")

    async def _become_ready(self) -> None:
        """Ready once Redis answers (the hub then connects on its first subscription)."""
        while not await self.redis.ping():
            log.warning("not ready yet: Redis unreachable")
            await asyncio.sleep(0.5)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self._readiness.cancel()
        await self.prewarmer.stop()  # releases the lease: another instance takes over at once
        await self.usage.stop()
        await self.live.stop()
        await self.upstream.aclose()
        await self.redis.aclose()

    async def shared_figures(self) -> dict[str, Any]:
        """Redis's own figures and the business figures, for /metrics; empty when Redis is down."""
        try:
            info = await self.redis.call(lambda client: client.info())
            figures: dict[str, Any] = await self.usage.snapshot()
        except CacheError:
            return {}
        if self.redis.cluster:
            # one figure per node: the cluster's are their sums
            info = _summed(info)
        for name in ("connected_clients", "keyspace_hits", "keyspace_misses", "used_memory"):
            if name in info:
                figures[name] = float(info[name])
        return figures

    def context(self, request: Request | WebSocket) -> Context:
        return Context(service=self.weather, grid=self.grid, live=self.live, request=request)

    async def redis_alive(self) -> bool:
        """A health check is also the breaker's probe, so recovery needs no user traffic."""
        return await self.redis.ping()


class HotRoute:
    """ASGI middleware that hands GET and POST /graphql straight to its endpoint.

    Nearly every request is one of these; Starlette's exception middleware,
    router and endpoint wrappers cost a cached query a tenth of its time and add
    nothing to an endpoint that answers every error itself. Everything else
    (other paths and methods, WebSockets, lifespan) goes on to Starlette.
    """

    def __init__(self, app: ASGIApp, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] in ("GET", "POST"):
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _summed(per_node: dict[str, Any]) -> dict[str, float]:
    """A Cluster's INFO (node -> fields) as one set of fields, numbers summed."""
    total: dict[str, float] = {}
    for fields in per_node.values():
        if isinstance(fields, dict):
            for name, value in fields.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    total[name] = total.get(name, 0.0) + value
    return total


class _Late:
    """Resolves attributes on the services at call time: they exist only after start-up."""

    def __init__(self, services: Services, name: str) -> None:
        self._services = services
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(getattr(self._services, self._name), attribute)


def create_app(settings: Settings) -> Starlette:
    services = Services(settings)
    planner = Planner(
        schema._schema,
        DocumentLimits(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_tokens=settings.graphql_max_tokens,
            max_bytes=settings.graphql_max_document_bytes,
            introspection=settings.graphql_introspection,
            field_suggestions=settings.graphql_field_suggestions,
        ),
        cache_bytes=settings.render_cache_bytes,
    )
    admission = cast(Admission, _Late(services, "admission"))
    persisted = cast(PersistedQueries, _Late(services, "persisted"))
    websockets = GraphQLWebSocket(
        Operations(
            schema, planner, PayloadRenderer(schema._schema, build_root, settings.render_cache_bytes), persisted
        ),
        services.context,
        Limits(
            connection_init_timeout=settings.ws_init_timeout_seconds,
            keepalive_interval=settings.ws_keepalive_seconds,
            max_operations=settings.ws_max_subscriptions,
        ),
        admission,
    )

    async def drain() -> None:
        services.ready = False
        await websockets.close_all(1001)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        # What start-up made (modules, the schema, caches' skeletons) lives as long as the process:
        # out of the collector's sight, a full collection walks only what requests made since,
        # not ~90,000 objects for nothing several times a second (50 ms each under load).
        gc.freeze()
        restore_signals = lifecycle.drain_on_signals(drain, settings.drain_seconds)
        try:
            yield
        finally:
            restore_signals()
            await drain()
            await services.stop()

    async def health(request: Request) -> Response:
        redis_ok = await services.redis_alive()
        upstream = {True: "ok", False: "failing", None: "unknown"}[services.weather.upstream_healthy]
        status = "ok" if redis_ok and upstream != "failing" else "degraded"
        return JSONResponse(
            {
                "status": status,
                "redis": "ok" if redis_ok else "down",
                "upstream": upstream,
                "breaker": services.breaker.state.value,
            }
        )

    async def ready(request: Request) -> Response:
        if services.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False}, status_code=503)

    rest = RestRoutes(services)
    ide_page = GRAPHIQL_DIR / "index.html"
    graphql = GraphQLEndpoint(
        schema,
        services.context,
        ide_page.read_bytes() if ide_page.exists() else None,
        planner,
        admission,
        persisted,
        services.grid,
        max_batch=settings.graphql_max_batch,
        render_cache_bytes=settings.render_cache_bytes,
    )
    routes = [
        Route("/graphql", graphql.handle, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", websockets.handle),
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_endpoint(services.shared_figures)),
        Route("/api/v1/weather", rest.weather),
        Route("/api/v1/forecast", rest.forecast),
    ]
    if GRAPHIQL_DIR.is_dir():
        assets = csp.WithPolicy(StaticFiles(directory=GRAPHIQL_DIR, html=True))  # the IDE page's policy on its assets
        routes.append(Mount("/graphiql", assets, name="graphiql"))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestObservability), Middleware(HotRoute, path="/graphql", endpoint=graphql.handle)],
    )
    app.state.services = services
    app.state.websockets = websockets
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory for worker processes: settings come from WEATHERNOTE_* variables."""
    settings = Settings()
    configure_logging(settings.log_level)  # a spawned worker starts with no logging set up
    return create_app(settings)
