"""Cached `current` queries over HTTP: WeatherNote beside its baselines, in the same run.

Peers, each one server process on the same Redis and the same warmed entry, loaded in
turn by the same closed-loop generator (its own process, so it gets its own core):
  - weathernote:       `weathernote serve`, a warm cell, the full pipeline as users run it (the
                       rate limiter deciding every request, metrics, one request log line each),
                       asked three ways: GraphQL POST, the APQ GET form (a persisted query's
                       hash and variables in the URL, what a CDN caches) and REST /api/v1/weather
  - bare-asgi:         an ASGI app doing the same Redis GET (the limit)
  - plain-strawberry:  Strawberry's view + a resolver reading Redis, no caches (the usual first try)
  - graphql-yoga:      GraphQL Yoga on Node (bench/peers/yoga: node:http, ioredis, one GET and a
                       JSON parse per query); `npm ci` runs there first when node_modules is missing
                       or older than its lock file; skipped, saying so, when node or npm is missing
  - graphql-yoga+rc:   the same with Yoga's response cache (@graphql-yoga/plugin-response-cache, in
                       memory, one global session): like WeatherNote, it replays a stored answer

Then, per peer, latency under an open load of `--rate` requests a second (1,000: a busy
instance's share, far from saturation), and WeatherNote's memory: its RSS idle (warm, before any
load) and after `--memory-requests` requests spread over `--memory-cells` cells (each cell's
first request a miss to the simulator), which the render, document and entry caches must keep
bounded.

Before each round the entry must outlive the round: if it is about to lapse (at the upstream's
next 15-minute step), the benchmark waits for it to and refills it through WeatherNote, so no
peer is measured answering misses.

Usage: python bench/cached_current.py [--duration 10] [--connections 32] [--rounds 2] [--rate 1000]
                                      [--memory-requests 100000] [--memory-cells 2000] [--no-yoga]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from harness import ROOT, components, free_port, wait_http
from redis import Redis
from yoga_peer import response_cache_version, yoga_cmd, yoga_env, yoga_ready, yoga_versions

from weathernote.simulator import SimulatorProcess

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { temperature cached cell { lat lon } } }"
BODY = json.dumps({"query": QUERY})
# the APQ form: the same selection with its coordinates as variables, by hash in a GET URL
APQ_QUERY = "query Current($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached cell { lat lon } } }"
APQ_EXTENSIONS = json.dumps(
    {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(APQ_QUERY.encode()).hexdigest()}}
)
ENTRY_KEY = "weather:lat:40.7:lon:-74.0"  # the cell QUERY reads, as every peer spells it


def keep_entry(redis: Redis, weathernote_url: str, seconds: float) -> None:
    """Make sure the warmed entry outlives the next `seconds`.

    The entry lapses at the upstream's next 15-minute step and WeatherNote refills it only when
    asked; a peer measured meanwhile would answer misses. So if it lapses within `seconds`, wait
    for it to, and ask WeatherNote for the cell again (a refetch from the simulator).
    """
    remaining_ms = redis.pttl(ENTRY_KEY)
    if remaining_ms > seconds * 1000:
        return
    if remaining_ms > 0:
        print(f"(the entry lapses in {remaining_ms / 1000:.1f} s: waiting for it, then refilling it)", flush=True)
        time.sleep(remaining_ms / 1000 + 0.1)
    answer = httpx.post(weathernote_url, json={"query": QUERY}, timeout=30).json()
    assert "errors" not in answer, answer
    assert redis.pttl(ENTRY_KEY) > seconds * 1000, "the refilled entry lapses too soon"


def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--app-dir",
        str(ROOT / "bench" / "peers"),
    ]


def load(target: str | Path, body: str | None, args: argparse.Namespace, *extra: str) -> dict[str, float]:
    """One loadgen run: `target` a URL (POST `body`, or GET without one) or a file of requests."""
    where = ["--requests", str(target)] if isinstance(target, Path) else [target]
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "loadgen.py"),
            *where,
            *(["--body", body] if body is not None else []),
            "--header",
            "Content-Type: application/json",
            "--connections",
            str(args.connections),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def apq_url(base: str, lat: float, lon: float) -> str:
    variables = json.dumps({"lat": lat, "lon": lon})
    return f"{base}?variables={quote(variables)}&extensions={quote(APQ_EXTENSIONS)}"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_requests(graphql_url: str, rest_url: str, cells: int) -> Path:
    """A file of requests over `cells` cells, a third each GraphQL POST, APQ GET and REST, for loadgen."""
    lines = []
    for index in range(cells):
        lat, lon = round(-60 + (index // 50) * 2.5 + 0.01, 2), round(-170 + (index % 50) * 6.5 + 0.01, 2)
        query = f"{{ current(lat: {lat}, lon: {lon}) {{ temperature cached cell {{ lat lon }} }} }}"
        lines.append({"url": graphql_url, "body": json.dumps({"query": query})})
        lines.append({"url": apq_url(graphql_url, lat, lon)})
        lines.append({"url": f"{rest_url}?lat={lat}&lon={lon}"})
    path = Path(tempfile.mkdtemp(prefix="bench-requests-")) / "requests.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="peers are measured in turn, this many times")
    parser.add_argument("--rate", type=float, default=1000, help="requests a second of the open-load latency runs")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--memory-cells", type=int, default=2000)
    parser.add_argument("--no-yoga", action="store_true", help="leave out the GraphQL Yoga (Node) peer")
    args = parser.parse_args()
    yoga_skipped = "--no-yoga" if args.no_yoga else yoga_ready()
    unlimited = "1000000000"

    limits = {f"rate_limit_per_{window}": int(unlimited) for window in ("minute", "hour", "day")}
    # the simulator outside: it outlives the servers, which stop first
    with SimulatorProcess(**limits) as simulator, components() as running:
        names = ["weathernote", "bare-asgi", "plain-strawberry"]
        names += [] if yoga_skipped else ["graphql-yoga", "graphql-yoga+rc"]
        ports = {name: free_port("127.0.0.1") for name in names}
        env = {
            **os.environ,
            "WEATHERNOTE_REDIS_URL": running.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": simulator.url,
            "WEATHERNOTE_LOG_LEVEL": "info",  # request logs on, as users run it (written to /dev/null)
            "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
            # One load generator is one client far over any real limit: keep the limiter
            # deciding every request, with a window (1 s) that holds a bounded log.
            "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
            "WEATHERNOTE_RATE_LIMIT_PERIOD_SECONDS": "1",
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            # the memory run's first requests miss: the budget must not be what it measures
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_MINUTE": unlimited,
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_HOUR": unlimited,
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_DAY": unlimited,
            "WEATHERNOTE_CLIENT_ID_SECRET": "5e0b6c1d7a2f8e3b9c4d0a5f1e6b2c7d8a3f9e4b0c5d1a6f2e7b3c8d9a4f0e5b",
            "WEATHERNOTE_PORT": str(ports["weathernote"]),
            "BENCH_REDIS_URL": running.redis_url,
        }
        server = running.start([sys.executable, "-m", "weathernote", "serve"], env)
        running.start(uvicorn_cmd("bare_asgi:app", ports["bare-asgi"]), env)
        running.start(uvicorn_cmd("plain_strawberry:app", ports["plain-strawberry"]), env)
        graphql_url = f"http://127.0.0.1:{ports['weathernote']}/graphql"
        rest_url = f"http://127.0.0.1:{ports['weathernote']}/api/v1/weather"
        # peer -> (url, POST body or None for a GET)
        targets: dict[str, tuple[str, str | None]] = {
            "weathernote": (graphql_url, BODY),
            "weathernote APQ GET": (apq_url(graphql_url, 40.7128, -74.0060), None),
            "weathernote REST": (f"{rest_url}?lat=40.7128&lon=-74.0060", None),
            "bare-asgi": (f"http://127.0.0.1:{ports['bare-asgi']}/", BODY),
            "plain-strawberry": (f"http://127.0.0.1:{ports['plain-strawberry']}/graphql", BODY),
        }
        if not yoga_skipped:
            running.start(yoga_cmd(ports["graphql-yoga"], running.redis_url), yoga_env(env))
            running.start([*yoga_cmd(ports["graphql-yoga+rc"], running.redis_url), "--response-cache"], yoga_env(env))
            for name in ("graphql-yoga", "graphql-yoga+rc"):
                targets[name] = (f"http://127.0.0.1:{ports[name]}/graphql", BODY)
                wait_http(f"http://127.0.0.1:{ports[name]}/health")
        wait_http(f"http://127.0.0.1:{ports['weathernote']}/ready", ready=300)
        wait_http(targets["bare-asgi"][0])
        wait_http(targets["plain-strawberry"][0])
        warm = httpx.post(graphql_url, json={"query": QUERY}).json()  # fills the cell
        assert "errors" not in warm, warm
        hit = httpx.post(graphql_url, json={"query": QUERY}).json()
        assert hit["data"]["current"]["cached"] is True, hit
        # the APQ text once (as a client does after PERSISTED_QUERY_NOT_FOUND), then by hash only
        stored = httpx.post(
            graphql_url,
            json={
                "query": APQ_QUERY,
                "variables": {"lat": 40.7128, "lon": -74.0060},
                "extensions": json.loads(APQ_EXTENSIONS),
            },
        ).json()
        by_hash = httpx.get(targets["weathernote APQ GET"][0]).json()
        assert by_hash == stored == hit, (by_hash, stored, hit)
        assert httpx.get(targets["weathernote REST"][0]).json()["cached"] is True
        idle_kb = rss_kb(server.pid)
        redis = Redis.from_url(running.redis_url)
        round_seconds = args.warmup + args.duration + 1

        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, (url, body) in targets.items():
                keep_entry(redis, graphql_url, round_seconds)
                if name in (
                    "plain-strawberry",
                    "graphql-yoga",
                    "graphql-yoga+rc",
                ):  # the same answer from the same entry
                    answer = httpx.post(url, json={"query": QUERY}).json()["data"]["current"]
                    expected = httpx.post(graphql_url, json={"query": QUERY}).json()["data"]["current"]
                    if name == "graphql-yoga+rc":  # its cached answer may predate a refill (its TTL is 60 s)
                        answer, expected = answer["cell"], expected["cell"]
                    assert answer == expected, (name, answer, expected)
                result = load(url, body, args)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result
        steady: dict[str, dict[str, float]] = {}
        for name, (url, body) in targets.items():
            if name != "plain-strawberry":  # it cannot serve the rate at all
                keep_entry(redis, graphql_url, round_seconds)
                steady[name] = load(url, body, args, "--rate", str(args.rate))
        redis.close()
        before_kb = rss_kb(server.pid)
        spread = load(
            memory_requests(graphql_url, rest_url, args.memory_cells),
            None,
            args,
            "--total",
            str(args.memory_requests),
            "--duration",
            "600",
            "--warmup",
            "0",
        )
        after_kb = rss_kb(server.pid)
        caches = {
            line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"http://127.0.0.1:{ports['weathernote']}/metrics").text.splitlines()
            if line.startswith("weathernote_render_cache_bytes{")
        }

        print(
            f"cached `current` over HTTP, {args.connections} connections, {args.duration:g} s x {args.rounds} rounds (best round)"
        )
        if yoga_skipped:
            print(f"graphql-yoga: skipped ({yoga_skipped})")
        else:
            print(f"graphql-yoga: {yoga_versions()}")
            print(f"graphql-yoga+rc: the same and @graphql-yoga/plugin-response-cache {response_cache_version()}")
        print(f"{'peer':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'x bare':>8}{'x yoga':>8}")
        for name, r in best.items():
            bare = r["rps"] / best["bare-asgi"]["rps"]
            yoga = f"{r['rps'] / best['graphql-yoga']['rps']:>8.2f}" if "graphql-yoga" in best else f"{'-':>8}"
            print(f"{name:<22}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}{bare:>8.2f}{yoga}")
        print(f"\nopen load, {args.rate:g} requests a second for {args.duration:g} s (latency from when each was due)")
        print(f"{'peer':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'errors':>8}")
        for name, r in steady.items():
            print(
                f"{name:<22}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p999_ms']:>10.2f}"
                f"{r['max_ms']:>9.2f}{r['errors']:>8}"
            )
        print(
            f"\nweathernote memory: RSS idle (warm) {idle_kb / 1024:.1f} MiB; after the runs above {before_kb / 1024:.1f} MiB;"
            f" after {spread['requests'] + spread['errors']:,} more requests over {args.memory_cells:,} cells"
            f" (GraphQL POST, APQ GET, REST; {spread['errors']} errors) {after_kb / 1024:.1f} MiB"
        )
        held = ", ".join(f"{kind} {size / 1024 / 1024:.1f} MiB" for kind, size in sorted(caches.items()))
        print(f"in-process caches then (weathernote_render_cache_bytes, each bounded by its budget): {held}")


if __name__ == "__main__":
    main()
