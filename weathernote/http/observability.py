"""Per-request observability: a request id, one JSON log line, the request metrics, the request's
spans when tracing is on; and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graphql import get_operation_ast
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from weathernote.ops import metrics, requestlog, tracing
from weathernote.ops.logs import AccessLog
from weathernote.ops.requestlog import RequestInfo
from weathernote.ops.tracing import Span, SpanKind, Tracer, Tracing

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from weathernote.graphql.documents import Planner
    from weathernote.graphql.operations import Prepared as StreamPrepared
    from weathernote.http.graphql_http import Prepared

access_log = AccessLog()

# what the tracing middleware leaves in a request's scope for what runs inside it
TRACE_ID = "weathernote.trace_id"  # the trace id of a sampled request
OPERATION_SPAN = "weathernote.graphql_span"  # the GraphQL operation span of a sampled GraphQL-over-HTTP request
_ROUTES = frozenset(
    {"/graphql", "/graphql/stream", "/health", "/ready", "/metrics", "/api/v1/weather", "/api/v1/forecast"}
)
_GRAPHQL_MEDIA = (b"application/json", b"application/graphql-response+json")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# nginx's "client closed request": no response was sent, nobody is left to read one
CLIENT_CLOSED_REQUEST = 499


def _outcome(status: int, noted: str) -> str:
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "upstream_unavailable"
    if status >= 500:
        return "error"
    if status >= 400:
        return "bad_request"
    return noted


# labelled children, looked up once: prometheus_client's labels() costs more than the increment
# (the label values are bounded: transports, root-field sets, outcomes)
@functools.cache
def _requests(transport: str, operation: str, outcome: str) -> Counter:
    return metrics.REQUESTS.labels(transport, operation, outcome)


@functools.cache
def _duration(transport: str) -> Histogram:
    return metrics.REQUEST_DURATION.labels(transport)


class RequestObservability:
    """ASGI middleware for the API routes (GraphQL over HTTP and REST)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/graphql" or path.startswith("/api/")):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else requestlog.new_request_id()
        info = RequestInfo(request_id, "http" if path == "/graphql" else "rest", trace_id=scope.get(TRACE_ID))
        token = requestlog.current.set(info)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            try:
                await send(message)
            except (RuntimeError, OSError) as exc:  # the transport closed under the write: the client left
                raise _ClientGone from exc

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left while sending its body: its fault, not ours; this request's log line says so.
            status = CLIENT_CLOSED_REQUEST
        except _ClientGone:
            # The client left while we answered: nobody to tell, nothing wrong; one 499 line, no traceback.
            status = CLIENT_CLOSED_REQUEST
            await _until_disconnected(receive)
        finally:
            requestlog.current.reset(token)
            outcome = _outcome(status, info.outcome)
            info.outcome = outcome
            _requests(info.transport, info.operation or "other", outcome).inc()
            _duration(info.transport).observe(time.perf_counter() - info.started)
            access_log.write("request", {**info.fields(), "method": scope["method"], "path": path, "status": status})


class RequestTracing:
    """ASGI middleware, in the stack only when tracing is on: an HTTP server span for every request.

    The caller's `traceparent`/`tracestate` are its parent. A GraphQL-over-HTTP request gets a
    GraphQL operation span under it (the endpoint names it once it knows the operation), and,
    when sampled, its trace id in the response's `extensions.traceId`. WebSocket connections
    are traced per operation by their endpoint, not as one span as long as the connection.
    """

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        parent = tracing.remote_parent(_header(headers, b"traceparent"), _header(headers, b"tracestate"))
        if parent is None and self.tracing.root_unsampled():  # most requests at a low ratio: nothing to do
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        route = path if path in _ROUTES else "/graphiql/{path}" if path.startswith("/graphiql") else None
        attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")}
        if route is not None:
            attributes["http.route"] = route
        server = self.tracing.server_span(f"{method} {route}" if route else method, parent, attributes)
        if not server.is_recording():
            # not sampled, as the caller or another sampler decided: what runs inside needs to know that
            token = tracing.attach(server)
            try:
                await self.app(scope, receive, send)
            finally:
                tracing.detach(token)
            return
        graphql = path == "/graphql" and b"text/event-stream" not in headers.get(b"accept", b"")
        trace_id = tracing.trace_id(server)
        if trace_id is not None:
            scope[TRACE_ID] = trace_id
        try:
            with tracing.use_span(server, end_on_exit=True, record_exception=False, set_status_on_exception=False):
                reply = _Traced(send, server, trace_id if graphql else None)
                if not graphql:
                    await self.app(scope, receive, reply.send)
                    return
                with tracing.span(self.tracer, "GraphQL Operation") as operation:
                    scope[OPERATION_SPAN] = operation
                    await self.app(scope, receive, reply.send)
        except BaseException as exc:
            tracing.failed(server, exc)
            raise


class _Traced:
    """A request's `send`: the status on its server span, and a GraphQL answer's trace id in its body."""

    __slots__ = ("_held", "_send", "server", "trace_id")

    def __init__(self, send: Send, server: Span, trace_id: str | None) -> None:
        self._send = send
        self.server = server
        self.trace_id = trace_id  # set for a sampled GraphQL-over-HTTP request
        self._held: Message | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.server.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.server.set_status(tracing.Status(tracing.StatusCode.ERROR))
                self.server.set_attribute("error.type", str(status))
            media = dict(message.get("headers", [])).get(b"content-type", b"").split(b";")[0]
            if self.trace_id is not None and media in _GRAPHQL_MEDIA:
                self._held = message  # its Content-Length changes with the body
                return
        elif message["type"] == "http.response.body" and self._held is not None:
            start, self._held = self._held, None
            assert self.trace_id is not None
            if not message.get("more_body", False):
                body = tracing.with_trace_id(message.get("body", b""), self.trace_id)
                start["headers"] = [
                    (name, str(len(body)).encode() if name == b"content-length" else value)
                    for name, value in start.get("headers", [])
                ]
                message = {**message, "body": body}
            await self._send(start)
        await self._send(message)


def name_operation(span: Span, planner: Planner, prepared: Sequence[Prepared]) -> None:
    """Name a GraphQL-over-HTTP request's operation span after its operation (type and name), or
    its batch; an operation refused before it was read keeps the span's generic name."""
    if len(prepared) != 1:
        span.update_name(f"GraphQL batch of {len(prepared)}")
        return
    [item] = prepared
    document = planner.checked(item.query)[0] if item.query is not None else None
    name = item.params.operation_name
    operation = get_operation_ast(document, name) if document is not None else None
    if operation is None:
        return
    kind = operation.operation.value
    name = name or (operation.name.value if operation.name else None)
    span.set_attribute("graphql.operation.type", kind)
    if name:
        span.set_attribute("graphql.operation.name", name)
    span.update_name(f"{kind} {name}" if name else kind)


@contextlib.contextmanager
def stream_operation(
    tracer: Tracer | None, transport: str, prepared: StreamPrepared, parent: Context | None = None
) -> Iterator[None]:
    """A span for one operation of a streaming transport (WebSocket, SSE), current for the block:
    its first read and payload, or all of it when no feed takes it over. Under `parent` (a
    WebSocket handshake's caller), else under the current span (an SSE request's); nothing
    without a tracer."""
    if tracer is None:
        yield
        return
    kind = prepared.operation.operation.value
    name = prepared.operation_name or (prepared.operation.name.value if prepared.operation.name else None)
    attributes = {"graphql.operation.type": kind, "weathernote.transport": transport}
    if name:
        attributes["graphql.operation.name"] = name
    with tracer.start_as_current_span(
        f"{kind} {name}" if name else kind, parent, SpanKind.SERVER, attributes, record_exception=False
    ) as span:
        info = requestlog.current.get()
        if info is not None:
            info.trace_id = tracing.trace_id(span)  # for the operation's log line
        try:
            yield
        except Exception as exc:
            tracing.failed(span, exc)
            raise


def handshake_parent(tracer: Tracer | None, headers: Mapping[str, str]) -> Context | None:
    """A WebSocket handshake's caller's trace context: the parent of the connection's operations."""
    if tracer is None:
        return None
    return tracing.remote_parent(headers.get("traceparent"), headers.get("tracestate"))


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


class _ClientGone(Exception):
    """A response write failed because the client's connection is gone."""


async def _until_disconnected(receive: Receive) -> None:
    """Let the server see the disconnect before the app returns (else it reports an unfinished response)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            while (await receive())["type"] != "http.disconnect":
                pass


class SharedFigures(Collector):
    """Figures read from Redis at scrape time: Redis's own, and the business figures."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        names = {
            "connected_clients": (metrics.REDIS_CONNECTED_CLIENTS, "Clients connected to Redis"),
            "keyspace_hits": (metrics.REDIS_KEYSPACE_HITS, "Redis keyspace hits since it started"),
            "keyspace_misses": (metrics.REDIS_KEYSPACE_MISSES, "Redis keyspace misses since it started"),
            "used_memory": (metrics.REDIS_USED_MEMORY, "Memory Redis uses, bytes"),
            "active_clients_today": (metrics.ACTIVE_CLIENTS_TODAY, "Distinct clients today (UTC), all instances"),
            "upstream_calls_per_million_requests": (
                metrics.UPSTREAM_CALLS_PER_MILLION,
                "Upstream weighted calls per million requests today, all instances",
            ),
        }
        for key, (name, documentation) in names.items():
            if key in self.snapshot:
                yield GaugeMetricFamily(name, documentation, value=self.snapshot[key])
        if "top_cells" in self.snapshot:
            family = GaugeMetricFamily(
                metrics.TOP_CELL_REQUESTS, "Requests of the ten most requested cells (decayed)", labels=["cell"]
            )
            for cell, score in self.snapshot["top_cells"]:
                family.add_metric([cell], score)
            yield family


def metrics_endpoint(snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        registry = CollectorRegistry()
        registry.register(SharedFigures(await snapshot()))
        return Response(metrics.process_registry_text() + generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
