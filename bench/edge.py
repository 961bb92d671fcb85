"""The edge: how much of a realistic mix of persisted-query GETs an HTTP cache in front keeps from the instances.

Starts the local topology (a 3 + 3 Cluster, three instances, nginx acting as the edge: its
`proxy_cache` honours the instances' Cache-Control, ETag and Vary) unless `--dir` names a running
one, registers the `current` document once, caches `--cells` cells, then replays the same mix
twice through nginx, each phase `--requests` requests from `--clients` client ids, `--concurrency`
at a time, the cells drawn with Zipf popularity (s = 1):

  - APQ GET: the document by its hash and the variables in the query string, as the app sends a
    query it may have cached (the edge may answer it);
  - POST: the same operations in a body (no cache may answer it): every request reaches an instance.

Each phase runs in bench/loadgen.py (its own process, keep-alive connections, closed loop): it
prints requests a second, latency p50 / p99 at the client, what the edge said
(X-Cache-Status: HIT, MISS, EXPIRED, UPDATING, REVALIDATED), the requests the instances counted
(`weathernote_requests_total`, summed over the three) and that as a share of the phase's requests.

Usage: python bench/edge.py [--requests 20000] [--cells 300] [--clients 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from weathernote.topology import Topology

QUERY = (
    "query Current($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached nextUpdateAt } }"
)
SHA = hashlib.sha256(QUERY.encode()).hexdigest()
EXTENSIONS = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": SHA}}, separators=(",", ":"))


def cells(count: int) -> list[tuple[float, float]]:
    """`count` distinct cells over Europe, a tenth of a degree apart."""
    return [(40.0 + (i // 100) * 0.3, -5.0 + (i % 100) * 0.2) for i in range(count)]


def client_headers(number: int) -> dict[str, str]:
    """A phone: its device id and its own address (nginx passes X-Forwarded-For on, the instances believe it)."""
    return {
        "x-client-id": f"device-{number}",
        "x-forwarded-for": f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}",
    }


def zipf_draws(count: int, cells_: int, seed: int) -> list[int]:
    weights = [1 / (rank + 1) for rank in range(cells_)]
    return random.Random(seed).choices(range(cells_), weights, k=count)


@dataclass
class Phase:
    """One replay of the mix through nginx."""

    name: str
    result: dict[str, float] = field(default_factory=dict)
    edge: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    origin: float = 0.0

    def row(self) -> str:
        count = int(self.result["requests"])
        hits = sum(self.edge.get(name, 0) for name in ("HIT", "UPDATING", "STALE"))
        edge = ", ".join(f"{name} {value:,}" for name, value in self.edge.most_common()) or "-"
        failed = sum(value for status, value in self.statuses.items() if status >= 500)
        return (
            f"| {self.name} | {count:,} | {self.result['rps']:,.0f} | {self.result['p50_ms']:.2f} | "
            f"{self.result['p99_ms']:.2f} | {hits / count:.1%} | {edge} | {self.origin:,.0f} | "
            f"{self.origin / count:.1%} | {failed + int(self.result['errors'])} |"
        )


def origin_requests(topology: Topology) -> float:
    """HTTP requests the instances counted, summed (WebSocket operations apart): what reached the origin."""
    total = 0.0
    for url in topology.instance_urls:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith("weathernote_requests_total{") and 'transport="ws"' not in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def replay(
    topology: Topology, phase: Phase, draws: list[int], grid: list[tuple[float, float]], args: argparse.Namespace
) -> None:
    """The draws through nginx by bench/loadgen.py (closed loop, keep-alive), in its own process."""
    url = f"{topology.url}/graphql"
    lines = []
    phones = random.Random(2)
    for cell in draws:
        lat, lon = grid[cell]
        variables = {"lat": lat, "lon": lon}
        headers = client_headers(phones.randrange(args.clients))
        if phase.name.startswith("APQ GET"):
            query = urlencode({"variables": json.dumps(variables, separators=(",", ":")), "extensions": EXTENSIONS})
            lines.append(json.dumps({"url": f"{url}?{query}", "headers": headers}))
        else:
            body = json.dumps({"query": QUERY, "variables": variables})
            lines.append(json.dumps({"url": url, "body": body, "headers": headers}))
    requests = Path(tempfile.mkstemp(prefix="edge-requests-", suffix=".jsonl")[1])
    requests.write_text("\n".join(lines) + "\n")
    before = origin_requests(topology)
    since = time.time()
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "loadgen.py"),
                "--requests",
                str(requests),
                "--total",
                str(len(draws)),
                "--connections",
                str(args.concurrency),
                "--duration",
                "600",
                "--warmup",
                "0",
                "--header",
                "content-type: application/json",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        requests.unlink()
    if run.returncode != 0:
        raise RuntimeError(f"loadgen failed: {run.stderr[-2000:]}")
    phase.result = json.loads(run.stdout.strip().splitlines()[-1])
    phase.origin = origin_requests(topology) - before
    for line in topology.access_log.read_text().splitlines():
        match = re.match(r"^(\S+) (\d+) \"(\S+) /graphql.* cache=(\S*)$", line)
        if match and float(match.group(1)) >= since:
            phase.statuses[int(match.group(2))] += 1
            phase.edge[match.group(4) if match.group(4) not in ("", "-") else "none"] += 1


async def warm(topology: Topology, grid: list[tuple[float, float]]) -> None:
    """The document registered and every cell cached (by POST: the edge keeps nothing of it)."""
    async with httpx.AsyncClient(timeout=60) as client:
        registered = await client.post(
            f"{topology.url}/graphql",
            json={
                "query": QUERY,
                "variables": {"lat": grid[0][0], "lon": grid[0][1]},
                "extensions": json.loads(EXTENSIONS),
            },
        )
        assert registered.status_code == 200, registered.text
        semaphore = asyncio.Semaphore(16)

        async def one(index: int, lat: float, lon: float) -> None:
            async with semaphore:
                for _ in range(30):  # a cold start may meet the budget's minute: wait for the next
                    body = (
                        await client.post(
                            f"{topology.url}/graphql",
                            json={"query": QUERY, "variables": {"lat": lat, "lon": lon}},
                            headers=client_headers(index),
                        )
                    ).json()
                    if (body.get("data") or {}).get("current") is not None:
                        return
                    await asyncio.sleep(min(60, body["errors"][0].get("extensions", {}).get("retryAfter", 5)))
                raise RuntimeError(f"cell {lat}, {lon} could not be cached: {body}")

        await asyncio.gather(*(one(index, lat, lon) for index, (lat, lon) in enumerate(grid)))


async def main(args: argparse.Namespace) -> int:
    own = None
    if args.dir:
        topology = Topology(args.dir)
        if not topology.attach():
            print(f"no running topology in {args.dir}", file=sys.stderr)
            return 2
    else:
        state = Path(tempfile.mkdtemp(prefix="weathernote-edge-bench-"))
        own = topology = Topology(
            state,
            port=args.port,
            log_level="warning",
            # the benchmark's clients stand for many users; the limits and shares have tests of their own
            env={
                "rate_limit_per_minute": 1_000_000,
                "ip_rate_limit_per_minute": 1_000_000,
                "upstream_client_share_per_minute": 1,
                "upstream_client_share_per_day": 1,
                "upstream_address_share_per_minute": 1,
                "upstream_address_share_per_day": 1,
            },
        )
        print(f"starting the local topology in {state} …", flush=True)
        await asyncio.to_thread(topology.start, 120)
    try:
        grid = cells(args.cells)
        await warm(topology, grid)
        draws = zipf_draws(args.requests, args.cells, seed=1)
        phases = [Phase("APQ GET through the edge"), Phase("POST (no cache may answer)")]
        for phase in phases:
            await asyncio.to_thread(replay, topology, phase, draws, grid, args)
    finally:
        if own is not None:
            await asyncio.to_thread(own.stop)
    print(
        f"\n{args.requests:,} requests per phase over {args.cells:,} cached cells (Zipf s=1), {args.clients:,} client ids, "
        f"{args.concurrency} at a time, through nginx (three instances)\n"
    )
    print(
        "| phase | requests | req/s | p50 ms | p99 ms | edge hits | X-Cache-Status | origin requests | origin share | ≥ 500 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for phase in phases:
        print(phase.row())
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=None, help="use the topology running in this state directory")
    parser.add_argument(
        "--port", type=int, default=8090, help="nginx's port when the benchmark starts its own topology"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
