"""Fan-out of a refresh burst to WebSocket subscribers: WeatherNote beside its peers, same run.

For each `--subscribers` count (fresh server processes each time), that many
connections over `--cells` cells, one subscription each, then one refresh
burst the way the pre-warmer makes it: every cell's new entry written and
announced in one pipeline (one round trip, all announcements within a few
ms). Each delivery's latency is measured from the burst's start, taken just
before its first announcement (the entries' `fetchedAt`; the bare peer's
`ts`), so every peer is timed from the same instant. Printed per count and
peer: p50/p99/max, server RSS growth per connection (KB), delivered, lost,
and WeatherNote's p99 over the bare broadcast's (target <= 1.5x, <= 30 KB per
connection, none lost). Peers, measured in turn:
  - bare-broadcast:  a bare Starlette WebSocket broadcast fed by one Redis pub/sub
                     connection: no GraphQL, no protocol (the limit)
  - graphql-yoga:    GraphQL Yoga on Node (bench/peers/yoga), `weatherUpdates` over graphql-ws
                     (graphql-transport-ws), fed by the same `updates:<entry key>` channels and
                     the same refreshes as WeatherNote; skipped, saying so, without node and npm

The subscribers run in `--client-processes` processes (each its own share of
sockets and file descriptors); the bench raises its open-files limit to the
hard limit, which the servers and clients inherit. A count the hard limit
cannot hold in one server process is refused, saying so.

Usage: python bench/subscriptions_fanout.py [--subscribers 5000 10000 20000] [--cells 100] [--client-processes 4] [--no-yoga]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
from harness import ROOT, Components, components, free_port, wait_http
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from ws_clients import cell_point
from yoga_peer import yoga_cmd, yoga_env, yoga_ready, yoga_versions

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryStore
from weathernote.clock import Clock
from weathernote.model import Current, Entry, Grid, Part
from weathernote.redis import RedisGateway
from weathernote.redis.keys import SEED_SPELLING
from weathernote.simulator import SimulatorProcess

SPARE_FILES = 200  # what a server holds besides its sockets: Redis, logs, modules, the listener

grid = Grid(0.1)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_open_files_limit() -> int:
    """The soft limit raised to the hard one (inherited by every process started here); the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def current_entry(index: int, fetched_at_ms: int) -> Entry:
    model = Current(
        time=time.strftime("%Y-%m-%dT%H:%M+00:00", time.gmtime(fetched_at_ms / 1000)),
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
    cell = grid.cell(*cell_point(index))
    return Entry.from_model(Part.CURRENT, cell, model, fetched_at_ms, fetched_at_ms + 600_000, fetched_at_ms + 900_000)


async def write_entries(redis_url: str, cells: int, announce: bool) -> None:
    """What a pre-warm batch does: every cell's new entry (fetched now) written and announced in one pipeline.

    Without `announce`, the entries are only put in place: what a subscriber gets at once.
    """
    redis = RedisGateway(redis_url, timeout=5.0, breaker=CircuitBreaker("bench"))
    await redis.connect()
    store = EntryStore(redis, Clock(), stale_ms=0)
    await redis.call(lambda client: client.ping())  # connected before the clock starts
    now_ms = time.time_ns() // 1_000_000
    await store.write([current_entry(index, now_ms) for index in range(cells)], announce=announce)
    await redis.aclose()


async def refresh_graphql(redis_url: str, cells: int) -> None:
    await write_entries(redis_url, cells, announce=True)


async def refresh_bare(redis_url: str, cells: int) -> None:
    """The same burst for the bare peer: one pipeline of PUBLISH, each stamped with the burst's start."""
    redis = Redis.from_url(redis_url)
    await redis.ping()
    pipe = redis.pipeline(transaction=False)
    message = orjson.dumps({"ts": time.time(), "temperature": 12.5})
    for index in range(cells):
        pipe.publish(f"bare:{index}", message)
    await pipe.execute()
    await redis.aclose()


Refresh = Callable[[str, int], Awaitable[None]]


def run_peer(kind: str, server_pid: int, url: str, args: argparse.Namespace, refresh: Refresh) -> dict[str, float]:
    """`kind`: ws_clients.py's subscriber, "weathernote" (graphql-transport-ws, weatherUpdates) or "bare"."""
    if kind == "weathernote":  # every cell's entry in place: what a GraphQL subscriber gets at once
        asyncio.run(write_entries(args.redis_url, args.cells, announce=False))
    before = rss_kb(server_pid)
    shares = [len(range(i, args.subscribers, args.client_processes)) for i in range(args.client_processes)]
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "ws_clients.py"),
                kind,
                url,
                "--count",
                str(share),
                "--offset",
                str(sum(shares[:i])),
                "--cells",
                str(args.cells),
                "--timeout",
                "60",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, share in enumerate(shares)
    ]
    for client in clients:
        assert client.stdout is not None
        line = client.stdout.readline()
        assert line.strip() == "READY", line
    time.sleep(1)
    after = rss_kb(server_pid)
    if kind == "weathernote":  # only the server under test listens: no other peer shares the work
        channels = [
            SEED_SPELLING.update_channel(Part.CURRENT, grid.cell(*cell_point(index))) for index in range(args.cells)
        ]
        with SyncRedis.from_url(args.redis_url) as redis:
            listeners = {count for _, count in redis.pubsub_numsub(*channels)}
        assert listeners == {1}, f"{url}: channels with {sorted(listeners)} listeners, expected 1 each"
    asyncio.run(refresh(args.redis_url, args.cells))
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
        "kb_per_connection": (after - before) / args.subscribers,
        "lost": lost,
        "delivered": len(latencies),
    }


def start_servers(running: Components, upstream_url: str, cells: int, with_yoga: bool) -> dict[str, tuple[int, str]]:
    """WeatherNote, the bare broadcast and (if wanted) Yoga, ready, every cell warm: name -> (pid, URL)."""
    wn_port, bare_port, yoga_port = (free_port("127.0.0.1") for _ in range(3))
    env = {
        **os.environ,
        "WEATHERNOTE_REDIS_URL": running.redis_url,
        "WEATHERNOTE_UPSTREAM_URL": upstream_url,
        "WEATHERNOTE_PORT": str(wn_port),
        "WEATHERNOTE_LOG_LEVEL": "warning",
        "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
        "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
        "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
        "WEATHERNOTE_CLIENT_ID_SECRET": "5e0b6c1d7a2f8e3b9c4d0a5f1e6b2c7d8a3f9e4b0c5d1a6f2e7b3c8d9a4f0e5b",
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
    yoga = running.start(yoga_cmd(yoga_port, running.redis_url), yoga_env(env)) if with_yoga else None
    wait_http(f"http://127.0.0.1:{wn_port}/ready")
    for index in range(cells):  # warm every cell, so subscribing costs no upstream call
        lat, lon = cell_point(index)
        httpx.post(
            f"http://127.0.0.1:{wn_port}/graphql",
            json={"query": f"{{ current(lat: {lat}, lon: {lon}) {{ cached }} }}"},
            timeout=30,
        )
    servers = {
        "weathernote": (weathernote.pid, f"ws://127.0.0.1:{wn_port}/graphql"),
        "bare-broadcast": (bare.pid, f"ws://127.0.0.1:{bare_port}/ws"),
    }
    if yoga is not None:
        wait_http(f"http://127.0.0.1:{yoga_port}/health")
        servers["graphql-yoga"] = (yoga.pid, f"ws://127.0.0.1:{yoga_port}/graphql")
    time.sleep(1)
    return servers


def measure(args: argparse.Namespace, with_yoga: bool) -> dict[str, dict[str, float]]:
    """Every peer at `args.subscribers`, on fresh servers (so one count's memory never shows in the next)."""
    # the simulator outside: it outlives the servers, which stop first
    with SimulatorProcess(max_concurrent=0, rate_limit_per_minute=1_000_000) as simulator, components() as running:
        args.redis_url = running.redis_url
        servers = start_servers(running, simulator.url, args.cells, with_yoga)
        results = {}
        for name, (pid, url) in servers.items():
            kind = "bare" if name == "bare-broadcast" else "weathernote"  # Yoga: WeatherNote's subscriber
            results[name] = run_peer(kind, pid, url, args, refresh_bare if kind == "bare" else refresh_graphql)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[5_000, 10_000, 20_000])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--no-yoga", action="store_true", help="leave out the GraphQL Yoga (Node) peer")
    args = parser.parse_args()
    open_files = raise_open_files_limit()
    too_many = [count for count in args.subscribers if count + SPARE_FILES > open_files]
    if too_many:
        sys.exit(
            f"{too_many} subscribers need more open files in one server process than the hard limit "
            f"({open_files}, RLIMIT_NOFILE) allows: raise it (e.g. `ulimit -Hn` as root) or ask for fewer"
        )
    yoga_skipped = "--no-yoga" if args.no_yoga else yoga_ready()
    print(f"graphql-yoga: {f'skipped ({yoga_skipped})' if yoga_skipped else yoga_versions()}")
    summary = []
    for count in args.subscribers:
        args.subscribers = count
        results = measure(args, with_yoga=not yoga_skipped)
        print(
            f"\n{count} WebSocket subscribers over {args.cells} cells ({args.client_processes} client processes), "
            "one refresh burst, latency from its start"
        )
        print(f"{'peer':<16}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KB/conn':>9}{'delivered':>11}{'lost':>6}")
        for name, r in results.items():
            print(
                f"{name:<16}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['max']:>9.1f}"
                f"{r['kb_per_connection']:>9.1f}{r['delivered']:>11}{r['lost']:>6}"
            )
        wn, bare = results["weathernote"], results["bare-broadcast"]
        ratio = wn["p99"] / bare["p99"]
        print(f"p99 weathernote / bare: {ratio:.2f}x (target <= 1.5x)")
        if "graphql-yoga" in results:
            yoga = results["graphql-yoga"]
            print(f"p99 weathernote / graphql-yoga: {wn['p99'] / yoga['p99']:.2f}x")
            print(
                f"memory per connection weathernote / graphql-yoga: {wn['kb_per_connection'] / yoga['kb_per_connection']:.2f}x"
            )
        summary.append((count, wn, bare, ratio))
    print("\nsummary: subscribers, weathernote p99 ms, bare p99 ms, ratio (<= 1.5x), KB/conn (<= 30), lost (0)")
    for count, wn, bare, ratio in summary:
        print(
            f"{count:>7}{wn['p99']:>10.1f}{bare['p99']:>10.1f}{ratio:>8.2f}x"
            f"{wn['kb_per_connection']:>8.1f}{wn['lost']:>6}"
        )


if __name__ == "__main__":
    main()
