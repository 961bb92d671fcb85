"""Cached `current` queries over HTTP: WeatherNote beside its baselines, in the same run.

Peers, each one server process on the same Redis and the same warmed entry, loaded in
turn by the same closed-loop generator (its own process, so it gets its own core):
  - weathernote:       `weathernote serve`, a warm cell, the full GraphQL pipeline
  - bare-asgi:         an ASGI app doing the same Redis GET (the limit)
  - plain-strawberry:  Strawberry's view + a resolver reading Redis, no caches (the usual first try)
  - graphql-yoga:      GraphQL Yoga on Node (bench/peers/yoga: node:http, ioredis, one GET and a
                       JSON parse per query); `npm ci` runs there first when node_modules is missing
                       or older than its lock file; skipped, saying so, when node or npm is missing

Before each round the entry must outlive the round: if it is about to lapse (at the upstream's
next 15-minute step), the benchmark waits for it to and refills it through WeatherNote, so no
peer is measured answering misses.

Usage: python bench/cached_current.py [--duration 10] [--connections 32] [--rounds 2] [--no-yoga]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import httpx
from harness import ROOT, components, free_port, wait_http
from redis import Redis
from yoga_peer import yoga_cmd, yoga_env, yoga_ready, yoga_versions

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { temperature cached cell { lat lon } } }"
BODY = json.dumps({"query": QUERY})
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


def load(url: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "loadgen.py"),
            url,
            "--body",
            BODY,
            "--header",
            "Content-Type: application/json",
            "--connections",
            str(args.connections),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="peers are measured in turn, this many times")
    parser.add_argument("--no-yoga", action="store_true", help="leave out the GraphQL Yoga (Node) peer")
    args = parser.parse_args()
    yoga_skipped = "--no-yoga" if args.no_yoga else yoga_ready()

    with components() as running:
        sim_port = free_port("127.0.0.1")
        running.start([sys.executable, "-m", "weathernote", "simulate-upstream", "--port", str(sim_port)])
        wait_http(f"http://127.0.0.1:{sim_port}/__simulator/stats")
        names = ["weathernote", "bare-asgi", "plain-strawberry"] + ([] if yoga_skipped else ["graphql-yoga"])
        ports = {name: free_port("127.0.0.1") for name in names}
        env = {
            **os.environ,
            "WEATHERNOTE_REDIS_URL": running.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": f"http://127.0.0.1:{sim_port}",
            "WEATHERNOTE_LOG_LEVEL": "info",  # request logs on, as users run it (written to /dev/null)
            "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
            # One load generator is one client far over any real limit: keep the limiter
            # deciding every request, with a window (1 s) that holds a bounded log.
            "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
            "WEATHERNOTE_RATE_LIMIT_PERIOD_SECONDS": "1",
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            "WEATHERNOTE_CLIENT_ID_SECRET": "bench",
            "WEATHERNOTE_PORT": str(ports["weathernote"]),
            "BENCH_REDIS_URL": running.redis_url,
        }
        running.start([sys.executable, "-m", "weathernote", "serve"], env)
        running.start(uvicorn_cmd("bare_asgi:app", ports["bare-asgi"]), env)
        running.start(uvicorn_cmd("plain_strawberry:app", ports["plain-strawberry"]), env)
        urls = {
            "weathernote": f"http://127.0.0.1:{ports['weathernote']}/graphql",
            "bare-asgi": f"http://127.0.0.1:{ports['bare-asgi']}/",
            "plain-strawberry": f"http://127.0.0.1:{ports['plain-strawberry']}/graphql",
        }
        if not yoga_skipped:
            running.start(yoga_cmd(ports["graphql-yoga"], running.redis_url), yoga_env(env))
            urls["graphql-yoga"] = f"http://127.0.0.1:{ports['graphql-yoga']}/graphql"
            wait_http(f"http://127.0.0.1:{ports['graphql-yoga']}/health")
        wait_http(f"http://127.0.0.1:{ports['weathernote']}/ready", ready=300)
        wait_http(urls["bare-asgi"])
        wait_http(urls["plain-strawberry"])
        warm = httpx.post(urls["weathernote"], json={"query": QUERY}).json()  # fills the cell
        assert "errors" not in warm, warm
        hit = httpx.post(urls["weathernote"], json={"query": QUERY}).json()
        assert hit["data"]["current"]["cached"] is True, hit
        redis = Redis.from_url(running.redis_url)
        round_seconds = args.warmup + args.duration + 1

        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, url in urls.items():
                keep_entry(redis, urls["weathernote"], round_seconds)
                if name in ("plain-strawberry", "graphql-yoga"):  # the same answer from the same entry
                    answer = httpx.post(url, json={"query": QUERY}).json()["data"]["current"]
                    expected = httpx.post(urls["weathernote"], json={"query": QUERY}).json()["data"]["current"]
                    assert answer == expected, (name, answer, expected)
                result = load(url, args)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result
        redis.close()
        print(
            f"cached `current` over HTTP, {args.connections} connections, {args.duration:g} s x {args.rounds} rounds (best round)"
        )
        if yoga_skipped:
            print(f"graphql-yoga: skipped ({yoga_skipped})")
        else:
            print(f"graphql-yoga: {yoga_versions()}")
        print(f"{'peer':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for name, r in best.items():
            print(f"{name:<18}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
        for name in urls:
            if name != "weathernote":
                ratio = best["weathernote"]["rps"] / best[name]["rps"]
                print(f"{'weathernote / ' + name + ':':<32}{ratio:.2f}x throughput")


if __name__ == "__main__":
    main()
