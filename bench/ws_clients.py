"""WebSocket subscribers for the fan-out benchmark, run as several processes.

Opens `count` connections, subscribes connection i to cell (offset + i) % cells
and prints READY once every connection holds its first value (WeatherNote and
Yoga: the first `next`; the bare peers: their ready message). Then it waits for
one line on stdin, `GO <since ms>`, answers GO, and waits for each connection's
first delivery of an entry fetched at or after `since`: the refresh the bench
is about to cause. Messages of older entries are skipped. Prints one JSON line:
each delivery's latency in ms (receipt minus the entry's fetchedAt inside the
message), the distinct fetchedAt values delivered (one pre-warm batch: one
value), and how many connections got no such delivery within `--timeout`.
With `--hold`, the connections close only after one more line on stdin (BYE):
the bench reads the servers' CPU time before their closing handshakes cost any.
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

import orjson
import uvloop
import websockets

QUERY = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt } }"


def cell_point(index: int) -> tuple[float, float]:
    return 10.0 + index // 10, 20.0 + index % 10


async def open_graphql(url: str, cell: int) -> Any:
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120)
    await ws.send('{"type":"connection_init"}')
    await ws.recv()
    lat, lon = cell_point(cell)
    await ws.send(
        json.dumps({"type": "subscribe", "id": "1", "payload": {"query": QUERY, "variables": {"lat": lat, "lon": lon}}})
    )
    await ws.recv()
    return ws


def graphql_fetched_at(message: str | bytes) -> float | None:
    """The entry's fetchedAt (Unix seconds) in a graphql-transport-ws `next`; None for any other message."""
    body = orjson.loads(message)
    if body.get("type") != "next":
        return None
    return datetime.fromisoformat(body["payload"]["data"]["weatherUpdates"]["fetchedAt"]).timestamp()


async def open_bare(url: str, cell: int) -> Any:
    ws = await websockets.connect(url, max_queue=None, open_timeout=120)
    lat, lon = cell_point(cell)
    await ws.send(f"{lat},{lon}")
    await ws.recv()
    return ws


def bare_fetched_at(message: str | bytes) -> float | None:
    fetched_at = orjson.loads(message).get("fetchedAt")
    return None if fetched_at is None else fetched_at / 1000


async def read_line(word: str) -> list[str]:
    """The bench's next line on stdin, which starts with `word`: its other words."""
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    first, *rest = line.split()
    assert first == word, line
    return rest


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["graphql", "bare"])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--hold", action="store_true", help="close the connections only after a BYE line on stdin")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opener, fetched_at = (open_graphql, graphql_fetched_at) if args.kind == "graphql" else (open_bare, bare_fetched_at)
    handshakes = asyncio.Semaphore(50)
    latencies: list[float] = []
    versions: set[float] = set()
    since: float | None = None  # known once the bench says GO

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

    async def receive(ws: Any) -> bool:
        while True:
            message = await ws.recv()
            now = time.time()
            fetched = fetched_at(message)
            if fetched is not None and since is not None and fetched >= since:
                latencies.append((now - fetched) * 1000)
                versions.add(fetched)
                return True

    tasks = [asyncio.create_task(receive(ws)) for ws in sockets if ws is not None]
    [since_ms] = await read_line("GO")
    since = int(since_ms) / 1000
    print("GO", flush=True)
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    received = sum(1 for task in done if task.exception() is None)
    result = {"latencies": latencies, "versions": sorted(versions), "lost": args.count - received}
    print(json.dumps(result), flush=True)
    if args.hold:
        await read_line("BYE")
    await asyncio.gather(*(ws.close() for ws in sockets if ws is not None), return_exceptions=True)


if __name__ == "__main__":
    uvloop.run(main())
