"""The WebSocket endpoint at /graphql: sub-protocol negotiation, the connections, closing them on shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket

from weathernote.fairuse import Admission
from weathernote.graphql import Operations
from weathernote.graphql.errors import rate_limited_error
from weathernote.http.websocket.protocol import SUBPROTOCOLS, Connection, ContextFactory, Limits
from weathernote.ops import metrics
from weathernote.ops.tracing import Tracer


def negotiate(websocket: WebSocket) -> str | None:
    """The first protocol in the client's order that we speak."""
    for offered in websocket.scope.get("subprotocols", []):
        if offered in SUBPROTOCOLS:
            return str(offered)
    return None


_RETRY_SECONDS = 30  # what a refused handshake tells the client to wait


class GraphQLWebSocket:
    """The WebSocket endpoint at /graphql; tracks connections so shutdown can close them with 1001.

    Connections are capped per process and per address (a client's, or its IPv6 prefix): one
    past either is refused before the handshake completes (HTTP 429 with Retry-After), so idle
    sockets cannot pile up memory.
    """

    def __init__(
        self,
        operations: Operations,
        context_factory: ContextFactory,
        limits: Limits,
        admission: Admission,
        tracer: Tracer | None = None,
    ) -> None:
        self.operations = operations
        self.tracer = tracer  # None: tracing is off
        self.context_factory = context_factory
        self.limits = limits
        self.admission = admission
        self.connections: set[Connection] = set()
        self.open = 0  # connections, and handshakes under way
        self.per_address: Counter[str] = Counter()
        self.accepting = True

    async def handle(self, websocket: WebSocket) -> None:
        protocol = negotiate(websocket)
        if not self.accepting:
            await websocket.close(1001)
            return
        peer = websocket.client.host if websocket.client else None
        identity = self.admission.identity(peer, websocket.headers)
        if (
            self.open >= self.limits.max_connections
            or self.per_address[identity.address] >= self.limits.max_connections_per_address
        ):
            metrics.RATE_LIMITED.labels("ws", "connections").inc()
            await _deny(websocket)
            return
        # counted from before the handshake: concurrent handshakes cannot slip past the caps together
        self.open += 1
        self.per_address[identity.address] += 1
        try:
            await websocket.accept(subprotocol=protocol)
            if protocol is None:
                await websocket.close(4406, "subprotocol not acceptable")
                return
            connection = Connection(
                websocket,
                protocol,
                self.operations,
                self.context_factory,
                self.limits,
                self.admission,
                identity,
                self.tracer,
            )
            self.connections.add(connection)
            metrics.WEBSOCKET_CONNECTIONS.inc()
            try:
                await connection.serve()
            finally:
                metrics.WEBSOCKET_CONNECTIONS.dec()
                self.connections.discard(connection)
        finally:
            self.open -= 1
            self.per_address[identity.address] -= 1
            if self.per_address[identity.address] <= 0:
                del self.per_address[identity.address]

    async def close_all(self, code: int = 1001) -> None:
        """Going away: clients reconnect to another instance."""
        self.accepting = False
        await asyncio.gather(
            *(connection.close(code, "server shutting down") for connection in list(self.connections)),
            return_exceptions=True,
        )


async def _deny(websocket: WebSocket) -> None:
    """Refuse the handshake: 429 with Retry-After where the server can say so, else a plain refusal."""
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close(1013)
        return
    body = orjson.dumps({"errors": [rate_limited_error(_RETRY_SECONDS)]})
    response = Response(
        body, status_code=429, media_type="application/json", headers={"Retry-After": str(_RETRY_SECONDS)}
    )
    await websocket.send_denial_response(response)
