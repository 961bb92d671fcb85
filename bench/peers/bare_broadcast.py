"""Baseline for the fan-out benchmark: a bare Starlette WebSocket broadcast with direct writes.

A client sends the point it wants ("lat,lon") as its first text message and
gets '{"ready":true}'. The peer listens on the same channels as WeatherNote
(`updates:<entry key>`, SUBSCRIBE for a cell's first socket, UNSUBSCRIBE after
its last) on one Redis pub/sub connection, so a WeatherNote leader's pre-warm
cycle feeds it. Each announcement is decoded once with WeatherNote's own code,
as its hub does (`without_traceparent`, then `EntryMemo.decode`; one that does
not decode is dropped, as the hub drops it), into one small JSON text
(`{"temperature":..,"fetchedAt":<ms>}`), written to every socket of the cell
in turn from the listener itself: no GraphQL, no protocol, no task per socket.

`Feed` is shared with bench/peers/bare_websockets.py (the same feed on the
`websockets` library's own server and its synchronous `broadcast`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from weathernote.cache import EntryMemo
from weathernote.errors import UndecodableEntry
from weathernote.model import Cell, Current, Grid, Part
from weathernote.redis.keys import SEED_SPELLING
from weathernote.redis.pubsub import without_traceparent

Forward = Callable[[Collection[Any], str], Awaitable[None]]


class Feed:
    """Sockets by channel, and the one pub/sub connection that forwards each announcement to them."""

    def __init__(self, redis_url: str, forward: Forward) -> None:
        self.redis = Redis.from_url(redis_url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.forward = forward
        self.grid = Grid(0.1)
        self.memo = EntryMemo()
        self.sockets: dict[str, set[Any]] = {}
        self.cells: dict[str, Cell] = {}
        self.lock = asyncio.Lock()  # SUBSCRIBE and UNSUBSCRIBE in the order sockets come and go

    async def join(self, socket: Any, point: str) -> str:
        """`socket` wants the cell of `point` ("lat,lon"): its channel, subscribed before this returns."""
        lat, lon = (float(value) for value in point.split(","))
        cell = self.grid.cell(lat, lon)
        channel = SEED_SPELLING.update_channel(Part.CURRENT, cell)
        async with self.lock:
            if channel not in self.sockets:
                self.sockets[channel] = set()
                self.cells[channel] = cell
                await self.pubsub.subscribe(channel)
            self.sockets[channel].add(socket)
        return channel

    async def leave(self, socket: Any, channel: str) -> None:
        async with self.lock:
            sockets = self.sockets.get(channel)
            if sockets is None:
                return
            sockets.discard(socket)
            if not sockets:
                del self.sockets[channel]
                await self.pubsub.unsubscribe(channel)

    async def run(self) -> None:
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"].decode()
            sockets = self.sockets.get(channel)
            if not sockets:
                continue
            data, _ = without_traceparent(message["data"])  # a traced refresh's context: not ours to follow
            try:
                entry = self.memo.decode(Part.CURRENT, self.cells[channel], data)
            except UndecodableEntry:
                continue
            model = entry.model
            assert isinstance(model, Current)
            text = orjson.dumps({"temperature": model.temperature, "fetchedAt": entry.fetched_at_ms}).decode()
            await self.forward(list(sockets), text)

    async def aclose(self) -> None:
        await self.pubsub.aclose()
        await self.redis.aclose()


async def write_each(sockets: Collection[Any], text: str) -> None:
    # in turn from the listener: uvicorn's send writes at once unless the socket is paused
    for ws in sockets:
        with contextlib.suppress(Exception):  # a peer gone mid-send: the bare baseline just drops it
            await ws.send_text(text)


feed = Feed(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"), write_each)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    channel = await feed.join(ws, await ws.receive_text())
    await ws.send_text('{"ready":true}')
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        await feed.leave(ws, channel)


async def lifespan(app: Starlette) -> Any:  # an async generator: Starlette's lifespan
    task = asyncio.create_task(feed.run())
    yield
    task.cancel()
    await feed.aclose()


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
