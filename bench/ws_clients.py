"""WebSocket subscribers for the fan-out benchmark, run as several processes.

Opens `count` connections, subscribes connection i to cell (offset + i) % cells,
prints READY once every connection holds its first value, then waits for
`expect` refreshes per connection and prints one JSON line: the delivery
latencies in ms (receive time minus the refresh's own timestamp) and how many
deliveries never arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from datetime import datetime
from typing import Any

import uvloop
import websockets

QUERY = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt } }"


def cell_point(index: int) -> tuple[float, float]:
    return 10.0 + index // 10, 20.0 + index % 10


async def open_weathernote(url: str, cell: int) -> Any:
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120)
    await ws.send('{"type":"connection_init"}')
    await ws.recv()
    lat, lon = cell_point(cell)
    await ws.send(
        json.dumps({"type": "subscribe", "id": "1", "payload": {"query": QUERY, "variables": {"lat": lat, "lon": lon}}})
    )
    await ws.recv()
    return ws


def weathernote_timestamp(message: str) -> float | None:
    body = json.loads(message)
    if body.get("type") != "next":
        return None
    return datetime.fromisoformat(body["payload"]["data"]["weatherUpdates"]["fetchedAt"]).timestamp()


async def open_bare(url: str, cell: int) -> Any:
    ws = await websockets.connect(url, max_queue=None, open_timeout=120)
    await ws.send(str(cell))
    await ws.recv()
    return ws


def bare_timestamp(message: str) -> float | None:
    return json.loads(message)["ts"]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["weathernote", "bare"])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--expect", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opener, timestamp = (
        (open_weathernote, weathernote_timestamp) if args.kind == "weathernote" else (open_bare, bare_timestamp)
    )
    handshakes = asyncio.Semaphore(50)
    latencies: list[float] = []

    async def connect(i: int) -> Any:
        async with handshakes:
            try:
                return await opener(args.url, (args.offset + i) % args.cells)
            except Exception as exc:  # reported, counted as lost
                print(f"connection {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
                return None

    sockets = await asyncio.gather(*(connect(i) for i in range(args.count)))
    # From here on, no collection: a full one over thousands of connections takes this
    # process a second, which would show in the figures as the server's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    print("READY", flush=True)

    async def receive(ws: Any) -> int:
        received = 0
        while received < args.expect:
            message = await ws.recv()
            now = time.time()
            sent = timestamp(message)
            if sent is not None:
                latencies.append((now - sent) * 1000)
                received += 1
        return received

    tasks = [asyncio.create_task(receive(ws)) for ws in sockets if ws is not None]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    received = sum(task.result() for task in done if task.exception() is None)
    print(json.dumps({"latencies": latencies, "lost": args.count * args.expect - received}), flush=True)
    await asyncio.gather(*(ws.close() for ws in sockets if ws is not None), return_exceptions=True)


if __name__ == "__main__":
    uvloop.run(main())
