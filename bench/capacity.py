"""The capacity model's inputs, measured on this code; the seed's scenario sized from them; and
(`--check`) the model's predictions for the local three-instance topology beside what it does.

Measure (always; three to five minutes on a shared two-core machine). The local topology with ONE instance (weathernote.topology:
a 3 + 3 Valkey Cluster, the Open-Meteo simulator, nginx), the rate limits and upstream shares
lifted (one load generator stands for many phones; the limits have tests of their own), the
pre-warmer off (its upstream plan is arithmetic, printed below), request logs on. Then:

  - cached: the app's CurrentWeather as a POST over 300 warm cells from 1,000 client ids (each
    its own address), closed loop, straight to the instance: requests a second, and the CPU each
    process spent per request (/proc: the instance, the six Valkey nodes, the load generator);
  - the p99 target: open loads (latency from when each request was due) at fractions of that
    throughput, the highest whose p99 stays within `--p99-ms` (the instance's CPU utilisation
    there is the headroom a deployment keeps);
  - through nginx: the same closed loop through the balancer (nginx's CPU per request);
  - render miss: the same requests to a second instance on the same Cluster whose render cache
    (100 kB) cannot hold them (every answer executed and rendered again; Redis still hits);
  - cold: CurrentWeather for `--cold-cells` cells never asked for, 4 at a time (each one miss,
    one upstream call, a write and an announcement);
  - Redis, per phase: INFO commandstats, total_net_input/output_bytes and used_cpu deltas summed
    over the primaries, per request (INFO's own calls left out); MEMORY USAGE of each part's entry
    and stale copy, and of a client's rate-limit keys; the background (an idle instance) per second;
  - WebSocket: `--subscribers` subscribers (bench/ws_clients.py processes) over 100 cells, straight
    to the instance, then one subscriber per cell: its RSS per connection, its CPU per connection
    and per cell subscribed, per keep-alive ping (one 15 s period: one ping each) and, for one
    refresh burst (every cell's entry written again and announced in one pipeline per shard, as a
    pre-warm batch), per cell rendered and per delivery.

It prints the inputs and the seed's scenario worked through from them (instances, Redis shards,
memory, the HPA's range, the upstream plan), and writes the inputs as JSON (`--save`).

Check (`--check`; two to five minutes more): the topology with THREE instances, and on this machine
the model's predictions beside the measurements, each with its error (target within ±25 %):
the cached throughput through nginx (saturated, and within the p99 target), Redis operations,
bytes and CPU a second at a fixed rate, the instances' memory and CPU for `--check-subscribers`
subscribers through nginx and one refresh burst to them, and the upstream calls and weight of
`--check-cells` cold cells asked from every instance at once. Everything shares this machine's
cores (the load generator, nginx, six Valkey nodes, the instances), so the check's model is a
machine model: each request costs the sum of every process's measured CPU per request, the cores
available are the machine's minus what other tenants used in an idle second before the check
(read from /proc/stat), and no instance may exceed one core.

Usage: .venv/bin/python bench/capacity.py [--check] [--inputs FILE] [--save FILE] [--p99-ms 25]
           [--duration 5] [--subscribers 2000] [--check-subscribers 1500] [--cold-cells 150]
           [--check-cells 100] [--peak-factor 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cache_cannot_help import cell_points, operations, write_requests
from cached_current import load
from edge import cells as cold_points
from edge import client_headers
from harness import ROOT, free_port, wait_http
from redis import Redis, RedisCluster
from subscriptions_fanout import raise_open_files_limit, rss_kb
from ws_clients import cell_point

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryStore
from weathernote.clock import Clock
from weathernote.model import Entry, Grid, Part
from weathernote.redis import RedisGateway
from weathernote.redis.keys import CLUSTER_SPELLING
from weathernote.topology import Topology
from weathernote.upstream import request_weight

TICKS = os.sysconf("SC_CLK_TCK")
UNLIMITED = 1_000_000_000
# what every instance of both topologies runs with: limits and shares out of the way, as bench/edge.py
LIFTED = {
    "rate_limit_per_minute": 100_000_000,
    "rate_limit_period_seconds": 1,  # a client's window log stays a few entries, as a phone's does
    "upstream_client_share_per_minute": 1,
    "upstream_client_share_per_day": 1,
    "upstream_address_share_per_minute": 1,
    "upstream_address_share_per_day": 1,
    "upstream_budget_per_minute": UNLIMITED,
    "upstream_budget_per_hour": UNLIMITED,
    "upstream_budget_per_day": UNLIMITED,
    "ws_max_connections_per_address": 20_000,
    "connection_start_rate_per_second": 100_000,
    "connection_start_burst": 100_000,
}
WARM_CELLS = 300
CLIENTS = 1_000
WS_CELLS = 100
# WEATHERNOTE_WS_KEEPALIVE_SECONDS's default: a connection pings 15 s after it opened, and every 15 s
KEEPALIVE_SECONDS = 15.0
OURS = ("instance", "redis", "nginx", "loadgen", "simulator", "self", "render_miss")
grid = Grid(0.1)


# ------------------------------------------------------------------ processes and their CPU


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one live process (0 once it is gone)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process of a process group (nginx's master and workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children_cpu_seconds() -> float:
    """CPU of this process's finished children: the load generator, once it has exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) from /proc/stat, for the other tenants' share."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICKS, time.monotonic()


@dataclass
class Processes:
    """The pids of one running topology (and of instances started beside it), by role."""

    instances: list[int]
    redis: list[int]
    nginx: int
    simulator: int
    extra: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, topology: Topology) -> Processes:
        entries = topology.state["processes"]
        return cls(
            instances=[e["pid"] for e in entries if e["name"].startswith("instance-")],
            redis=[e["pid"] for e in entries if e["name"].startswith("redis-")],
            nginx=next(e["pid"] for e in entries if e["name"] == "nginx"),
            simulator=next(e["pid"] for e in entries if e["name"] == "simulator"),
        )

    def cpu(self) -> dict[str, float]:
        return {
            "instance": sum(cpu_seconds(pid) for pid in self.instances),
            "redis": sum(cpu_seconds(pid) for pid in self.redis),
            "nginx": group_cpu_seconds(self.nginx),
            "loadgen": children_cpu_seconds(),
            "simulator": cpu_seconds(self.simulator),
            "self": cpu_seconds(os.getpid()),
            **{name: cpu_seconds(pid) for name, pid in self.extra.items()},
            "machine": machine_busy_seconds()[0],
        }


# ------------------------------------------------------------------ Redis's own counters


class RedisNodes:
    """INFO of every node of a Cluster (or one server): commands, bytes and CPU, summed."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [Redis.from_url(url) for url in urls]
        self.primaries = [c for c in self.clients if c.info("replication")["role"] == "master"]
        # INFO's own bytes (its replies are kilobytes): what one snapshot adds, taken off every delta
        first = self.snapshot()
        second = self.snapshot()
        self.own = Counter({k: second[k] - first[k] for k in ("net_in", "net_out")})

    def snapshot(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for client in self.clients:
            primary = client in self.primaries
            info = client.info("all")
            totals["cpu_all"] += info["used_cpu_user"] + info["used_cpu_sys"]
            if not primary:
                continue
            totals["net_in"] += info["total_net_input_bytes"]
            totals["net_out"] += info["total_net_output_bytes"]
            totals["used_memory"] += info["used_memory"]
            for name, value in info.items():
                if name.startswith("cmdstat_") and isinstance(value, dict):
                    command = name.removeprefix("cmdstat_")
                    if command not in ("info",):  # this class's own
                        totals[f"cmd:{command}"] += value["calls"]
        return totals

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass
class Phase:
    """What one stretch of load cost: requests, wall time, each process's CPU, Redis's counters."""

    requests: int
    seconds: float
    cpu: dict[str, float]
    redis: Counter[str]
    result: dict[str, float]
    others: float  # cores other tenants of the machine kept busy meanwhile

    def per_request_ms(self, role: str) -> float:
        return self.cpu[role] / self.requests * 1000 if self.requests else math.nan

    def redis_per_request(self) -> dict[str, Any]:
        commands = {k.removeprefix("cmd:"): v / self.requests for k, v in self.redis.items() if k.startswith("cmd:")}
        return {
            "ops": sum(commands.values()),
            "client_commands": sum(v for k, v in commands.items() if not _inside_script(k)),
            "by_command": {k: round(v, 3) for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v >= 0.005},
            "in_bytes": self.redis["net_in"] / self.requests,
            "out_bytes": self.redis["net_out"] / self.requests,
            "cpu_ms": self.redis["cpu_all"] / self.requests * 1000,
        }


def _inside_script(command: str) -> bool:
    """Commands the rate-limit and budget scripts run inside Valkey (counted by commandstats, not sent)."""
    return command in ("time", "zremrangebyscore", "zcard", "zrange", "zadd", "pexpire", "hget", "hset", "hincrbyfloat")


class Meter:
    """Brackets a stretch of work: CPU by role and Redis counters before and after."""

    def __init__(self, processes: Processes, nodes: RedisNodes) -> None:
        self.processes = processes
        self.nodes = nodes

    @contextmanager
    def measure(self, redis: bool = True) -> Iterator[dict[str, Any]]:
        cpu0, t0 = self.processes.cpu(), time.monotonic()
        redis0 = self.nodes.snapshot() if redis else Counter()
        out: dict[str, Any] = {}
        yield out
        seconds = time.monotonic() - t0
        cpu1 = self.processes.cpu()
        redis1 = self.nodes.snapshot() if redis else Counter()
        out["seconds"] = seconds
        out["cpu"] = {role: cpu1[role] - cpu0[role] for role in cpu0}
        out["redis"] = Counter({k: redis1[k] - redis0[k] - self.nodes.own.get(k, 0) for k in redis1})
        # other tenants of this machine: what it was busy with beyond the processes measured here
        out["others"] = (cpu1["machine"] - cpu0["machine"] - sum(out["cpu"].get(r, 0.0) for r in OURS)) / seconds

    def quiet(self, below: float = 0.3, limit: float = 10.0) -> float:
        """Wait (up to `limit` s) for a second in which other tenants kept less than `below` cores busy."""
        deadline = time.monotonic() + limit
        while True:
            with self.measure(redis=False) as m:
                time.sleep(1)
            if m["others"] < below or time.monotonic() > deadline:
                return float(m["others"])

    def phase(self, run: Callable[[], dict[str, float]]) -> Phase:
        self.quiet()
        with self.measure() as m:
            result = run()
        return Phase(
            int(result["requests"] + result["errors"]), m["seconds"], m["cpu"], m["redis"], result, m["others"]
        )


# ------------------------------------------------------------------ the requests


def current_body(lat: float, lon: float) -> str:
    _, text = operations()["CurrentWeather"]
    return json.dumps({"query": text, "operationName": "CurrentWeather", "variables": {"lat": lat, "lon": lon}})


def forecast_body(lat: float, lon: float) -> str:
    _, text = operations()["Forecast"]
    return json.dumps({"query": text, "operationName": "Forecast", "variables": {"lat": lat, "lon": lon}})


def request_file(url: str, points: list[tuple[float, float]], repeat: int, seed: int = 1) -> Path:
    """`repeat` passes over `points` (in order: a small LRU keeps none of them), each request from one of
    CLIENTS phones (its id and address)."""
    rng = random.Random(seed)
    lines = [
        {"url": url, "body": current_body(lat, lon), "headers": client_headers(rng.randrange(CLIENTS))}
        for _ in range(repeat)
        for lat, lon in points
    ]
    return write_requests(lines)


def loadgen(target: Path, duration: float, connections: int = 32, rate: float | None = None, total: int | None = None):
    """bench/loadgen.py through cached_current.load, no warm-up: every request sent is counted."""
    args = argparse.Namespace(connections=connections, duration=duration, warmup=0)
    extra = [*(["--rate", f"{rate:.0f}"] if rate else []), *(["--total", str(total)] if total else [])]
    return lambda: load(target, None, args, *extra)


def fill(url: str, points: list[tuple[float, float]], body: Callable[[float, float], str] = current_body) -> None:
    """Every point's cell asked once (a miss to the simulator where it is cold), 8 at a time."""

    async def run() -> None:
        gate = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(index: int, lat: float, lon: float) -> None:
                async with gate:
                    response = await client.post(
                        url,
                        content=body(lat, lon),
                        headers={"content-type": "application/json", **client_headers(index)},
                    )
                answer = response.json()
                assert "errors" not in answer, answer

            await asyncio.gather(*(one(i, lat, lon) for i, (lat, lon) in enumerate(points)))

    asyncio.run(run())


def metric_sum(urls: list[str], name: str) -> float:
    """A metric summed over its series and over the instances (their own ports)."""
    total = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
    return total


def simulator_stats(topology: Topology) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{topology.upstream_url}/__simulator/stats", timeout=5).json()
    return stats


def open_simulator(topology: Topology) -> None:
    """The simulator's free-tier limits lifted: the benchmark's own fills must not be refused."""
    httpx.post(
        f"{topology.upstream_url}/__simulator/config",
        json={
            "rate_limit_per_minute": UNLIMITED,
            "rate_limit_per_hour": UNLIMITED,
            "rate_limit_per_day": UNLIMITED,
            "max_concurrent": 0,
        },
        timeout=5,
    ).raise_for_status()


def start_topology(instances: int, port: int) -> Topology:
    state = Path(tempfile.mkdtemp(prefix="weathernote-capacity-"))
    topology = Topology(state, port=port, instances=instances, prewarm_interval_seconds=0, log_level="info", env=LIFTED)
    print(f"starting the local topology ({instances} instance(s)) in {state} …", flush=True)
    topology.start(180)
    open_simulator(topology)
    return topology


def commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "weathernote"],
        capture_output=True,
        text=True,
    )
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    return head.stdout.strip() + (f" (working tree: {', '.join(changed)} changed)" if changed else "")


# ------------------------------------------------------------------ measure: one instance


def ladder(meter: Meter, target: Path, rates: list[float], duration: float) -> list[dict[str, float]]:
    """Open loads at each rate: achieved rate, p50/p99, the instance's CPU utilisation."""
    rows = []
    for rate in rates:
        phase = meter.phase(loadgen(target, duration, connections=64, rate=rate))
        rows.append(
            {
                "offered": rate,
                "rps": phase.result["rps"],
                "p50_ms": phase.result["p50_ms"],
                "p99_ms": phase.result["p99_ms"],
                "errors": phase.result["errors"],
                "instance_cpu": phase.cpu["instance"] / phase.seconds,
                "valkey_cpu_ms": phase.redis["cpu_all"] / phase.requests * 1000,
                "others": phase.others,
            }
        )
    return rows


def median_run(runs: list[Phase]) -> Phase:
    """The run whose instance CPU per request is the median of the runs'."""
    return sorted(runs, key=lambda r: r.per_request_ms("instance"))[len(runs) // 2]


def within(rows: list[dict[str, float]], p99_ms: float) -> dict[str, float] | None:
    """The highest rung whose p99 (from when each request was due: falling behind shows) met the target, without errors."""
    good = [r for r in rows if r["p99_ms"] <= p99_ms and not r["errors"]]
    return max(good, key=lambda r: r["offered"]) if good else None


def entry_memory(topology: Topology) -> dict[str, Any]:
    """MEMORY USAGE of each part's entry and stale copy (20 cells with all three), of rate-limit keys."""
    cluster = RedisCluster.from_url(topology.redis_url)
    sizes: dict[str, list[int]] = {}
    for lat, lon in cell_points(20):
        cell = grid.cell(lat, lon)
        for part in Part:
            for kind, key in (
                ("entry", CLUSTER_SPELLING.entry(part, cell)),
                ("stale", CLUSTER_SPELLING.stale(part, cell)),
            ):
                size = cluster.memory_usage(key)
                if size:
                    sizes.setdefault(f"{part.value} {kind}", []).append(int(size))
    # one phone's keys after 8 requests (its whole day, at the seed's figures): the client's and its address's
    url = f"{topology.instance_urls[0]}/graphql"
    for _ in range(8):
        httpx.post(
            url,
            content=current_body(*cell_points(1)[0]),
            headers={
                "content-type": "application/json",
                "x-client-id": "capacity-probe",
                "x-forwarded-for": "10.200.0.1",
            },
        )
    for pattern, name in (("rate_limit:hash:*", "rate limit (client)"), ("rate_limit:ip:*", "rate limit (address)")):
        found = [k for node in cluster.get_primaries() for k in cluster.scan_iter(match=pattern, target_nodes=node)]
        usage = [int(cluster.memory_usage(k) or 0) for k in found[:20]]
        if usage:
            sizes[name] = [max(usage)]
    cluster.close()
    return {name: round(sum(v) / len(v)) for name, v in sizes.items()}


async def announce_refresh(redis_url: str, cells: int) -> int:
    """A pre-warm batch's write: every subscribed cell's current entry written again as fetched now and
    announced, in one pipeline per shard; returns its fetchedAt (ms)."""
    redis = RedisGateway(redis_url, timeout=5.0, breaker=CircuitBreaker("capacity"))
    await redis.connect()
    clock = Clock()
    store = EntryStore(redis, clock, stale_ms=86_400_000)
    wanted = [(Part.CURRENT, grid.cell(*cell_point(index))) for index in range(cells)]
    raws = await store.read_many(wanted)
    now_ms = clock.now_ms()
    entries = [
        dataclasses.replace(Entry.decode(part, cell, raw), fetched_at_ms=now_ms)
        for (part, cell), raw in zip(wanted, raws)
        if raw is not None
    ]
    assert len(entries) == cells, "a subscribed cell has no entry"
    await store.write(entries, announce=True)
    await redis.aclose()
    return now_ms


class Subscribers:
    """bench/ws_clients.py processes holding `count` GraphQL subscribers of WS_CELLS cells at `url`."""

    def __init__(self, url: str, count: int, processes: int) -> None:
        shares = [len(range(i, count, processes)) for i in range(processes)]
        self.clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "ws_clients.py"),
                    "graphql",
                    url,
                    "--count",
                    str(share),
                    "--offset",
                    str(sum(shares[:i])),
                    "--cells",
                    str(WS_CELLS),
                    "--timeout",
                    "60",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, share in enumerate(shares)
        ]

    def ready(self) -> None:
        for client in self.clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            assert line.strip() == "READY", f"a subscriber process said {line!r}"

    def go(self, since_ms: int) -> None:
        """From now on each subscriber waits for an entry fetched at or after `since_ms`."""
        for client in self.clients:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(f"GO {since_ms}\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "GO"

    def results(self) -> tuple[list[float], int]:
        latencies: list[float] = []
        lost = 0
        for client in self.clients:
            assert client.stdout is not None
            out = json.loads(client.stdout.readline())
            latencies += out["latencies"]
            lost += out["lost"]
        return latencies, lost

    def close(self) -> None:
        """Each process closes its sockets once it has reported (a minute at most), else it is killed."""
        deadline = time.monotonic() + 60
        for client in self.clients:
            try:
                client.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()


@dataclass
class Group:
    """What one group of subscribers cost the instances: opening, idling two keep-alive periods, one burst."""

    count: int
    rss_mib: float = 0.0
    connect: float = 0.0  # CPU seconds, the instances' background taken off
    pings: float = 0.0
    burst: float = 0.0
    delivered: int = 0
    lost: int = 0
    p99_ms: float = math.nan


def subscriber_group(
    ws_url: str, redis_url: str, pids: list[int], count: int, processes: int, idle_rate: float, idle: float
) -> Group:
    """`count` subscribers through `ws_url` (cycling over WS_CELLS cells), `idle` s of keep-alives, then one
    refresh of every cell; the instances' (`pids`) RSS growth and CPU for each. `idle_rate` (cores) is the
    instances' own background, taken off each interval's CPU. The subscribers leave at the end."""
    group = Group(count)
    rss0 = sum(rss_kb(pid) for pid in pids)
    cpu0, t0 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
    subscribers = Subscribers(ws_url, count, processes)
    try:
        subscribers.ready()
        time.sleep(0.5)
        cpu1, t1 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        if idle and t1 - t0 > KEEPALIVE_SECONDS - 3:
            print(
                f"(opening {count:,} subscribers took {t1 - t0:.1f} s: their pings may overlap the burst)", flush=True
            )
        group.rss_mib = (sum(rss_kb(pid) for pid in pids) - rss0) / 1024
        group.connect = cpu1 - cpu0 - (t1 - t0) * idle_rate
        subscribers.go(time.time_ns() // 1_000_000)
        time.sleep(idle)
        cpu2, t2 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        group.pings = cpu2 - cpu1 - (t2 - t1) * idle_rate

        # The connections opened within one keep-alive period of each other (checked below), so the
        # period just measured held one ping of each, and the next ones are a period away: the burst
        # meets none of them.
        async def burst() -> tuple[float, float]:
            await announce_refresh(redis_url, WS_CELLS)
            return await until_idle(pids, idle_rate)

        cpu3, t3 = asyncio.run(burst())
        group.burst = cpu3 - cpu2 - (t3 - t2) * idle_rate
        latencies, group.lost = subscribers.results()
    finally:
        subscribers.close()
    latencies.sort()
    group.delivered = len(latencies)
    group.p99_ms = latencies[int(0.99 * (len(latencies) - 1))] if latencies else math.nan
    return group


def websocket_costs(
    ws_url: str, redis_url: str, pids: list[int], count: int, processes: int, idle_rate: float
) -> dict[str, float]:
    """Two groups on one instance, so that what a connection costs and what a cell costs come apart:
    `count` over WS_CELLS cells, then one subscriber per cell (the first group gone, so each cell is
    subscribed anew in the instance's hub). Opening: WS_CELLS x (connection + cell) and
    count x connection + WS_CELLS x cell; a refresh: WS_CELLS x (render + send) and WS_CELLS x render +
    count x send."""
    # the many first: the memory the other group would free and leave to the allocator would hide theirs
    many = subscriber_group(ws_url, redis_url, pids, count, processes, idle_rate, KEEPALIVE_SECONDS)
    one = subscriber_group(ws_url, redis_url, pids, WS_CELLS, 1, idle_rate, 0.0)
    # the differences of two noisy figures: a negative one is noise around nothing, taken as 0
    connection = max(0.0, (many.connect - one.connect) / (count - WS_CELLS))
    send = max(0.0, (many.burst - one.burst) / (count - WS_CELLS))
    return {
        "subscribers": count,
        "kb_per_connection": many.rss_mib * 1024 / count,
        "connection_cpu_ms": connection * 1000,
        "cell_subscribe_cpu_ms": max(0.0, one.connect / WS_CELLS - connection) * 1000,
        "start_cpu_ms": many.connect / count * 1000,  # all told, at count / WS_CELLS subscribers a cell
        "ping_cpu_us": many.pings / count * 1e6,  # one keep-alive period: one ping each
        "send_cpu_us": send * 1e6,
        "render_cpu_us": max(0.0, one.burst / WS_CELLS - send) * 1e6,
        "delivery_cpu_us": many.burst / count * 1e6,  # all told, at count / WS_CELLS subscribers a cell
        "burst_p99_ms": many.p99_ms,
        "delivered": many.delivered + one.delivered,
        "lost": many.lost + one.lost,
        "groups": [dataclasses.asdict(one), dataclasses.asdict(many)],
    }


async def until_idle(pids: list[int], baseline: float, step: float = 0.1, limit: float = 20) -> tuple[float, float]:
    """(CPU seconds of `pids`, monotonic time) once a `step` went by with no more than their `baseline`
    (cores: keep-alives, background) and 3 ms of CPU: the end of a burst of work."""
    last, at = sum(cpu_seconds(p) for p in pids), time.monotonic()
    deadline = at + limit
    while at < deadline:
        await asyncio.sleep(step)
        now, then = sum(cpu_seconds(p) for p in pids), time.monotonic()
        if now - last < baseline * (then - at) + 0.003:
            return last, at
        last, at = now, then
    return last, at


def measure(args: argparse.Namespace) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "commit": commit(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "p99_target_ms": args.p99_ms,
    }
    topology = start_topology(1, free_port("127.0.0.1"))
    small: subprocess.Popen[bytes] | None = None
    try:
        processes = Processes.of(topology)
        nodes = RedisNodes(topology.state["redis"]["nodes"])
        meter = Meter(processes, nodes)
        instance = topology.instance_urls[0]
        # the background: an idle instance's Redis traffic (hub keep-alives, flushes)
        time.sleep(1)
        with meter.measure() as idle:
            time.sleep(args.duration)
        inputs["background"] = {
            "ops_per_s": sum(v for k, v in idle["redis"].items() if k.startswith("cmd:")) / idle["seconds"],
            "in_bytes_per_s": idle["redis"]["net_in"] / idle["seconds"],
            "out_bytes_per_s": idle["redis"]["net_out"] / idle["seconds"],
            "instance_cpu": idle["cpu"]["instance"] / idle["seconds"],
            "redis_cpu": idle["cpu"]["redis"] / idle["seconds"],
            "redis_info_cpu": idle["redis"]["cpu_all"] / idle["seconds"],
        }
        points = cell_points(WARM_CELLS)
        fill(f"{instance}/graphql", points)
        fill(f"{instance}/graphql", points[:20], forecast_body)
        inputs["redis_memory_bytes"] = entry_memory(topology)

        # a second instance on the same Cluster whose render cache cannot hold the answers
        small_port = free_port("127.0.0.1")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")},
            **{f"WEATHERNOTE_{k.upper()}": str(v) for k, v in LIFTED.items()},
            "WEATHERNOTE_REDIS_URL": topology.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": topology.upstream_url,
            "WEATHERNOTE_CLIENT_ID_SECRET": (topology.dir / "client_id_secret").read_text().strip(),
            "WEATHERNOTE_PORT": str(small_port),
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            "WEATHERNOTE_RENDER_CACHE_BYTES": "100000",
            "WEATHERNOTE_DATA_DIR": str(topology.dir / "render-miss"),
            "WEATHERNOTE_LOG_LEVEL": "info",
        }
        small = subprocess.Popen(
            [sys.executable, "-m", "weathernote", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        processes.extra["render_miss"] = small.pid
        small_url = f"http://127.0.0.1:{small_port}"
        wait_http(f"{small_url}/ready", ready=300)
        rss_idle_mib = rss_kb(processes.instances[0]) / 1024

        # cached, closed loop (the first pass warms the render cache, as any instance's first minute)
        cached_file = request_file(f"{instance}/graphql", points, repeat=10)
        meter.phase(loadgen(cached_file, 2))
        runs = [meter.phase(loadgen(cached_file, args.duration)) for _ in range(args.runs)]
        cached = median_run(runs)
        rps = cached.result["rps"]
        rungs = ladder(meter, cached_file, [rps * f for f in (0.5, 0.7, 0.85, 1.0)], args.duration - 1)
        best = within(rungs, args.p99_ms)
        through = meter.phase(loadgen(request_file(f"{topology.url}/graphql", points, repeat=10), args.duration))

        # render miss: the second instance (its renders counted, to show every answer was rendered)
        # one pass: the 32 connections' cursors 9 cells apart, 300 cells between two visits of one answer
        miss_file = request_file(f"{small_url}/graphql", points, repeat=1)
        meter.phase(loadgen(miss_file, 1))
        renders0 = metric_sum([small_url], "weathernote_renders_total")
        render = meter.phase(loadgen(miss_file, args.duration))
        render.cpu["instance"] = render.cpu.pop("render_miss")
        rendered = (metric_sum([small_url], "weathernote_renders_total") - renders0) / render.requests

        # cold: cells nobody asked for, each one miss
        # as many more cold cells as connections: what the generator sends past its total is cold too
        cold_file = request_file(f"{instance}/graphql", cold_points(args.cold_cells + 4), repeat=1)
        upstream0 = simulator_stats(topology)
        misses0 = metric_sum([instance], "weathernote_cache_misses_total")
        cold = meter.phase(loadgen(cold_file, 120, connections=4, total=args.cold_cells))
        upstream1 = simulator_stats(topology)
        cold_misses = metric_sum([instance], "weathernote_cache_misses_total") - misses0
        rss_after_mib = rss_kb(processes.instances[0]) / 1024

        def path(phase: Phase, role: str = "instance") -> dict[str, Any]:
            return {
                "rps": phase.result["rps"],
                "p50_ms": phase.result["p50_ms"],
                "p99_ms": phase.result["p99_ms"],
                "errors": phase.result["errors"],
                "requests": phase.requests,
                "cpu_ms": {r: phase.per_request_ms(r) for r in ("instance", "redis", "nginx", "loadgen")},
                "instance_utilisation": phase.cpu[role] / phase.seconds,
                "others_cores": phase.others,
                "redis": phase.redis_per_request(),
            }

        inputs["cached"] = path(cached)
        inputs["cached"]["runs"] = [
            {
                "rps": r.result["rps"],
                "p99_ms": r.result["p99_ms"],
                "instance_ms": r.per_request_ms("instance"),
                "others": r.others,
            }
            for r in runs
        ]
        inputs["cached"]["ladder"] = rungs
        inputs["cached"]["at_p99"] = best
        inputs["through_nginx"] = path(through)
        inputs["render_miss"] = path(render) | {"renders_per_request": rendered}
        inputs["cold"] = path(cold) | {
            "misses_per_request": cold_misses / cold.requests,
            "upstream_requests_per_request": (upstream1["requests"] - upstream0["requests"]) / cold.requests,
            "upstream_weight_per_request": (upstream1["weight"] - upstream0["weight"]) / cold.requests,
        }
        inputs["instance_rss_mib"] = {"idle": rss_idle_mib, "after_the_runs": rss_after_mib}
        print("measuring WebSocket subscribers …", flush=True)
        fill(f"{instance}/graphql", [cell_point(i) for i in range(WS_CELLS)])
        meter.quiet()
        inputs["websocket"] = websocket_costs(
            instance.replace("http://", "ws://") + "/graphql",
            topology.redis_url,
            processes.instances,
            args.subscribers,
            args.client_processes,
            inputs["background"]["instance_cpu"],
        )
        inputs["websocket"]["rss_idle_mib"] = rss_idle_mib
        nodes.close()
    finally:
        if small is not None:
            small.terminate()
            small.wait(30)
        topology.stop()
    return inputs


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Model:
    """What the inputs say a request, a subscriber and a refresh cost."""

    inputs: dict[str, Any]

    @property
    def cached_cpu_ms(self) -> dict[str, float]:
        c = dict(self.inputs["cached"]["cpu_ms"])
        c["nginx"] = self.inputs["through_nginx"]["cpu_ms"]["nginx"]
        return c

    @property
    def headroom(self) -> float:
        """The share of saturated throughput that kept p99 within the target (one instance)."""
        at = self.inputs["cached"]["at_p99"]
        return at["offered"] / self.inputs["cached"]["rps"] if at else math.nan

    @property
    def utilisation_at_p99(self) -> float:
        """The instance's CPU utilisation at that rate: how busy a core may be and keep the target."""
        at = self.inputs["cached"]["at_p99"]
        return at["instance_cpu"] if at else math.nan

    def per_core(self, path: str) -> float:
        """Requests a second one core of instance CPU serves on `path` (cached, render_miss, cold)."""
        return 1000 / self.inputs[path]["cpu_ms"]["instance"]

    def machine_throughput(self, instances: int, cores: float) -> float:
        """Saturated cached throughput of `instances` on `cores` shared with nginx, Valkey and the load generator."""
        c = self.cached_cpu_ms
        machine = cores * 1000 / sum(c.values())
        return min(machine, instances * 1000 / c["instance"])

    def valkey_cpu_per_request(self) -> float:
        """Valkey's CPU seconds per cached request at half the saturated rate, background apart."""
        half = min(
            self.inputs["cached"]["ladder"], key=lambda r: abs(r["offered"] / self.inputs["cached"]["rps"] - 0.5)
        )
        return float(half["valkey_cpu_ms"]) / 1000 - self.inputs["background"]["redis_info_cpu"] / half["offered"]

    def redis_per_second(self, rate: float, instances: int) -> dict[str, float]:
        per = self.inputs["cached"]["redis"]
        bg = self.inputs["background"]
        return {
            "ops": rate * per["ops"] + instances * bg["ops_per_s"],
            "in_bytes": rate * per["in_bytes"] + instances * bg["in_bytes_per_s"],
            "out_bytes": rate * per["out_bytes"] + instances * bg["out_bytes_per_s"],
            # Valkey's CPU per request from the open load at half the saturated rate (saturated, it does
            # more per wake-up and less per request), its own background (cron, the cluster bus) apart
            "cpu": rate * self.valkey_cpu_per_request() + bg["redis_info_cpu"],
        }


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def print_inputs(inputs: dict[str, Any]) -> None:
    model = Model(inputs)
    print(
        f"\n== capacity inputs: commit {inputs['commit']}, measured {inputs['measured_at']}, {inputs['cores']} cores =="
    )
    print("one instance (one process), a 3 + 3 Valkey Cluster, 32 connections closed loop unless said, CPU per request")
    print(
        f"{'path':<26}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'inst ms':>9}{'valkey ms':>10}{'nginx ms':>9}"
        f"{'loadgen ms':>11}{'inst util':>10}{'req/s/core':>11}{'others':>8}"
    )
    for name, key in (
        ("cached", "cached"),
        ("cached through nginx", "through_nginx"),
        ("render miss (100 kB cache)", "render_miss"),
        ("cold (upstream miss), 4 conns", "cold"),
    ):
        p = inputs[key]
        c = p["cpu_ms"]
        print(
            f"{name:<26}{fmt(p['rps']):>8}{p['p50_ms']:>8.2f}{p['p99_ms']:>8.2f}{c['instance']:>9.3f}{c['redis']:>10.3f}"
            f"{c['nginx']:>9.3f}{c['loadgen']:>11.3f}{p['instance_utilisation']:>10.2f}{fmt(model.per_core(key)):>11}"
            f"{p['others_cores']:>8.2f}"
        )
    print("(others: cores other tenants of the machine kept busy during the run, from /proc/stat)")
    print(
        f"\nopen loads on the cached path (p99 target {inputs['p99_target_ms']:g} ms, latency from when each was due):"
    )
    for r in inputs["cached"]["ladder"]:
        print(
            f"  offered {fmt(r['offered']):>6}/s: achieved {fmt(r['rps']):>6}/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']:.0f}, instance CPU {r['instance_cpu']:.2f}, "
            f"other tenants {r['others']:.2f} cores"
        )
    at = inputs["cached"]["at_p99"]
    if at:
        print(
            f"  within the target: {fmt(at['offered'])}/s = {model.headroom:.0%} of saturation, the instance's core "
            f"{model.utilisation_at_p99:.0%} busy: {fmt(model.utilisation_at_p99 * model.per_core('cached'))} req/s per core"
        )
    else:
        print("  no rung kept p99 within the target")
    print("\nValkey per request (primaries; commands inside scripts counted by commandstats, marked *):")
    for name, key in (("cached", "cached"), ("render miss", "render_miss"), ("cold", "cold")):
        r = inputs[key]["redis"]
        cmds = ", ".join(f"{k}{'*' if _inside_script(k) else ''} {v:g}" for k, v in r["by_command"].items())
        print(
            f"  {name:<12} {r['ops']:.2f} ops ({r['client_commands']:.2f} sent), in {fmt(r['in_bytes'])} B, "
            f"out {fmt(r['out_bytes'])} B, Valkey CPU {r['cpu_ms'] * 1000:.0f} µs (all six nodes): {cmds}"
        )
    bg = inputs["background"]
    print(
        f"  background, one idle instance: {bg['ops_per_s']:.1f} ops/s, in {fmt(bg['in_bytes_per_s'])} B/s, "
        f"out {fmt(bg['out_bytes_per_s'])} B/s, instance CPU {bg['instance_cpu']:.3f} core"
    )
    print(
        f"  Valkey CPU per cached request at an open load of half the saturated rate: "
        f"{model.valkey_cpu_per_request() * 1e6:.0f} µs, and {bg['redis_info_cpu']:.3f} core of its own background"
    )
    cold = inputs["cold"]
    print(
        f"  cold: {cold['misses_per_request']:.2f} misses, {cold['upstream_requests_per_request']:.2f} upstream requests, "
        f"weight {cold['upstream_weight_per_request']:.2f} per request"
    )
    print(f"  render miss: {inputs['render_miss']['renders_per_request']:.2f} renders per request")
    mem = inputs["redis_memory_bytes"]
    print("Valkey memory (MEMORY USAGE, bytes): " + ", ".join(f"{k} {fmt(v)}" for k, v in mem.items()))
    rss = inputs["instance_rss_mib"]
    print(f"instance RSS: {rss['idle']:.1f} MiB warm and idle, {rss['after_the_runs']:.1f} MiB after the runs")
    ws = inputs["websocket"]
    print(
        f"WebSocket ({ws['subscribers']:,} subscribers over {WS_CELLS} cells, one instance): "
        f"{ws['kb_per_connection']:.1f} KB RSS per connection; instance CPU: {ws['connection_cpu_ms']:.2f} ms per "
        f"connection (handshake, init, subscribe, first value) + {ws['cell_subscribe_cpu_ms']:.2f} ms per cell the "
        f"instance subscribes to ({ws['start_cpu_ms']:.2f} ms a start all told at {ws['subscribers'] // WS_CELLS} a cell), "
        f"{ws['ping_cpu_us']:.1f} µs per keep-alive ping; a refresh: {ws['render_cpu_us']:.1f} µs per cell + "
        f"{ws['send_cpu_us']:.1f} µs per delivery ({ws['delivery_cpu_us']:.1f} µs a delivery all told); the burst's p99 "
        f"{ws['burst_p99_ms']:.1f} ms, {ws['delivered']:,} delivered, {ws['lost']} lost"
    )


# ------------------------------------------------------------------ the seed's scenario


def scenario(inputs: dict[str, Any], peak_factor: float) -> None:
    """The seed's 1M users sized from the inputs, every step printed."""
    ws = inputs["websocket"]
    mem = inputs["redis_memory_bytes"]
    print("\n== the seed's scenario: 1M users, 500k active a day at 8 requests, 100k concurrent subscribers ==")
    daily = 500_000 * 8
    mean = daily / 86_400
    peak = mean * peak_factor
    print(
        f"requests: 500,000 x 8 = {daily:,}/day = {mean:.1f}/s mean; x {peak_factor:g} at the daily peak "
        f"(assumed) = {peak:.0f}/s"
    )
    pod_cpu = 0.35  # hpa.yaml: 70 % of deployment.yaml's 500m request
    cached_ms, render_ms = inputs["cached"]["cpu_ms"]["instance"], inputs["render_miss"]["cpu_ms"]["instance"]
    worst_ms = max(cached_ms, render_ms)  # a render miss costs more; a noisy run may say otherwise
    http_cores = peak * worst_ms / 1000
    print(
        f"HTTP CPU at the peak, at the larger of the cached ({cached_ms:.3f} ms) and render-miss ({render_ms:.3f} ms) "
        f"costs (with 50,000 cells most requests are render misses): {peak:.0f} x {worst_ms:.3f} ms = "
        f"{http_cores:.3f} core"
    )
    subs = 100_000
    pings = subs / KEEPALIVE_SECONDS
    ping_cores = pings * ws["ping_cpu_us"] / 1e6
    print(
        f"keep-alive pings: {subs:,} / {KEEPALIVE_SECONDS:g} s = {pings:,.0f}/s x {ws['ping_cpu_us']:.1f} µs "
        f"= {ping_cores:.3f} core"
    )
    # response, subscription, document and persisted-query caches (64 MiB each), decoded entries (32) and stand-ins (8)
    caches_mib = 4 * 64 + 32 + 8
    base = inputs["instance_rss_mib"]["idle"]
    for limit in (512, 1024):
        room = limit * 0.9 - base - caches_mib
        per_pod = max(0, int(room * 1024 / ws["kb_per_connection"]))
        print(
            f"sockets per pod within a {limit} MiB limit (90 % of it): ({limit * 0.9:.0f} - {base:.0f} idle - "
            f"{caches_mib} caches at their budgets) MiB / {ws['kb_per_connection']:.1f} KB = {per_pod:,}"
        )
    cap = 10_000
    room = 1024 * 0.9 - base - caches_mib
    per_pod = min(cap, int(room * 1024 / ws["kb_per_connection"]))
    pods_ws = math.ceil(subs / per_pod)
    storm_s = per_pod * ws["start_cpu_ms"] / 1000
    print(
        f"with 1 GiB and at most {cap:,} sockets a pod (WEATHERNOTE_WS_MAX_CONNECTIONS): {subs:,} / {per_pod:,} = "
        f"{pods_ws} pods; one pod lost sends {per_pod:,} reconnects x {ws['start_cpu_ms']:.2f} ms = {storm_s:.1f} "
        f"core-seconds to the others"
    )
    renders = (pods_ws + 1) * min(50_000, math.ceil(subs / (pods_ws + 1)))  # each pod renders each cell it serves
    burst = (renders * ws["render_cpu_us"] + subs * ws["send_cpu_us"]) / 1e6
    print(
        f"fan-out, every subscriber's cell refreshed once a 15-minute step, at worst each subscriber on a cell of "
        f"its own (50,000 cells): {renders:,} renders x {ws['render_cpu_us']:.1f} µs + {subs:,} deliveries x "
        f"{ws['send_cpu_us']:.1f} µs = {burst:.1f} core-seconds a step over the pods (mean {burst / 900:.4f} core)"
    )
    steady = http_cores + ping_cores + burst / 900
    min_pods = max(2, pods_ws + 1)
    surge_pods = math.ceil(9 * http_cores / pod_cpu)
    max_pods = min_pods + surge_pods
    print(
        f"HPA: minReplicas = {pods_ws} for the sockets + 1 for a pod's loss = {min_pods}; their steady CPU "
        f"{steady:.3f} core is {steady / (min_pods * 0.5):.0%} of {min_pods} x 500m requested (target 70 %), so the "
        f"CPU metric keeps them at the minimum; a surge of 10 x the peak's requests adds 9 x {http_cores:.3f} core = "
        f"{surge_pods} pod(s) at 0.35 core each: maxReplicas = {min_pods} + {surge_pods} = {max_pods}"
    )
    per_req = inputs["cached"]["redis"]
    ops = peak * per_req["ops"] + min_pods * inputs["background"]["ops_per_s"]
    vcpu = peak * Model(inputs).valkey_cpu_per_request() + inputs["background"]["redis_info_cpu"]
    print(
        f"Valkey ops at the peak: {peak:.0f} x {per_req['ops']:.1f} + {min_pods} pods x "
        f"{inputs['background']['ops_per_s']:.1f} background = {ops:,.0f} ops/s; CPU {vcpu:.3f} core: one shard's worth"
    )
    print(
        f"Valkey traffic at the peak: in {peak * per_req['in_bytes'] / 1024:,.0f} KiB/s, out "
        f"{peak * per_req['out_bytes'] / 1024:,.0f} KiB/s"
    )
    cell_bytes = sum(mem.get(f"{p.value} {k}", 0) for p in Part for k in ("entry", "stale"))
    phone = mem.get("rate limit (client)", 0) + mem.get("rate limit (address)", 0)
    limits = peak * 60 * phone  # a phone's keys live one period (60 s) past its last request
    for cells in (2_000, 50_000):
        data = cells * cell_bytes + limits
        shards = max(3, math.ceil(data / (512 * 2**20 * 0.75)))
        print(
            f"Valkey memory for {cells:,} cells: {cells:,} x {fmt(cell_bytes)} B (three parts, entry + stale copy) + "
            f"rate limits of the busiest minute ({peak * 60:,.0f} phones x {fmt(phone)} B = {limits / 2**20:.1f} MiB) = "
            f"{data / 2**20:,.0f} MiB: {shards} primaries at redis.conf's maxmemory 512 MB kept 75 % full "
            f"(3 is a Cluster's least), each with a replica"
        )
    print(
        "upstream plan (weighted calls a day to keep every cell at the target; forecasts once per model run, 3600 s):"
    )
    fw = request_weight(1, [Part.DAILY, Part.HOURLY])
    for cells in (2_000, 50_000):
        for target in (900, 3600):
            current = cells * 86_400 / target
            forecasts = cells * 24 * fw
            print(
                f"  {cells:>6,} cells, current every {target:>4} s: {fmt(current)} + forecasts {cells:,} x 24 x {fw:.3f} "
                f"= {fmt(forecasts)}: {fmt(current + forecasts)}/day ({(current + forecasts) / 10_000:.0f}x the free tier)"
            )


# ------------------------------------------------------------------ check: three instances


def check(inputs: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, float, float]]:
    model = Model(inputs)
    rows: list[tuple[str, float, float]] = []
    topology = start_topology(3, free_port("127.0.0.1"))
    try:
        processes = Processes.of(topology)
        nodes = RedisNodes(topology.state["redis"]["nodes"])
        meter = Meter(processes, nodes)
        points = cell_points(WARM_CELLS)
        target = request_file(f"{topology.url}/graphql", points, repeat=10)
        for instance in topology.instance_urls:  # every instance's render cache warm, as in the inputs
            fill(f"{instance}/graphql", points)
        time.sleep(1)
        cores = os.cpu_count() or 1
        idle_others = meter.quiet()
        runs = [meter.phase(loadgen(target, args.duration)) for _ in range(args.runs)]
        # the cores each run could have: the machine's, less what other tenants kept busy during it
        predictions = sorted(model.machine_throughput(3, cores - r.others) for r in runs)
        saturated_pred = predictions[len(predictions) // 2]
        measured = sorted(r.result["rps"] for r in runs)
        rows.append(("cached req/s, saturated, through nginx (median)", saturated_pred, measured[len(measured) // 2]))
        c = model.cached_cpu_ms
        print(
            f"other tenants: {idle_others:.2f} cores busy while the topology idled; model: (cores - other tenants) x "
            f"1000 / ({' + '.join(f'{k} {v:.3f}' for k, v in c.items())} ms), the instances at most 3 cores",
            flush=True,
        )
        for r in runs:
            print(
                f"  saturated run: other tenants {r.others:.2f} cores: {fmt(model.machine_throughput(3, cores - r.others))}"
                f"/s predicted, {fmt(r.result['rps'])}/s measured (p99 {r.result['p99_ms']:.1f} ms); CPU per request: "
                + ", ".join(f"{k} {r.per_request_ms(k):.3f}" for k in ("instance", "redis", "nginx", "loadgen")),
                flush=True,
            )
        rungs = ladder(meter, target, [saturated_pred * f for f in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)], args.duration - 1)
        best = within(rungs, args.p99_ms)
        for r in rungs:
            print(
                f"  offered {fmt(r['offered']):>6}/s: achieved {fmt(r['rps']):>6}/s, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']:.0f}, other tenants {r['others']:.2f} cores",
                flush=True,
            )
        if math.isnan(model.headroom):
            print(f"  (no p99 prediction: one instance kept p99 within {args.p99_ms:g} ms at no rung)")
        else:
            at_pred = saturated_pred * model.headroom
            rows.append((f"cached req/s within p99 {args.p99_ms:g} ms", at_pred, best["offered"] if best else math.nan))

        rate = 0.5 * saturated_pred
        meter.quiet()
        with meter.measure() as m:
            result = loadgen(target, args.duration, connections=64, rate=rate)()
        achieved = result["requests"] + result["errors"]
        pred = model.redis_per_second(achieved / m["seconds"], 3)
        ops = sum(v for k, v in m["redis"].items() if k.startswith("cmd:"))
        rows.append((f"Valkey ops/s at {fmt(rate)} req/s", pred["ops"], ops / m["seconds"]))
        rows.append(("Valkey bytes in/s", pred["in_bytes"], m["redis"]["net_in"] / m["seconds"]))
        rows.append(("Valkey bytes out/s", pred["out_bytes"], m["redis"]["net_out"] / m["seconds"]))
        rows.append(("Valkey CPU (cores, six nodes)", pred["cpu"], m["redis"]["cpu_all"] / m["seconds"]))

        # WebSocket subscribers through nginx (the balancer spreads them), then one refresh burst to them
        ws = inputs["websocket"]
        n = args.check_subscribers
        fill(f"{topology.url}/graphql", [cell_point(i) for i in range(WS_CELLS)])
        meter.quiet()
        got = subscriber_group(
            topology.url.replace("http://", "ws://") + "/graphql",
            topology.redis_url,
            processes.instances,
            n,
            args.client_processes,
            3 * inputs["background"]["instance_cpu"],
            KEEPALIVE_SECONDS,
        )
        # each instance holds about n / 3 subscribers cycling over the cells: its own subscription of each
        pairs = 3 * min(WS_CELLS, n // 3)
        rows.append(
            (f"instances' RSS growth, {n:,} subscribers (MiB)", n * ws["kb_per_connection"] / 1024, got.rss_mib)
        )
        rows.append(
            (
                f"instances' CPU opening them: n x conn + {pairs} x cell (s)",
                (n * ws["connection_cpu_ms"] + pairs * ws["cell_subscribe_cpu_ms"]) / 1000,
                got.connect,
            )
        )
        rows.append((f"instances' CPU for {n:,} keep-alive pings (ms)", n * ws["ping_cpu_us"] / 1000, got.pings * 1000))
        rows.append(
            (
                f"instances' CPU, one refresh: {pairs} renders + n sends (ms)",
                (pairs * ws["render_cpu_us"] + n * ws["send_cpu_us"]) / 1000,
                got.burst * 1000,
            )
        )
        print(f"refresh burst: {got.delivered:,} delivered, {got.lost} lost, p99 {got.p99_ms:.1f} ms", flush=True)

        # upstream: cold cells asked from every instance at once (current), half of them also the forecast
        cold = [(lat + 5.0, lon) for lat, lon in cold_points(args.check_cells)]
        weight_pred = len(cold) * request_weight(1, [Part.CURRENT]) + len(cold) // 2 * request_weight(
            1, [Part.DAILY, Part.HOURLY]
        )
        calls_pred = len(cold) + len(cold) // 2
        up0 = simulator_stats(topology)

        async def ask_everywhere() -> None:
            async with httpx.AsyncClient(timeout=60) as client:

                async def one(url: str, index: int, body: str) -> None:
                    response = await client.post(
                        url, content=body, headers={"content-type": "application/json", **client_headers(index)}
                    )
                    assert "errors" not in response.json(), response.text

                gate = asyncio.Semaphore(24)

                async def gated(url: str, index: int, body: str) -> None:
                    async with gate:
                        await one(url, index, body)

                jobs = []
                for i, (lat, lon) in enumerate(cold):
                    for k, instance in enumerate(topology.instance_urls):
                        jobs.append(gated(f"{instance}/graphql", i * 3 + k, current_body(lat, lon)))
                        if i < len(cold) // 2:
                            jobs.append(gated(f"{instance}/graphql", i * 3 + k, forecast_body(lat, lon)))
                await asyncio.gather(*jobs)

        asyncio.run(ask_everywhere())
        up1 = simulator_stats(topology)
        rows.append(
            (
                f"upstream locations fetched, {len(cold)} cold cells x 3 instances",
                calls_pred,
                up1["locations"] - up0["locations"],
            )
        )
        rows.append(("upstream weight spent", weight_pred, up1["weight"] - up0["weight"]))
        nodes.close()
    finally:
        topology.stop()
    return rows


def print_check(rows: list[tuple[str, float, float]]) -> None:
    print("\n== the model's check: three instances, the 3 + 3 Cluster, nginx and the load generator on this machine ==")
    print(f"{'quantity':<58}{'predicted':>14}{'measured':>14}{'error':>9}  within ±25 %")
    for name, pred, meas in rows:
        error = (pred - meas) / meas if meas else math.nan
        digits = 2 if abs(meas) < 100 else 0
        ok = "yes" if abs(error) <= 0.25 else "NO"
        print(f"{name:<58}{fmt(pred, digits):>14}{fmt(meas, digits):>14}{error:>+9.1%}  {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="then check the model on the three-instance topology")
    parser.add_argument("--inputs", type=Path, help="the inputs saved by an earlier run (skips measuring)")
    parser.add_argument("--save", type=Path, help="write the measured inputs here (JSON)")
    parser.add_argument("--p99-ms", type=float, default=25.0, help="the p99 target at the instance or balancer")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each load phase")
    parser.add_argument("--runs", type=int, default=3, help="runs of the saturated cached phases (the median's inputs)")
    parser.add_argument("--subscribers", type=int, default=2_000, help="WebSocket subscribers measured")
    parser.add_argument("--check-subscribers", type=int, default=1_500, help="subscribers through nginx in the check")
    parser.add_argument("--client-processes", type=int, default=2, help="processes holding the subscribers")
    parser.add_argument("--cold-cells", type=int, default=150, help="cold cells of the cold path")
    parser.add_argument(
        "--check-cells", type=int, default=100, help="cold cells asked from every instance in the check"
    )
    parser.add_argument("--peak-factor", type=float, default=3.0, help="the daily peak over the mean request rate")
    args = parser.parse_args()
    raise_open_files_limit()
    started = time.monotonic()
    if args.inputs:
        inputs = json.loads(args.inputs.read_text())
    else:
        inputs = measure(args)
        if args.save:
            args.save.write_text(json.dumps(inputs, indent=1))
    print_inputs(inputs)
    scenario(inputs, args.peak_factor)
    if args.check:
        print_check(check(inputs, args))
    print(f"\n({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
