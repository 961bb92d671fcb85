"""Baseline for the fan-out benchmark: a bare Starlette WebSocket broadcast.

A client sends the cell it wants as its first text message; one Redis pub/sub
connection feeds every cell's sockets with the published bytes, unchanged.
No GraphQL, no protocol, no per-subscriber work beyond the send: the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
sockets: dict[str, set[WebSocket]] = defaultdict(set)


async def listen() -> None:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe("bare:*")
    while True:
        message = await pubsub.get_message(timeout=1.0)
        if message and message["type"] == "pmessage":
            cell = message["channel"].decode().split(":", 1)[1]
            text = message["data"].decode()
            for ws in list(sockets.get(cell, ())):
                task = asyncio.create_task(_send(ws, text))
                _sending.add(task)
                task.add_done_callback(_sending.discard)


_sending: set[asyncio.Task[None]] = set()  # referenced until sent


async def _send(ws: WebSocket, text: str) -> None:
    with contextlib.suppress(Exception):  # a peer gone mid-send: the bare baseline just drops it
        await ws.send_text(text)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    cell = await ws.receive_text()
    sockets[cell].add(ws)
    await ws.send_text('{"ready":true}')
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets[cell].discard(ws)


async def lifespan(app):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(listen())
    yield
    task.cancel()


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
