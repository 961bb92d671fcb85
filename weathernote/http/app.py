"""The ASGI application: the routes over the services one process owns for its lifetime."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from weathernote.graphql import Operations, PayloadRenderer, Projector, build_root, schema
from weathernote.graphql.documents import DocumentLimits, Planner
from weathernote.http import csp, lifecycle
from weathernote.http.caching import NO_STORE
from weathernote.http.graphql_http import GraphQLEndpoint
from weathernote.http.observability import RequestObservability, RequestTracing, metrics_endpoint
from weathernote.http.rest import RestRoutes
from weathernote.http.sse import DistinctStreams, Reservations, SingleConnection, StreamGate, wants_event_stream
from weathernote.http.websocket import GraphQLWebSocket, Limits
from weathernote.live import Feeds
from weathernote.ops.logs import configure_logging
from weathernote.services import Services
from weathernote.settings import Settings

log = logging.getLogger(__name__)

GRAPHIQL_DIR = Path(__file__).resolve().parent.parent / "static" / "graphiql"


class HotRoute:
    """ASGI middleware that hands GET and POST /graphql, and its WebSockets, straight to their endpoints.

    Nearly every request is one of these; Starlette's exception middleware,
    router and endpoint wrappers cost a cached query a tenth of its time and add
    nothing to an endpoint that answers every error itself. A WebSocket would
    also hold their suspended frames for its whole life (about 3 KB) and pass
    every frame it sends through the exception middleware's wrapper. Everything
    else (other paths and methods, lifespan) goes on to Starlette.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        websocket_endpoint: Callable[[WebSocket], Awaitable[None]],
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint
        self.websocket_endpoint = websocket_endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and scope["path"] == self.path:
            if scope["type"] == "websocket":
                await self.websocket_endpoint(WebSocket(scope, receive, send))
                return
            if scope["method"] in ("GET", "POST"):
                response = await self.endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
    projector = Projector(schema._schema, build_root)
    operations = Operations(
        schema,
        planner,
        PayloadRenderer(schema._schema, projector, settings.render_cache_bytes),
        services.persisted,
        Feeds(services.live),
    )
    websockets = GraphQLWebSocket(
        operations,
        services.context,
        Limits(
            connection_init_timeout=settings.ws_init_timeout_seconds,
            keepalive_interval=settings.ws_keepalive_seconds,
            max_operations=settings.ws_max_subscriptions,
            max_connections=settings.ws_max_connections,
            max_connections_per_address=settings.ws_max_connections_per_address,
        ),
        services.admission,
        services.tracer,
    )

    streams = StreamGate(
        Limits(
            keepalive_interval=settings.sse_keepalive_seconds,
            max_operations=settings.sse_max_operations,
            max_connections=settings.sse_max_streams,
            max_connections_per_address=settings.sse_max_streams_per_address,
        ),
        services.admission,
    )
    distinct_streams = DistinctStreams(
        operations,
        services.context,
        services.admission,
        streams,
        keepalive=settings.sse_keepalive_seconds,
        max_body_bytes=settings.http_max_body_bytes,
        body_timeout=settings.http_body_timeout_seconds,
        tracer=services.tracer,
    )
    single_connection = SingleConnection(
        operations,
        services.context,
        services.admission,
        streams,
        Reservations(
            lambda value: services.admission.identifier.hash("sse", value),
            ttl=settings.sse_reservation_ttl_seconds,
            max_total=settings.sse_max_reservations,
            max_per_address=settings.sse_max_reservations_per_address,
        ),
        keepalive=settings.sse_keepalive_seconds,
        max_operations=settings.sse_max_operations,
        max_body_bytes=settings.http_max_body_bytes,
        body_timeout=settings.http_body_timeout_seconds,
        tracer=services.tracer,
    )

    async def drain() -> None:
        services.ready = False
        streams.close_all()
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
                "breaker": services.redis.breaker.state.value,
            },
            headers=NO_STORE,
        )

    async def ready(request: Request) -> Response:
        if services.ready:
            return JSONResponse({"ready": True}, headers=NO_STORE)
        return JSONResponse({"ready": False}, status_code=503, headers=NO_STORE)

    rest = RestRoutes(services.weather, services.grid, services.admission, services.clock)
    ide_page = GRAPHIQL_DIR / "index.html"
    graphql = GraphQLEndpoint(
        schema=schema,
        planner=planner,
        persisted=services.persisted,
        admission=services.admission,
        weather=services.weather,
        grid=services.grid,
        clock=services.clock,
        context_factory=services.context,
        ide_html=ide_page.read_bytes() if ide_page.exists() else None,
        max_batch=settings.graphql_max_batch,
        max_body_bytes=settings.http_max_body_bytes,
        body_timeout=settings.http_body_timeout_seconds,
        render_cache_bytes=settings.render_cache_bytes,
        projector=projector,
    )

    async def graphql_over_http(request: Request) -> Response:
        """GET and POST /graphql: an event stream when the client asks for one (graphql-sse), else GraphQL over HTTP."""
        if wants_event_stream(request.headers.get("accept")):
            return await distinct_streams.handle(request)
        return await graphql.handle(request)

    routes = [
        Route("/graphql", graphql_over_http, methods=["GET", "POST"]),
        Route("/graphql/stream", single_connection.handle, methods=["GET", "POST", "PUT", "DELETE"]),
        WebSocketRoute("/graphql", websockets.handle),  # HotRoute takes it first; listed as the route it is
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_endpoint(services.shared_figures)),
        Route("/api/v1/weather", rest.weather),
        Route("/api/v1/forecast", rest.forecast),
    ]
    if GRAPHIQL_DIR.is_dir():
        assets = csp.WithPolicy(StaticFiles(directory=GRAPHIQL_DIR, html=True))  # the IDE page's policy on its assets
        routes.append(Mount("/graphiql", assets, name="graphiql"))
    # tracing off, its middleware is not in the stack at all: requests pay nothing for it
    tracing = [Middleware(RequestTracing, tracing=services.tracing)] if services.tracing is not None else []
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            *tracing,
            Middleware(RequestObservability),
            Middleware(HotRoute, path="/graphql", endpoint=graphql_over_http, websocket_endpoint=websockets.handle),
        ],
    )
    app.state.services = services
    app.state.websockets = websockets
    app.state.streams = streams
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory for worker processes: settings come from WEATHERNOTE_* variables."""
    settings = Settings()
    configure_logging(settings.log_level)  # a spawned worker starts with no logging set up
    return create_app(settings)
