"""Subscribers that reconnect like phones, for the reconnect-storm benchmark (bench/storm.py), run as
several processes.

Each of `--count` subscribers is its own client (its id and address in the headers nginx passes
on), subscribes to cell (index % cells) and, whenever its socket ends, connects again after a
wait: the server's hint when it closed the start with 4429 (plus up to `--jitter` seconds), else
jittered exponential backoff (full jitter, from `--base` up to `--cap` seconds). Every quarter of a
second the process prints one JSON line: subscribed (holding a value now), reconnects, refused
(4429), failed attempts, and `fresh`: subscribers whose newest value was fetched at or after the
mark given on stdin (`MARK <unix seconds>`). `STOP` on stdin ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
from datetime import datetime

import uvloop
import websockets
from websockets.typing import Subprotocol

QUERY = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { fetchedAt } }"


def cell_point(cell: int) -> dict[str, float]:
    return {"lat": 40.05 + (cell // 20) * 0.3, "lon": -4.95 + (cell % 20) * 0.3}


class Crowd:
    """The subscribers of this process and what they have seen."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.newest = [0.0] * args.count
        self.subscribed = 0
        self.reconnects = 0
        self.refused = 0
        self.failed = 0
        self.mark = float("inf")
        self.stopping = False

    async def subscriber(self, local: int) -> None:
        index = self.args.offset + local
        headers = {
            "x-client-id": f"storm-{index}",
            "x-forwarded-for": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
        }
        variables = cell_point(index % self.args.cells)
        jitter = random.Random(index)
        attempt = 0
        while not self.stopping:
            holding = False
            wait = None
            try:
                async with websockets.connect(
                    self.args.url,
                    subprotocols=[Subprotocol("graphql-transport-ws")],
                    additional_headers=headers,
                    open_timeout=60,
                    max_queue=None,
                ) as ws:
                    await ws.send('{"type":"connection_init"}')
                    ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if ack.get("type") != "connection_ack":
                        raise RuntimeError(ack)
                    await ws.send(
                        json.dumps(
                            {"type": "subscribe", "id": "1", "payload": {"query": QUERY, "variables": variables}}
                        )
                    )
                    async for raw in ws:
                        message = json.loads(raw)
                        if message.get("type") == "ping":
                            await ws.send('{"type":"pong"}')
                        elif message.get("type") == "next":
                            fetched = message["payload"]["data"]["weatherUpdates"]["fetchedAt"]
                            self.newest[local] = datetime.fromisoformat(fetched).timestamp()
                            if not holding:
                                holding = True
                                attempt = 0
                                self.subscribed += 1
                        elif message.get("type") in ("error", "complete"):
                            raise RuntimeError(message)
            except websockets.ConnectionClosed as closed:
                if closed.rcvd is not None and closed.rcvd.code == 4429:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        wait = float(json.loads(closed.rcvd.reason)["retryAfter"]) + jitter.uniform(0, self.args.jitter)
                        self.refused += 1
                if wait is None and not holding:
                    self.failed += 1
            except (OSError, TimeoutError, RuntimeError, websockets.WebSocketException, ValueError):
                self.failed += 1
            if holding:
                self.subscribed -= 1
                self.reconnects += 1
            if wait is None:
                wait = jitter.uniform(0, min(self.args.cap, self.args.base * 2**attempt))
                attempt += 1
            await asyncio.sleep(wait)

    def status(self) -> str:
        fresh = sum(1 for newest in self.newest if newest >= self.mark)
        return json.dumps(
            {
                "subscribed": self.subscribed,
                "reconnects": self.reconnects,
                "refused": self.refused,
                "failed": self.failed,
                "fresh": fresh,
            }
        )


async def main(args: argparse.Namespace) -> None:
    crowd = Crowd(args)
    tasks = []
    for local in range(args.count):  # not all in the same instant: a phone population starts over a second or so
        tasks.append(asyncio.create_task(crowd.subscriber(local)))
        if local % 100 == 99:
            await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := (await reader.readline()).decode().strip():
            if line.startswith("MARK "):
                crowd.mark = float(line.split()[1])
            elif line == "STOP":
                break
        crowd.stopping = True

    listening = asyncio.create_task(commands())
    while not listening.done():
        print(crowd.status(), flush=True)
        await asyncio.sleep(0.25)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--base", type=float, default=0.5, help="first backoff ceiling, seconds")
    parser.add_argument("--cap", type=float, default=30.0, help="largest backoff ceiling, seconds")
    parser.add_argument("--jitter", type=float, default=1.0, help="added to a 4429's hint, at most, seconds")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(main(parser.parse_args()))
