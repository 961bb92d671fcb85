"""The WebSocket endpoint at /graphql: sub-protocol negotiation, the connections, closing them on shutdown."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocket

from weathernote.fairuse import Admission
from weathernote.graphql import Operations
from weathernote.http.websocket.protocol import SUBPROTOCOLS, Connection, ContextFactory, Limits
from weathernote.ops import metrics


def negotiate(websocket: WebSocket) -> str | None:
    """The first protocol in the client's order that we speak."""
    for offered in websocket.scope.get("subprotocols", []):
        if offered in SUBPROTOCOLS:
            return str(offered)
    return None


class GraphQLWebSocket:
    """The WebSocket endpoint at /graphql; tracks connections so shutdown can close them with 1001."""

    def __init__(
        self, operations: Operations, context_factory: ContextFactory, limits: Limits, admission: Admission
    ) -> None:
        self.operations = operations
        self.context_factory = context_factory
        self.limits = limits
        self.admission = admission
        self.connections: set[Connection] = set()
        self.accepting = True

    async def handle(self, websocket: WebSocket) -> None:
        protocol = negotiate(websocket)
        if not self.accepting:
            await websocket.close(1001)
            return
        await websocket.accept(subprotocol=protocol)
        if protocol is None:
            await websocket.close(4406, "subprotocol not acceptable")
            return
        peer = websocket.client.host if websocket.client else None
        identity = self.admission.identity(peer, websocket.headers)
        connection = Connection(
            websocket, protocol, self.operations, self.context_factory, self.limits, self.admission, identity
        )
        self.connections.add(connection)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        try:
            await connection.serve()
        finally:
            metrics.WEBSOCKET_CONNECTIONS.dec()
            self.connections.discard(connection)

    async def close_all(self, code: int = 1001) -> None:
        """Going away: clients reconnect to another instance."""
        self.accepting = False
        await asyncio.gather(
            *(connection.close(code, "server shutting down") for connection in list(self.connections)),
            return_exceptions=True,
        )
