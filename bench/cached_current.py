"""Cached `current` queries over HTTP: WeatherNote beside two baselines, in the same run.

Peers, each one uvicorn process on the same Redis, loaded in turn by the same
closed-loop generator (its own process, so it gets its own core):
  - weathernote:       `weathernote serve`, a warm cell, the full GraphQL pipeline
  - bare-asgi:         an ASGI app doing the same Redis GET (the limit)
  - plain-strawberry:  Strawberry's view + a resolver reading Redis, no caches (the usual first try)

Usage: python bench/cached_current.py [--duration 10] [--connections 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import httpx
from harness import ROOT, components, free_port, wait_http

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { temperature cached cell { lat lon } } }"
BODY = json.dumps({"query": QUERY})


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
    args = parser.parse_args()

    with components() as running:
        sim_port = free_port("127.0.0.1")
        running.start([sys.executable, "-m", "weathernote", "simulate-upstream", "--port", str(sim_port)])
        wait_http(f"http://127.0.0.1:{sim_port}/__simulator/stats")
        ports = {name: free_port("127.0.0.1") for name in ("weathernote", "bare-asgi", "plain-strawberry")}
        env = {
            **os.environ,
            "WEATHERNOTE_REDIS_URL": running.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": f"http://127.0.0.1:{sim_port}",
            "WEATHERNOTE_LOG_LEVEL": "warning",
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
        wait_http(f"http://127.0.0.1:{ports['weathernote']}/ready", ready=300)
        wait_http(urls["bare-asgi"])
        wait_http(urls["plain-strawberry"])
        warm = httpx.post(urls["weathernote"], json={"query": QUERY}).json()  # fills the cell
        assert "errors" not in warm, warm
        hit = httpx.post(urls["weathernote"], json={"query": QUERY}).json()
        assert hit["data"]["current"]["cached"] is True, hit
        plain = httpx.post(urls["plain-strawberry"], json={"query": QUERY}).json()
        assert plain["data"]["current"]["temperature"] == hit["data"]["current"]["temperature"], plain

        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, url in urls.items():
                result = load(url, args)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result
        print(
            f"cached `current` over HTTP, {args.connections} connections, {args.duration:g} s x {args.rounds} rounds (best round)"
        )
        print(f"{'peer':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for name, r in best.items():
            print(f"{name:<18}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
        print(
            f"weathernote / plain-strawberry: {best['weathernote']['rps'] / best['plain-strawberry']['rps']:.2f}x throughput"
        )
        print(
            f"weathernote / bare-asgi:        {best['weathernote']['rps'] / best['bare-asgi']['rps']:.2f}x throughput"
        )


if __name__ == "__main__":
    main()
