"""GraphQL over WebSocket: `graphql-transport-ws` and the legacy `graphql-ws`, with a writer that never
queues (latest wins per operation while a socket drains)."""

from weathernote.http.websocket.endpoint import GraphQLWebSocket, negotiate
from weathernote.http.websocket.protocol import SUBPROTOCOLS, Connection, Limits, ProtocolError

__all__ = ["SUBPROTOCOLS", "Connection", "GraphQLWebSocket", "Limits", "ProtocolError", "negotiate"]
