"""A GraphQL WebSocket client for tests, over the real `websockets` library, both protocols."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"


class GraphQLSocket:
    def __init__(self, url: str, protocol: str = TRANSPORT, sock: Any = None, max_queue: int = 16) -> None:
        self.url = url.replace("http://", "ws://") + "/graphql"
        self.protocol = protocol
        self.sock = sock  # a pre-connected socket, e.g. with a tiny receive buffer
        self.max_queue = max_queue  # frames buffered before the client stops reading its socket
        self.ws: Any = None

    async def __aenter__(self) -> GraphQLSocket:
        self.ws = await websockets.connect(
            self.url, subprotocols=[self.protocol], max_size=2**24, sock=self.sock, max_queue=self.max_queue
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload or {}})
        ack = await self.receive()
        assert ack["type"] == "connection_ack", ack
        return ack

    async def subscribe(self, operation_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        kind = "start" if self.protocol == LEGACY else "subscribe"
        await self.send({"type": kind, "id": operation_id, "payload": {"query": query, "variables": variables or {}}})

    async def stop(self, operation_id: str) -> None:
        await self.send({"type": "stop" if self.protocol == LEGACY else "complete", "id": operation_id})

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 10.0, skip_keepalive: bool = True) -> dict[str, Any]:
        """The next message within `timeout` seconds overall, keep-alives skipped."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if skip_keepalive and message["type"] in ("ka", "ping", "pong"):
                    continue
                return message

    async def data(self, timeout: float = 10.0) -> dict[str, Any]:
        """The payload of the next data message."""
        message = await self.receive(timeout)
        assert message["type"] in ("next", "data"), message
        return message["payload"]
