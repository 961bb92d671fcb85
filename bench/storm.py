"""A reconnect storm: one of three instances dies under its subscribers, who all come back at once.

Starts the local topology (a 3 + 3 Cluster, three instances, nginx) unless `--dir` names a running
one, caches `--cells` cells, then opens `--subscribers` WebSocket subscriptions through nginx from
bench/storm_clients.py processes (each subscriber its own client id and address; each reconnects
with jittered exponential backoff and honours the server's 4429 hint). Then:

1. HTTP at a steady `--rate` (open load, bench/loadgen.py, POSTs: the edge answers none) for
   `--load-seconds`: p99 without a storm;
2. the same load again, and one second in, SIGKILL of the instance holding the most sockets: its
   subscribers reconnect through nginx to the two others. Printed: the time until every
   subscriber holds a value again, HTTP p99 during the storm, the starts the survivors paced
   (4429), the failed attempts, the cache misses on the survivors and the upstream requests
   meanwhile (the simulator's count; every cell was cached, so the target is none of either) and
   the answers >= 500 nginx logged (target 0);
3. every cell refreshed (its entry deleted, a miss on a surviving instance): how many subscribers
   received the refresh (target: all).

Bounded: each wait has a timeout; the killed instance is restarted at the end when the topology
is the caller's. `run` is what tests/system/test_topology.py runs in its short version.

Usage: .venv/bin/python bench/storm.py [--subscribers 10000] [--cells 100] [--rate 200] [--start-rate N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from weathernote.topology import Topology

HERE = Path(__file__).parent
QUERY = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature fetchedAt cached } }"


def cell_point(cell: int) -> dict[str, float]:
    """The cells of bench/storm_clients.py (the same formula)."""
    return {"lat": 40.05 + (cell // 20) * 0.3, "lon": -4.95 + (cell % 20) * 0.3}


@dataclass
class Storm:
    """What one storm did."""

    subscribers: int
    cells: int
    held: dict[int, float] = field(default_factory=dict)  # instance → sockets before the kill
    killed: int = -1
    recovered_seconds: float | None = None
    p99_quiet_ms: float = 0.0  # at the load generator, which shares the machine's two cores
    p99_storm_ms: float = 0.0
    nginx_p99_quiet_ms: float = 0.0  # nginx's $request_time of the same requests
    nginx_p99_storm_ms: float = 0.0
    http_errors: int = 0  # loadgen's non-200 answers during both loads
    refused: int = 0
    failed: int = 0
    reconnects: int = 0
    upstream_requests: int = 0  # the simulator's count (a pre-warmer, if running, adds its own)
    misses: float = 0  # cache misses on the surviving instances
    server_errors: int = 0
    refreshed: int = 0

    def table(self) -> str:
        recovered = (
            f"{self.recovered_seconds:.1f} s" if self.recovered_seconds is not None else "not within the timeout"
        )
        held = ", ".join(f"{i + 1}: {n:,.0f}" for i, n in sorted(self.held.items()))
        return "\n".join(
            [
                "| subscribers (per instance) | killed held | reconnected | all subscribed again after | paced (4429) | failed attempts | HTTP p99 quiet (nginx) | HTTP p99 storm (nginx) | cache misses, upstream requests | ≥ 500 | received the next refresh |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {self.subscribers:,} ({held}) | {self.held.get(self.killed, 0):,.0f} | {self.reconnects:,} | {recovered} | "
                f"{self.refused:,} | {self.failed:,} | {self.p99_quiet_ms:.1f} ms ({self.nginx_p99_quiet_ms:.1f}) | "
                f"{self.p99_storm_ms:.1f} ms ({self.nginx_p99_storm_ms:.1f}) | "
                f"{self.misses:.0f}, {self.upstream_requests} | {self.server_errors} | {self.refreshed:,} / {self.subscribers:,} |",
            ]
        )


class Crowds:
    """The subscriber processes and their latest status lines."""

    def __init__(self, url: str, subscribers: int, cells: int, processes: int) -> None:
        share = -(-subscribers // processes)
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "storm_clients.py"),
                    "--url",
                    url.replace("http://", "ws://", 1) + "/graphql",
                    "--count",
                    str(min(share, subscribers - offset)),
                    "--offset",
                    str(offset),
                    "--cells",
                    str(cells),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for offset in range(0, subscribers, share)
        ]
        self.latest: list[dict[str, int]] = [{} for _ in self.procs]
        self.readers = [asyncio.create_task(asyncio.to_thread(self._read, i)) for i in range(len(self.procs))]

    def _read(self, index: int) -> None:
        stdout = self.procs[index].stdout
        assert stdout is not None
        for line in stdout:
            with contextlib.suppress(ValueError):
                self.latest[index] = json.loads(line)

    def total(self, name: str) -> int:
        return sum(status.get(name, 0) for status in self.latest)

    def tell(self, command: str) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(command + "\n")
                proc.stdin.flush()

    async def until(self, name: str, value: int, timeout: float) -> float | None:
        """Seconds until the processes together report `value` of `name`, None if not within `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.total(name) >= value:
                return time.monotonic() - started
            if any(proc.poll() is not None for proc in self.procs):
                raise RuntimeError("a subscriber process ended early")
            await asyncio.sleep(0.1)
        return None

    async def close(self) -> None:
        self.tell("STOP")
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def warm(topology: Topology, cells: int) -> None:
    """Every cell cached, by POST through nginx (retried while the budget's minute is spent)."""
    async with httpx.AsyncClient(timeout=60) as client:
        gate = asyncio.Semaphore(8)

        async def one(cell: int) -> None:
            async with gate:
                for _ in range(30):
                    response = await client.post(
                        f"{topology.url}/graphql",
                        json={"query": QUERY, "variables": cell_point(cell)},
                        headers={"x-client-id": f"warm-{cell}"},
                    )
                    body = response.json()
                    if (body.get("data") or {}).get("current"):
                        return
                    await asyncio.sleep(min(30, body["errors"][0].get("extensions", {}).get("retryAfter", 2)))
                raise RuntimeError(f"cell {cell} could not be cached: {body}")

        await asyncio.gather(*(one(cell) for cell in range(cells)))


def load(topology: Topology, cells: int, rate: float, seconds: float) -> dict[str, float]:
    """bench/loadgen.py at `rate` requests a second (open load) over the cached cells, through nginx."""
    lines = [
        json.dumps(
            {
                "url": f"{topology.url}/graphql",
                "body": json.dumps({"query": QUERY, "variables": cell_point(cell)}),
                "headers": {"x-client-id": f"load-{cell}", "x-forwarded-for": f"192.0.2.{cell % 250 + 1}"},
            }
        )
        for cell in range(cells)
    ]
    requests = Path(tempfile.mkstemp(prefix="storm-requests-", suffix=".jsonl")[1])
    requests.write_text("\n".join(lines) + "\n")
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(HERE / "loadgen.py"),
                "--requests",
                str(requests),
                "--connections",
                "16",
                "--rate",
                str(rate),
                "--duration",
                str(seconds),
                "--warmup",
                "0.5",
                "--header",
                "content-type: application/json",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
    finally:
        requests.unlink()
    if run.returncode != 0:
        raise RuntimeError(f"loadgen failed: {run.stderr[-2000:]}")
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def sockets_held(topology: Topology) -> dict[int, float]:
    held = {}
    for index, url in enumerate(topology.instance_urls):
        with contextlib.suppress(httpx.HTTPError):
            for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
                if line.startswith("weathernote_websocket_connections "):
                    held[index] = float(line.split()[1])
    return held


def misses(topology: Topology, instances: list[int]) -> float:
    """Cache misses counted by these instances (the ones alive)."""
    total = 0.0
    for index in instances:
        for line in httpx.get(f"{topology.instance_urls[index]}/metrics", timeout=10).text.splitlines():
            if line.startswith("weathernote_cache_misses_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def upstream_requests(topology: Topology) -> int:
    return int(httpx.get(f"{topology.upstream_url}/__simulator/stats", timeout=10).json()["requests"])


def nginx_p99_ms(topology: Topology, since: float, until: float) -> float:
    """p99 of nginx's request_time for the load's POSTs between `since` and `until`."""
    times = []
    for line in topology.access_log.read_text().splitlines():
        match = re.match(r'^(\S+) \d+ "POST /graphql .* request_time=(\S+)', line)
        if match and since <= float(match.group(1)) <= until:
            times.append(float(match.group(2)) * 1000)
    times.sort()
    return times[min(len(times) - 1, int(0.99 * len(times)))] if times else float("nan")


def server_errors(topology: Topology, since: float) -> int:
    count = 0
    for line in topology.access_log.read_text().splitlines():
        match = re.match(r"^(\S+) (\d+) ", line)
        if match and float(match.group(1)) >= since and int(match.group(2)) >= 500:
            count += 1
    return count


async def refresh_all(topology: Topology, survivor: str, cells: int) -> None:
    """Every cell's entry deleted, then a miss on a surviving instance: each fetches, writes, announces."""
    direct = redis.RedisCluster.from_url(topology.redis_url)
    try:
        for pattern in ("weather:*", "stale:weather:*"):
            keys = list(direct.scan_iter(match=pattern, count=1000))
            for key in keys:
                direct.delete(key)
    finally:
        direct.close()
    async with httpx.AsyncClient(timeout=60) as client:
        gate = asyncio.Semaphore(8)

        async def one(cell: int) -> None:
            async with gate:
                await client.post(
                    f"{survivor}/graphql",
                    json={"query": QUERY, "variables": cell_point(cell)},
                    headers={"x-client-id": "storm-refresher"},
                )

        await asyncio.gather(*(one(cell) for cell in range(cells)))


async def run(
    topology: Topology,
    subscribers: int = 10_000,
    cells: int = 100,
    *,
    rate: float = 200,
    load_seconds: float = 10,
    processes: int = 4,
    timeout: float = 300,
    log: Any = print,
) -> Storm:
    storm = Storm(subscribers, cells)
    await warm(topology, cells)
    crowds = Crowds(topology.url, subscribers, cells, processes)
    try:
        opened = await crowds.until("subscribed", subscribers, timeout)
        if opened is None:
            raise RuntimeError(f"only {crowds.total('subscribed')} of {subscribers} subscribed in {timeout} s")
        log(f"{subscribers:,} subscribers hold a value after {opened:.1f} s")
        storm.held = await asyncio.to_thread(sockets_held, topology)
        storm.killed = max(storm.held, key=lambda index: storm.held[index])
        quiet_from = time.time()
        quiet = await asyncio.to_thread(load, topology, cells, rate, load_seconds)
        storm.nginx_p99_quiet_ms = await asyncio.to_thread(nginx_p99_ms, topology, quiet_from, time.time())
        storm.p99_quiet_ms = quiet["p99_ms"]
        storm.http_errors += int(quiet["errors"])
        survivors = [index for index in range(len(topology.instance_urls)) if index != storm.killed]
        misses_before = await asyncio.to_thread(misses, topology, survivors)
        before, reconnects_before = await asyncio.to_thread(upstream_requests, topology), crowds.total("reconnects")
        refused_before, failed_before = crowds.total("refused"), crowds.total("failed")
        storm_from = time.time()
        loading = asyncio.create_task(asyncio.to_thread(load, topology, cells, rate, load_seconds))
        await asyncio.sleep(1.0)
        killed_at = time.time()
        topology.signal_instance(storm.killed, signal.SIGKILL)
        log(f"SIGKILL instance {storm.killed + 1} ({storm.held[storm.killed]:.0f} sockets)")
        await asyncio.sleep(0.5)  # the subscribers see their sockets end
        storm.recovered_seconds = await crowds.until("subscribed", subscribers, timeout)
        if storm.recovered_seconds is not None:
            storm.recovered_seconds += 0.5
        during = await loading
        storm.nginx_p99_storm_ms = await asyncio.to_thread(nginx_p99_ms, topology, storm_from, time.time())
        storm.p99_storm_ms = during["p99_ms"]
        storm.http_errors += int(during["errors"])
        storm.upstream_requests = await asyncio.to_thread(upstream_requests, topology) - before
        storm.misses = await asyncio.to_thread(misses, topology, survivors) - misses_before
        storm.reconnects = crowds.total("reconnects") - reconnects_before
        storm.refused = crowds.total("refused") - refused_before
        storm.failed = crowds.total("failed") - failed_before
        storm.server_errors = await asyncio.to_thread(server_errors, topology, killed_at - 1.5)
        mark = time.time()
        crowds.tell(f"MARK {mark}")
        survivor = topology.instance_urls[(storm.killed + 1) % len(topology.instance_urls)]
        await refresh_all(topology, survivor, cells)
        await crowds.until("fresh", subscribers, 60)
        storm.refreshed = crowds.total("fresh")
    finally:
        await crowds.close()
    return storm


async def main(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the instances inherit it
    own = None
    if args.dir:
        topology = Topology(args.dir)
        if not topology.attach():
            print(f"no running topology in {args.dir}", file=sys.stderr)
            return 2
    else:
        state = Path(tempfile.mkdtemp(prefix="weathernote-storm-bench-"))
        own = topology = Topology(
            state,
            port=args.port,
            log_level="warning",
            # the subscribers and the load stand for many users; limits and shares have tests of their own
            env={
                "rate_limit_per_minute": 1_000_000,
                "ip_rate_limit_per_minute": 1_000_000,
                "prewarm_interval_seconds": 0,
                **{
                    f"upstream_{who}_share_per_{window}": 1
                    for who in ("client", "address")
                    for window in ("minute", "day")
                },
                **(
                    {
                        "connection_start_rate_per_second": args.start_rate,
                        "connection_start_burst": round(args.start_rate),
                    }
                    if args.start_rate
                    else {}
                ),
            },
        )
        print(f"starting the local topology in {state} …", flush=True)
        await asyncio.to_thread(topology.start, 120)
    try:
        storm = await run(
            topology,
            args.subscribers,
            args.cells,
            rate=args.rate,
            load_seconds=args.load_seconds,
            processes=args.processes,
        )
    finally:
        if own is not None:
            await asyncio.to_thread(own.stop)
        else:
            await asyncio.to_thread(topology.heal)
    print(
        f"\n{args.subscribers:,} subscribers of {args.cells} cached cells through nginx, three instances; HTTP at "
        f"{args.rate:.0f} req/s (POST, open load) for {args.load_seconds:.0f} s without and with the storm\n"
    )
    print(storm.table())
    failed = storm.server_errors or storm.refreshed < storm.subscribers or storm.recovered_seconds is None
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200, help="HTTP requests a second during both loads")
    parser.add_argument("--load-seconds", type=float, default=10)
    parser.add_argument("--processes", type=int, default=4, help="subscriber processes")
    parser.add_argument(
        "--start-rate", type=float, default=None, help="connection starts a process admits a second (and its burst)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="use the topology running in this state directory")
    parser.add_argument("--port", type=int, default=8091, help="nginx's port when the benchmark starts its own")
    sys.exit(asyncio.run(main(parser.parse_args())))
