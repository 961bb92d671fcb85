"""Fan-out of refreshes to WebSocket subscribers: WeatherNote beside its peers, same run.

One server process each; `--subscribers` connections over `--cells` cells, one
refresh per cell (written and announced the way a refresh is), then:
p50/p99/max delivery latency, server RSS per subscribed connection, lost
deliveries. Peers, measured in turn:
  - bare-broadcast:  a bare Starlette WebSocket broadcast fed by one Redis pub/sub
                     connection: no GraphQL, no protocol (the limit)
  - graphql-yoga:    GraphQL Yoga on Node (bench/peers/yoga), `weatherUpdates` over graphql-ws
                     (graphql-transport-ws), fed by the same `updates:<entry key>` channels and
                     the same refreshes as WeatherNote; skipped, saying so, without node and npm

Usage: python bench/subscriptions_fanout.py [--subscribers 10000] [--cells 100] [--client-processes 4] [--no-yoga]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
from harness import ROOT, components, free_port, wait_http
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from ws_clients import cell_point
from yoga_peer import yoga_cmd, yoga_env, yoga_ready, yoga_versions

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryStore
from weathernote.cells import Grid
from weathernote.entries import Current, Entry, Part
from weathernote.keys import update_channel
from weathernote.redis_gateway import RedisGateway


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def write_entries(redis_url: str, cells: int, announce: bool) -> None:
    """What a refresh does: write each cell's new entry (fetched now) and announce it on its channel.

    Without `announce`, the entries are only put in place: what a subscriber gets at once.
    """
    redis = await RedisGateway.connect(redis_url, 5.0, CircuitBreaker("bench"))
    store = EntryStore(redis, stale_ms=0)
    for index in range(cells):
        cell = grid.cell(*cell_point(index))
        now_ms = time.time_ns() // 1_000_000
        model = Current(
            time=time.strftime("%Y-%m-%dT%H:%M+00:00", time.gmtime()),
            temperature=12.5,
            apparent_temperature=11.0,
            humidity=60.0,
            precipitation=0.0,
            weather_code=3,
            cloud_cover=75.0,
            pressure=1013.2,
            wind_speed=10.4,
            wind_direction=200.0,
            wind_gusts=21.0,
            is_day=True,
        )
        entry = Entry.from_model(Part.CURRENT, cell, model, now_ms, now_ms + 600_000, now_ms + 900_000)
        await store.write([entry], announce=announce)
    await redis.aclose()


async def refresh_graphql(redis_url: str, cells: int) -> None:
    await write_entries(redis_url, cells, announce=True)


async def refresh_bare(redis_url: str, cells: int) -> None:
    redis = Redis.from_url(redis_url)
    for index in range(cells):
        await redis.publish(f"bare:{index}", orjson.dumps({"ts": time.time(), "temperature": 12.5}))
    await redis.aclose()


grid = Grid(0.1)


def run_peer(kind: str, server_pid: int, url: str, args: argparse.Namespace, refresh: object) -> dict[str, float]:
    """`kind`: ws_clients.py's subscriber, "weathernote" (graphql-transport-ws, weatherUpdates) or "bare"."""
    if kind == "weathernote":  # every cell's entry in place: what a GraphQL subscriber gets at once
        asyncio.run(write_entries(args.redis_url, args.cells, announce=False))
    before = rss_kb(server_pid)
    per_process = args.subscribers // args.client_processes
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "ws_clients.py"),
                kind,
                url,
                "--count",
                str(per_process),
                "--offset",
                str(i * per_process),
                "--cells",
                str(args.cells),
                "--timeout",
                "60",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.client_processes)
    ]
    for client in clients:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.strip() == "READY", line
    time.sleep(1)
    after = rss_kb(server_pid)
    if kind == "weathernote":  # only the server under test listens: no other peer shares the work
        channels = [update_channel(Part.CURRENT, grid.cell(*cell_point(index))) for index in range(args.cells)]
        with SyncRedis.from_url(args.redis_url) as redis:
            listeners = {count for _, count in redis.pubsub_numsub(*channels)}
        assert listeners == {1}, f"{url}: channels with {sorted(listeners)} listeners, expected 1 each"
    asyncio.run(refresh(args.redis_url, args.cells))  # type: ignore[operator]
    latencies: list[float] = []
    lost = 0
    for client in clients:
        assert client.stdout is not None
        result = json.loads(client.stdout.readline())
        latencies += result["latencies"]
        lost += result["lost"]
        client.wait(30)
    latencies.sort()
    return {
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "max": latencies[-1] if latencies else float("nan"),
        "kb_per_connection": (after - before) / (per_process * args.client_processes),
        "lost": lost,
        "delivered": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--no-yoga", action="store_true", help="leave out the GraphQL Yoga (Node) peer")
    args = parser.parse_args()
    yoga_skipped = "--no-yoga" if args.no_yoga else yoga_ready()

    with components() as running:
        args.redis_url = running.redis_url
        sim_port, wn_port, bare_port, yoga_port = (free_port("127.0.0.1") for _ in range(4))
        running.start(
            [
                sys.executable,
                "-m",
                "weathernote",
                "simulate-upstream",
                "--port",
                str(sim_port),
                "--max-concurrent",
                "0",
                "--rate-limit-per-minute",
                "1000000",
            ]
        )
        env = {
            **os.environ,
            "WEATHERNOTE_REDIS_URL": running.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": f"http://127.0.0.1:{sim_port}",
            "WEATHERNOTE_PORT": str(wn_port),
            "WEATHERNOTE_LOG_LEVEL": "warning",
            "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
            "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            "WEATHERNOTE_CLIENT_ID_SECRET": "bench",
            "BENCH_REDIS_URL": running.redis_url,
        }
        weathernote = running.start([sys.executable, "-m", "weathernote", "serve"], env)
        bare = running.start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_broadcast:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--app-dir",
                str(ROOT / "bench" / "peers"),
                "--ws-per-message-deflate",
                "false",
            ],
            env,
        )
        yoga = None if yoga_skipped else running.start(yoga_cmd(yoga_port, running.redis_url), yoga_env(env))
        wait_http(f"http://127.0.0.1:{sim_port}/__simulator/stats")
        wait_http(f"http://127.0.0.1:{wn_port}/ready")
        if yoga is not None:
            wait_http(f"http://127.0.0.1:{yoga_port}/health")
        for index in range(args.cells):  # warm every cell, so subscribing costs no upstream call
            lat, lon = cell_point(index)
            httpx.post(
                f"http://127.0.0.1:{wn_port}/graphql",
                json={"query": f"{{ current(lat: {lat}, lon: {lon}) {{ cached }} }}"},
                timeout=30,
            )
        time.sleep(1)
        results = {
            "weathernote": run_peer(
                "weathernote", weathernote.pid, f"ws://127.0.0.1:{wn_port}/graphql", args, refresh_graphql
            ),
            "bare-broadcast": run_peer("bare", bare.pid, f"ws://127.0.0.1:{bare_port}/ws", args, refresh_bare),
        }
        if yoga is not None:  # the same subscriber, query and refresh as WeatherNote's
            yoga_url = f"ws://127.0.0.1:{yoga_port}/graphql"
            results["graphql-yoga"] = run_peer("weathernote", yoga.pid, yoga_url, args, refresh_graphql)
        print(f"{args.subscribers} WebSocket subscribers over {args.cells} cells, one refresh per cell")
        print(f"graphql-yoga: {f'skipped ({yoga_skipped})' if yoga_skipped else yoga_versions()}")
        print(f"{'peer':<16}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KB/conn':>9}{'delivered':>11}{'lost':>6}")
        for name, r in results.items():
            print(
                f"{name:<16}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['max']:>9.1f}{r['kb_per_connection']:>9.1f}{r['delivered']:>11}{r['lost']:>6}"
            )
        wn, bare_result = results["weathernote"], results["bare-broadcast"]
        print(f"p99 weathernote / bare: {wn['p99'] / bare_result['p99']:.2f}x (target <= 2x)")
        if "graphql-yoga" in results:
            yoga_result = results["graphql-yoga"]
            print(f"p99 weathernote / graphql-yoga: {wn['p99'] / yoga_result['p99']:.2f}x")
            print(
                f"memory per connection weathernote / graphql-yoga: "
                f"{wn['kb_per_connection'] / yoga_result['kb_per_connection']:.2f}x"
            )
        print(f"server memory per subscribed connection: {wn['kb_per_connection']:.1f} KB (target <= 40 KB)")
        print(f"lost deliveries: {wn['lost']} (target 0)")


if __name__ == "__main__":
    main()
