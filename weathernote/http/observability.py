"""Per-request observability: a request id, one JSON log line, the request metrics; and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from weathernote.ops import metrics, requestlog
from weathernote.ops.logs import AccessLog
from weathernote.ops.requestlog import RequestInfo

access_log = AccessLog()

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
        info = RequestInfo(request_id, "http" if path == "/graphql" else "rest")
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
