"""Fan-out of a real pre-warm cycle to WebSocket subscribers: WeatherNote beside its peers, same run.

The refresh burst is the pre-warmer's own: a WeatherNote instance, the only one and so the leader,
runs a cycle every `--interval` seconds on its event loop. Its subscribers watch `--cells` cells (so
they are candidates). For each measurement the bench makes those cells due, by writing their entries
back (without announcing) as holding the previous 15-minute step just before the leader's next read of
its candidates; that cycle fetches them all in one multi-location request from the upstream simulator
over HTTP, writes them and announces each on its channel. Latency per delivery runs from the entry's
`fetchedAt` (stamped when the upstream's answer is in) to its receipt. Each measurement checks that the
cycle ran in that instance (its `weathernote_prewarm_cells_total` and the simulator's served locations
grew by at least the cells) and that every subscriber got the refreshed entry (none lost).

Peers, each fed by the same kind of cycle on the same channels (`updates:<entry key>`):
  - weathernote:     its subscribers on the instance that runs the cycle
  - bare-websockets: the `websockets` library's server, `broadcast` (synchronous writes, no task per
                     socket; bench/peers/bare_websockets.py); the WeatherNote instance, idle, runs the cycle
  - bare-starlette:  Starlette on uvicorn (websockets-sansio, as WeatherNote), each socket written in
                     turn from the pub/sub listener (bench/peers/bare_broadcast.py)
  - graphql-yoga:    GraphQL Yoga on Node (bench/peers/yoga), `weatherUpdates` over graphql-ws;
                     skipped, saying so, without node and npm
Both bare peers decode each announcement with WeatherNote's own code, as its hub does
(`without_traceparent`, then `EntryMemo.decode`), and send `{"temperature":..,"fetchedAt":<ms>}` to
the cell's sockets. The floor is the bare peer with the lower median p99; WeatherNote's p99 is compared
with it (target <= 1.5x), as the ratio of the medians and run by run.

`--runs` runs, each on fresh processes (a fresh Redis, every server new, so memory per connection is
each run's own), every peer measured in turn within a run. Printed per count: the median, min and max
over the runs of each peer's p50/p99/max, its server's RSS growth per connection (KB), its server's CPU
time from the bench's trigger to the last delivery (for the peers, also the leader's, which ran the
cycle: on a shared machine CPU time moves less than latency), delivered and lost. The subscribers run
in `--client-processes` processes; the bench raises its open-files limit to the hard limit, which the
servers and clients inherit. A count the limit cannot hold in one server process is refused, saying so.

Usage: python bench/subscriptions_fanout.py [--subscribers 5000 10000] [--cells 100] [--runs 3] [--no-yoga]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from harness import ROOT, Components, components, cpu_seconds, free_port, wait_http
from redis import Redis as SyncRedis
from ws_clients import cell_point
from yoga_peer import yoga_cmd, yoga_env, yoga_ready, yoga_versions

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryStore
from weathernote.clock import Clock
from weathernote.model import Entry, Grid, Part
from weathernote.redis import RedisGateway
from weathernote.redis.keys import SEED_SPELLING
from weathernote.simulator import SimulatorProcess
from weathernote.upstream import STEP_SECONDS
from weathernote.upstream.pace import AVAILABILITY_LAG_SECONDS

# The leader reads its candidates at each multiple of its period (real time), then fetches a fifth of
# a period later (with a 2 s period): the trigger comes this long before a read, so the CPU time read
# from it to the last delivery holds little idle waiting.
TRIGGER_BEFORE_READ_MS = 300
SPARE_FILES = 200  # what a server holds besides its sockets: Redis, logs, modules, the listener
STALE_SECONDS = 86400  # the instance's WEATHERNOTE_STALE_SECONDS: the cycle judges the last good copies
UNLIMITED = "1000000000"
FIGURES = ("p50", "p99", "max", "kb_per_connection", "cpu_ms", "leader_cpu_ms", "delivered", "lost")

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


def counter(base_url: str, name: str) -> float:
    """The sum of a counter's samples in the instance's /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
    )


def simulator_locations(simulator_url: str) -> int:
    return int(httpx.get(f"{simulator_url}/__simulator/stats", timeout=10).json()["locations"])


async def make_due(redis_url: str, cells: int) -> None:
    """Every cell's entry (and its last good copy) written back, unannounced, as holding the previous
    step: the pre-warmer's next cycle finds them all due, and nobody hears of this write."""
    redis = RedisGateway(redis_url, timeout=5.0, breaker=CircuitBreaker("bench"))
    await redis.connect()
    clock = Clock()
    store = EntryStore(redis, clock, stale_ms=STALE_SECONDS * 1000)
    wanted = [(Part.CURRENT, grid.cell(*cell_point(index))) for index in range(cells)]
    raws = await store.read_many(wanted)
    now_ms = clock.now_ms()
    step_start_ms = now_ms // (STEP_SECONDS * 1000) * STEP_SECONDS * 1000
    previous_step = []
    for (part, cell), raw in zip(wanted, raws):
        assert raw is not None, f"{cell}: no entry to make due"
        previous_step.append(
            dataclasses.replace(
                Entry.decode(part, cell, raw),
                next_update_ms=step_start_ms + AVAILABILITY_LAG_SECONDS * 1000 - 1,  # observed: the step before
                fresh_until_ms=now_ms + 300_000,
            )
        )
    await store.write(previous_step, announce=False)
    await redis.aclose()


def ask(base: str, cells: int) -> None:
    """Ask WeatherNote for every cell's current values: fetched if missing, and requested (the pre-warmer's
    demand decays each cycle; a watch registered by subscribers gone ages out), so each is a candidate."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for index in range(cells):
            lat, lon = cell_point(index)
            response = client.post("/graphql", json={"query": f"{{ current(lat: {lat}, lon: {lon}) {{ cached }} }}"})
            assert response.status_code == 200 and "errors" not in response.json(), response.text


@dataclasses.dataclass
class Server:
    """A peer's server process: its pid (for RSS), its WebSocket URL and which subscriber talks to it."""

    pid: int
    url: str
    kind: str  # ws_clients.py's: "graphql" or "bare"


def start_servers(
    running: Components, upstream_url: str, args: argparse.Namespace, with_yoga: bool
) -> tuple[str, dict[str, Server]]:
    """WeatherNote (the pre-warm leader) and the peers, ready, every cell warm: its base URL and the peers."""
    wn_port, ws_port, starlette_port, yoga_port = (free_port("127.0.0.1") for _ in range(4))
    env = {
        **os.environ,
        "WEATHERNOTE_REDIS_URL": running.redis_url,
        "WEATHERNOTE_UPSTREAM_URL": upstream_url,
        "WEATHERNOTE_PORT": str(wn_port),
        "WEATHERNOTE_LOG_LEVEL": "warning",
        "WEATHERNOTE_STALE_SECONDS": str(STALE_SECONDS),
        "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": str(args.interval),
        "WEATHERNOTE_PREWARM_WATCHED_SHARE": "1",  # every watched cell kept, whatever else is a candidate
        "WEATHERNOTE_UPSTREAM_BUDGET_PER_MINUTE": UNLIMITED,  # a cycle every few seconds affords every cell
        "WEATHERNOTE_UPSTREAM_BUDGET_PER_HOUR": UNLIMITED,
        "WEATHERNOTE_UPSTREAM_BUDGET_PER_DAY": UNLIMITED,
        "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": UNLIMITED,
        # every subscriber comes from 127.0.0.1, at once
        "WEATHERNOTE_WS_MAX_CONNECTIONS": str(args.subscribers + SPARE_FILES),
        "WEATHERNOTE_WS_MAX_CONNECTIONS_PER_ADDRESS": str(args.subscribers + SPARE_FILES),
        "WEATHERNOTE_CONNECTION_START_RATE_PER_SECOND": UNLIMITED,
        "WEATHERNOTE_CONNECTION_START_BURST": UNLIMITED,
        "WEATHERNOTE_CLIENT_ID_SECRET": "5e0b6c1d7a2f8e3b9c4d0a5f1e6b2c7d8a3f9e4b0c5d1a6f2e7b3c8d9a4f0e5b",
        "BENCH_REDIS_URL": running.redis_url,
    }
    weathernote = running.start([sys.executable, "-m", "weathernote", "serve"], env)
    peers_dir = str(ROOT / "bench" / "peers")
    bare_websockets = running.start(
        [sys.executable, str(ROOT / "bench" / "peers" / "bare_websockets.py"), str(ws_port)], env
    )
    bare_starlette = running.start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_broadcast:app",
            "--port",
            str(starlette_port),
            "--log-level",
            "warning",
            "--app-dir",
            peers_dir,
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "false",
            "--loop",
            "uvloop",
        ],
        env,
    )
    yoga = running.start(yoga_cmd(yoga_port, running.redis_url), yoga_env(env)) if with_yoga else None
    base = f"http://127.0.0.1:{wn_port}"
    wait_http(f"{base}/ready")
    ask(base, args.cells)  # every cell warm
    servers = {
        "weathernote": Server(weathernote.pid, f"ws://127.0.0.1:{wn_port}/graphql", "graphql"),
        "bare-websockets": Server(bare_websockets.pid, f"ws://127.0.0.1:{ws_port}/", "bare"),
        "bare-starlette": Server(bare_starlette.pid, f"ws://127.0.0.1:{starlette_port}/ws", "bare"),
    }
    if yoga is not None:
        wait_http(f"http://127.0.0.1:{yoga_port}/health")
        servers["graphql-yoga"] = Server(yoga.pid, f"ws://127.0.0.1:{yoga_port}/graphql", "graphql")
    # a first cycle refreshes what the warm-up did not fetch (the top cities): no part of a measured one
    deadline = time.monotonic() + 30
    while counter(base, "weathernote_prewarm_cycles_total") < 2:
        assert time.monotonic() < deadline, "no pre-warm cycle ran within 30 s"
        time.sleep(0.2)
    return base, servers


def run_peer(
    name: str, server: Server, leader: int, args: argparse.Namespace, base: str, simulator_url: str
) -> dict[str, float]:
    """`args.subscribers` subscribers on `server`, then one cycle's refresh of every cell they watch,
    run by the WeatherNote instance `leader` (a pid: `server`'s own for WeatherNote)."""
    ask(base, args.cells)
    before = rss_kb(server.pid)
    shares = [len(range(i, args.subscribers, args.client_processes)) for i in range(args.client_processes)]
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "ws_clients.py"),
                server.kind,
                server.url,
                "--count",
                str(share),
                "--offset",
                str(sum(shares[:i])),
                "--cells",
                str(args.cells),
                "--timeout",
                str(args.interval * 3 + 20),
                "--hold",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, share in enumerate(shares)
    ]
    try:
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            assert line.strip() == "READY", f"{name}: {line!r}"
        time.sleep(1)
        after = rss_kb(server.pid)
        channels = [SEED_SPELLING.update_channel(Part.CURRENT, grid.cell(*cell_point(i))) for i in range(args.cells)]
        with SyncRedis.from_url(args.redis_url) as redis:
            listeners = {count for _, count in redis.pubsub_numsub(*channels)}
        # only the server under test listens: no other peer shares the work
        assert listeners == {1}, f"{name}: channels with {sorted(listeners)} listeners, expected 1 each"
        cells_before = counter(base, "weathernote_prewarm_cells_total")
        locations_before = simulator_locations(simulator_url)
        period_ms = int(args.interval * 1000)
        time.sleep((-(time.time_ns() // 1_000_000 + TRIGGER_BEFORE_READ_MS) % period_ms) / 1000)
        since_ms = time.time_ns() // 1_000_000
        cpu_before, leader_before = cpu_seconds(server.pid), cpu_seconds(leader)
        for client in clients:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(f"GO {since_ms}\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "GO"
        asyncio.run(make_due(args.redis_url, args.cells))
        latencies: list[float] = []
        versions: set[float] = set()
        lost = 0
        for client in clients:
            assert client.stdout is not None
            result = json.loads(client.stdout.readline())
            latencies += result["latencies"]
            versions.update(result["versions"])
            lost += result["lost"]
        # before the sockets close: their closing handshakes are no part of the burst
        cpu_ms, leader_cpu_ms = (
            (cpu_seconds(pid) - before) * 1000 for pid, before in ((server.pid, cpu_before), (leader, leader_before))
        )
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("BYE\n")
            client.stdin.flush()
        for client in clients:
            client.wait(60)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    refreshed = counter(base, "weathernote_prewarm_cells_total") - cells_before
    fetched = simulator_locations(simulator_url) - locations_before
    assert refreshed >= args.cells and fetched >= args.cells, (
        f"{name}: the cycle refreshed {refreshed}, fetched {fetched}"
    )
    latencies.sort()
    return {
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "max": latencies[-1] if latencies else float("nan"),
        "kb_per_connection": (after - before) / args.subscribers,
        "cpu_ms": cpu_ms,
        "leader_cpu_ms": leader_cpu_ms,
        "lost": lost,
        "delivered": len(latencies),
        "versions": len(versions),
    }


def measure(args: argparse.Namespace, with_yoga: bool) -> dict[str, list[dict[str, float]]]:
    """Every peer at `args.subscribers`, `args.runs` times, each run on fresh processes."""
    results: dict[str, list[dict[str, float]]] = {}
    simulator = SimulatorProcess(
        max_concurrent=0, rate_limit_per_minute=1e9, rate_limit_per_hour=1e9, rate_limit_per_day=1e9
    )
    # the simulator outside: it outlives the servers, which stop first
    with simulator:
        for run in range(args.runs):
            with components() as running:
                args.redis_url = running.redis_url
                base, servers = start_servers(running, simulator.url, args, with_yoga)
                leader = servers["weathernote"].pid
                for name, server in servers.items():
                    result = run_peer(name, server, leader, args, base, simulator.url)
                    results.setdefault(name, []).append(result)
                    print(
                        f"  run {run + 1} {name:<16} p99 {result['p99']:8.1f} ms, "
                        f"{result['kb_per_connection']:5.1f} KB/conn, {result['delivered']} delivered, "
                        f"{result['lost']} lost, fetchedAt values {result['versions']}, "
                        f"CPU {result['cpu_ms']:.0f} ms (leader {result['leader_cpu_ms']:.0f} ms)",
                        flush=True,
                    )
    return results


def spread(values: list[float], digits: int) -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[5_000, 10_000])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=2.0, help="the instance's pre-warm period, seconds")
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
        print(f"\n{count} WebSocket subscribers over {args.cells} cells, {args.runs} runs", flush=True)
        results = measure(args, with_yoga=not yoga_skipped)
        print(
            f"\n{count} WebSocket subscribers over {args.cells} cells ({args.client_processes} client processes), "
            f"one pre-warm cycle's refresh (period {args.interval:g} s) per run, latency from each entry's fetchedAt; "
            f"median (min-max) of {args.runs} runs"
        )
        print(
            f"{'peer':<16}{'p50 ms':>17}{'p99 ms':>17}{'max ms':>17}{'KB/conn':>17}{'CPU ms':>17}{'leader CPU':>17}"
            f"{'delivered':>11}{'lost':>5}"
        )
        medians: dict[str, dict[str, float]] = {}
        for name, runs in results.items():
            medians[name] = {figure: statistics.median(r[figure] for r in runs) for figure in FIGURES}
            columns = [
                spread([r[figure] for r in runs], 1 if figure == "kb_per_connection" else 0)
                for figure in ("p50", "p99", "max", "kb_per_connection", "cpu_ms", "leader_cpu_ms")
            ]
            if name == "weathernote":
                columns[-1] = "(itself)"
            delivered = sum(int(r["delivered"]) for r in runs)
            lost = sum(int(r["lost"]) for r in runs)
            print(f"{name:<16}{''.join(f'{column:>17}' for column in columns)}{delivered:>11}{lost:>5}")
        floor = min(("bare-websockets", "bare-starlette"), key=lambda name: medians[name]["p99"])
        wn = medians["weathernote"]
        ratio = wn["p99"] / medians[floor]["p99"]
        # runs are interleaved: each run's pair met the same machine
        per_run = [w["p99"] / b["p99"] for w, b in zip(results["weathernote"], results[floor])]
        cpu_ratio = wn["cpu_ms"] / (medians[floor]["cpu_ms"] + medians[floor]["leader_cpu_ms"])
        print(f"floor (the bare peer with the lower median p99): {floor}")
        print(
            f"p99 weathernote / {floor}: {ratio:.2f}x (target <= 1.5x); "
            f"per run: {', '.join(f'{r:.2f}x' for r in per_run)}, median {statistics.median(per_run):.2f}x"
        )
        print(
            f"CPU of the burst, weathernote (cycle and fan-out in one process) / {floor} and its leader's: {cpu_ratio:.2f}x"
        )
        if "graphql-yoga" in medians:
            print(f"p99 weathernote / graphql-yoga: {wn['p99'] / medians['graphql-yoga']['p99']:.2f}x")
        lost = sum(int(r["lost"]) for r in results["weathernote"])
        summary.append((count, wn, medians[floor], floor, ratio, lost))
    print(
        "\nsummary (medians): subscribers, weathernote p99 ms, floor p99 ms, ratio (<= 1.5x), KB/conn (<= 28), lost (0)"
    )
    for count, wn, floor_figures, floor, ratio, lost in summary:
        print(
            f"{count:>7}{wn['p99']:>10.1f}{floor_figures['p99']:>10.1f} ({floor}){ratio:>8.2f}x"
            f"{wn['kb_per_connection']:>8.1f}{lost:>6}"
        )


if __name__ == "__main__":
    main()
