"""Baseline for the fan-out benchmark: the `websockets` library's own server and its `broadcast`.

The same feed as bench/peers/bare_broadcast.py (WeatherNote's channels, its
decoding, one small JSON text per announcement), written with
`websockets.asyncio.server.broadcast`: one synchronous loop of frame writes
over the cell's sockets, no task and no await per socket. No compression,
no keep-alive pings, on uvloop like WeatherNote.

Usage: python bench/peers/bare_websockets.py PORT (BENCH_REDIS_URL names the Redis)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Collection
from typing import Any

import uvloop
from bare_broadcast import Feed
from websockets.asyncio.server import ServerConnection, broadcast, serve


async def broadcast_to(sockets: Collection[Any], text: str) -> None:
    broadcast(sockets, text)


async def main(port: int) -> None:
    feed = Feed(os.environ["BENCH_REDIS_URL"], broadcast_to)

    async def handler(ws: ServerConnection) -> None:
        point = await ws.recv()
        channel = await feed.join(ws, str(point))
        await ws.send('{"ready":true}')
        try:
            await ws.wait_closed()
        finally:
            await feed.leave(ws, channel)

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    listener = asyncio.create_task(feed.run())
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, max_queue=None, backlog=4096):
        await stop
    listener.cancel()
    await feed.aclose()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
