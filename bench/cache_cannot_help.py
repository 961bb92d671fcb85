"""Rows where the cache cannot help (issue 23, part 1): WeatherNote beside a peer that executes.

bench/cached_current.py asks one document about one cell: after its first request WeatherNote
replays stored bytes while its peers execute every request. These rows take that away, each
WeatherNote run beside its peer's in the same run (interleaved, `--runs` times each, one server
process each, the same closed-loop generator in its own process, the same Redis entries):

  - cached current:          the cached_current document on one warm cell, WeatherNote as deployed
                             beside GraphQL Yoga WITH its response cache
                             (@graphql-yoga/plugin-response-cache, in memory, one global session):
                             both replay a stored answer
  - response cache missing:  one document, its variables cycling over `--cells` warm cells, to a
                             WeatherNote whose in-process caches have WEATHERNOTE_RENDER_CACHE_BYTES
                             (`--small-cache-bytes`, 100,000) so that those answers do not fit
                             (least recently used, cycled in order: every request misses), beside
                             Yoga without a response cache
  - a new document every request:  the cached_current selection on the warm cell under an alias that
                             changes with every request (no document, validation or response cache
                             can have seen it), beside plain Strawberry (bench/peers/plain_strawberry.py)
  - a realistic mix:         the app's own operations (clients/operations: CurrentWeather two requests
                             in three, Forecast one in three, default variables) as APQ GETs, their
                             cells drawn Zipf (s = `--zipf-s`, 1.0) over `--mix-cells` (2,000) warm
                             cells, WeatherNote as deployed beside Yoga without and with its response
                             cache (each answers the same data: checked before the runs); each run
                             also at a fixed `--mix-rate` (1,000 req/s, open load) for its p99

Prints min / median / max req/s and the median p99 per server, and the median ratio against the
peer. A lapsing entry (the upstream's 15-minute step) is waited for and refilled through
WeatherNote before a run, so no server is measured answering misses. Every process it starts
(the simulator, Redis, the servers, the load generator) is stopped on the way out, failures included.

Usage: python bench/cache_cannot_help.py [--duration 4] [--warmup 1] [--runs 3] [--connections 32]
                                         [--cells 500] [--small-cache-bytes 100000] [--documents 64000]
                                         [--mix-cells 2000] [--zipf-s 1.0] [--mix-rate 1000] [--no-mix]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cached_current import BODY, QUERY, keep_entry, load, uvicorn_cmd
from harness import ROOT, components, cpu_seconds, free_port, wait_http
from redis import Redis
from yoga_peer import response_cache_version, yoga_cmd, yoga_env, yoga_ready, yoga_versions

from weathernote.simulator import SimulatorProcess

# the fields WeatherNote and the Yoga peer both have (the peer has no `condition` or `units`)
CELLS_QUERY = (
    "query Cell($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { cell { lat lon } time temperature"
    " apparentTemperature humidity precipitation weatherCode cloudCover pressure windSpeed windDirection"
    " windGusts isDay cached stale fetchedAt } }"
)
SHARED = ("cell", "temperature", "humidity", "weatherCode", "windSpeed", "cached")


def cell_points(count: int) -> list[tuple[float, float]]:
    """`count` points in as many 0.1° cells (bench/cached_current.py's spread)."""
    return [(round(-60 + (i // 50) * 2.5 + 0.01, 2), round(-170 + (i % 50) * 6.5 + 0.01, 2)) for i in range(count)]


def entry_key(lat: float, lon: float) -> str:
    """The single-server entry key of the cell of (lat, lon); the points above are far from any tie."""
    return f"weather:lat:{round(lat, 1):.1f}:lon:{round(lon, 1):.1f}"


MANIFEST = ROOT / "clients" / "operations" / "persisted-query-manifest.json"
MIX = (("CurrentWeather", 2), ("Forecast", 1))  # operation, weight


def operations() -> dict[str, tuple[str, str]]:
    """The mix's operations: name -> (sha256 id, text), from the persisted-query manifest."""
    manifest = json.loads(MANIFEST.read_text())
    return {op["name"]: (op["id"], op["body"]) for op in manifest["operations"] if op["name"] in dict(MIX)}


def apq_get(url: str, name: str, sha: str, lat: float, lon: float) -> str:
    extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha}})
    variables = json.dumps({"lat": lat, "lon": lon})
    return f"{url}?operationName={name}&variables={quote(variables)}&extensions={quote(extensions)}"


def zipf_mix(url: str, points: list[tuple[float, float]], s: float, count: int, seed: int) -> Path:
    """`count` APQ GETs: a cell by Zipf rank (ranks shuffled over the cells), an operation by MIX's weights."""
    ops = operations()
    rng = random.Random(seed)
    ranked = points[:]
    rng.shuffle(ranked)
    weights = [1 / (rank + 1) ** s for rank in range(len(ranked))]
    cells = rng.choices(ranked, weights=weights, k=count)
    names = rng.choices([name for name, _ in MIX], weights=[w for _, w in MIX], k=count)
    return write_requests(
        [{"url": apq_get(url, name, ops[name][0], lat, lon)} for (lat, lon), name in zip(cells, names, strict=True)]
    )


def register(url: str) -> None:
    """Each operation's text once with its hash, as a client does after PERSISTED_QUERY_NOT_FOUND."""
    for name, (sha, text) in operations().items():
        body = {
            "query": text,
            "operationName": name,
            "variables": {"lat": 40.7128, "lon": -74.0060},
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}},
        }
        answer = httpx.post(url, json=body, timeout=30).json()
        assert "errors" not in answer, (url, answer)


def fill_mix(url: str, points: list[tuple[float, float]]) -> None:
    """Every cell's current and forecast entries, through WeatherNote (16 requests at a time)."""
    ops = operations()

    async def fill() -> None:
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(name: str, lat: float, lon: float) -> None:
                async with gate:
                    answer = (await client.get(apq_get(url, name, ops[name][0], lat, lon))).json()
                assert "errors" not in answer, answer

            await asyncio.gather(*(one(name, lat, lon) for lat, lon in points for name, _ in MIX))

    asyncio.run(fill())


def mix_keys(lat: float, lon: float) -> list[str]:
    cell = entry_key(lat, lon).removeprefix("weather:")
    return [f"weather:{cell}", f"forecast:{cell}:days:16", f"forecast:{cell}:days:16:hourly"]


def write_requests(lines: list[dict[str, str]]) -> Path:
    path = Path(tempfile.mkdtemp(prefix="bench-requests-")) / "requests.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def fill_cells(url: str, points: list[tuple[float, float]]) -> None:
    """Ask WeatherNote for every cell (a miss to the simulator each when it lapsed)."""
    with httpx.Client(timeout=30) as client:
        for lat, lon in points:
            answer = client.post(url, json={"query": CELLS_QUERY, "variables": {"lat": lat, "lon": lon}}).json()
            assert "errors" not in answer, answer


def keep_cells(redis: Redis, url: str, points: list[tuple[float, float]], seconds: float, mix: bool = False) -> None:
    """Every cell's entries outlive the next `seconds` (else: wait for the lapse, refill them all)."""
    pipe = redis.pipeline(transaction=False)
    for lat, lon in points:
        for key in mix_keys(lat, lon) if mix else [entry_key(lat, lon)]:
            pipe.pttl(key)
    remaining = [int(ms) for ms in pipe.execute()]
    if min(remaining) > seconds * 1000:
        return
    lapsing = [ms for ms in remaining if ms <= seconds * 1000]
    if max(lapsing) > 0:
        print(f"(cell entries lapse within {max(lapsing) / 1000:.1f} s: waiting for them, then refilling)", flush=True)
        time.sleep(max(lapsing) / 1000 + 0.1)
    if mix:
        fill_mix(url, points)
    else:
        fill_cells(url, points)


def alias_requests(url: str, prefix: str, count: int) -> Path:
    """`count` POSTs of the cached_current selection, each under its own alias."""
    selection = QUERY.removeprefix("{ ").removesuffix(" }")
    return write_requests(
        [{"url": url, "body": json.dumps({"query": f"{{ {prefix}{i}: {selection} }}"})} for i in range(count)]
    )


def same_answer(ours: dict[str, Any], theirs: dict[str, Any], fields: tuple[str, ...]) -> None:
    assert "errors" not in ours and "errors" not in theirs, (ours, theirs)
    a, b = ours["data"]["current"], theirs["data"]["current"]
    assert all(a[f] == b[f] for f in fields), (a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--runs", type=int, default=3, help="runs per server and row, interleaved with its peer's")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cells", type=int, default=500, help="cells the response-cache-missing row cycles over")
    parser.add_argument("--small-cache-bytes", type=int, default=100_000, help="WEATHERNOTE_RENDER_CACHE_BYTES there")
    parser.add_argument(
        "--documents", type=int, default=64_000, help="distinct aliases per run of the new-document row"
    )
    parser.add_argument("--mix-cells", type=int, default=2000, help="cells the realistic mix draws from")
    parser.add_argument("--zipf-s", type=float, default=1.0, help="the Zipf exponent of the realistic mix")
    parser.add_argument("--mix-requests", type=int, default=30_000, help="requests in a run's mix file")
    parser.add_argument("--no-mix", action="store_true", help="leave out the realistic mix")
    parser.add_argument("--mix-rate", type=float, default=1000, help="the mix's fixed rate for its p99, req/s")
    args = parser.parse_args()
    yoga_skipped = yoga_ready()
    unlimited = "1000000000"
    limits = {f"rate_limit_per_{window}": int(unlimited) for window in ("minute", "hour", "day")}
    points = cell_points(args.cells)

    with SimulatorProcess(**limits) as simulator, components() as running:
        names = ["weathernote", "weathernote-small", "plain-strawberry", "yoga", "yoga-rc"]
        ports = {name: free_port("127.0.0.1") for name in names}
        url = {name: f"http://127.0.0.1:{port}/graphql" for name, port in ports.items()}
        env = {  # bench/cached_current.py's: the full pipeline as users run it, limits out of the way
            **os.environ,
            "WEATHERNOTE_REDIS_URL": running.redis_url,
            "WEATHERNOTE_UPSTREAM_URL": simulator.url,
            "WEATHERNOTE_LOG_LEVEL": "info",
            "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
            "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
            "WEATHERNOTE_RATE_LIMIT_PERIOD_SECONDS": "1",
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_MINUTE": unlimited,
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_HOUR": unlimited,
            "WEATHERNOTE_UPSTREAM_BUDGET_PER_DAY": unlimited,
            "WEATHERNOTE_CLIENT_ID_SECRET": "5e0b6c1d7a2f8e3b9c4d0a5f1e6b2c7d8a3f9e4b0c5d1a6f2e7b3c8d9a4f0e5b",
            "BENCH_REDIS_URL": running.redis_url,
        }
        serve = [sys.executable, "-m", "weathernote", "serve"]
        pids = {"weathernote": running.start(serve, {**env, "WEATHERNOTE_PORT": str(ports["weathernote"])}).pid}
        pids["weathernote-small"] = running.start(
            serve,
            {
                **env,
                "WEATHERNOTE_PORT": str(ports["weathernote-small"]),
                "WEATHERNOTE_RENDER_CACHE_BYTES": str(args.small_cache_bytes),
            },
        ).pid
        pids["plain-strawberry"] = running.start(
            uvicorn_cmd("plain_strawberry:app", ports["plain-strawberry"]), env
        ).pid
        if not yoga_skipped:
            pids["yoga"] = running.start(yoga_cmd(ports["yoga"], running.redis_url), yoga_env(env)).pid
            pids["yoga-rc"] = running.start(
                [*yoga_cmd(ports["yoga-rc"], running.redis_url), "--response-cache"], yoga_env(env)
            ).pid
            for name in ("yoga", "yoga-rc"):
                wait_http(f"http://127.0.0.1:{ports[name]}/health")
        for name in ("weathernote", "weathernote-small"):
            wait_http(f"http://127.0.0.1:{ports[name]}/ready", ready=300)
        wait_http(url["plain-strawberry"])

        redis = Redis.from_url(running.redis_url)
        run_seconds = args.warmup + args.duration + 1
        fill_cells(url["weathernote-small"], points)
        warm = httpx.post(url["weathernote"], json={"query": QUERY}).json()
        assert "errors" not in warm, warm

        def check_one_cell() -> None:
            """The warm cell, the same answer from WeatherNote and each peer."""
            keep_entry(redis, url["weathernote"], 2 * run_seconds)
            ours = httpx.post(url["weathernote"], json={"query": QUERY}).json()
            assert ours["data"]["current"]["cached"] is True, ours
            same_answer(
                ours, httpx.post(url["plain-strawberry"], json={"query": QUERY}).json(), ("temperature", "cell")
            )
            if not yoga_skipped:  # its cached answer may predate a refill (its TTL is 60 s): the cell only
                same_answer(ours, httpx.post(url["yoga-rc"], json={"query": QUERY}).json(), ("cached", "cell"))

        def check_cells() -> None:
            keep_cells(redis, url["weathernote-small"], points, 2 * run_seconds)
            if yoga_skipped:
                return
            for lat, lon in (points[0], points[len(points) // 2], points[-1]):
                body = {"query": CELLS_QUERY, "variables": {"lat": lat, "lon": lon}}
                same_answer(
                    httpx.post(url["weathernote-small"], json=body).json(),
                    httpx.post(url["yoga"], json=body).json(),
                    SHARED,
                )

        # the response-cache-missing row's requests: one document, the cells' variables in turn
        cells_files = {
            name: write_requests(
                [
                    {"url": url[name], "body": json.dumps({"query": CELLS_QUERY, "variables": {"lat": la, "lon": lo}})}
                    for la, lo in points
                ]
            )
            for name in ("weathernote-small", "yoga")
        }

        mix_points = cell_points(args.mix_cells)
        mixing = not args.no_mix and not yoga_skipped
        if mixing:
            for name in ("weathernote", "yoga", "yoga-rc"):
                register(url[name])
            started = time.monotonic()
            fill_mix(url["weathernote"], mix_points)
            print(f"(the mix's {args.mix_cells:,} cells filled in {time.monotonic() - started:.1f} s)", flush=True)
            ops = operations()
            for lat, lon in (mix_points[0], mix_points[len(mix_points) // 2], mix_points[-1]):
                for name, _ in MIX:  # the same data from both, the whole of it
                    ours = httpx.get(apq_get(url["weathernote"], name, ops[name][0], lat, lon)).json()
                    theirs = httpx.get(apq_get(url["yoga"], name, ops[name][0], lat, lon)).json()
                    assert "errors" not in ours and ours == theirs, (name, ours, theirs)

        def check_mix() -> None:
            # a run of the mix: three servers, each loaded twice (closed, then at the fixed rate), and
            # no entry may lapse meanwhile (WeatherNote would refresh it; Yoga serves what Redis holds)
            keep_cells(redis, url["weathernote"], mix_points, 3 * 2 * run_seconds + run_seconds, mix=True)

        # (row, WeatherNote's server, its peers)
        rows: list[tuple[str, str, tuple[str, ...]]] = []
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        if not yoga_skipped:
            rows.append(("cached current", "weathernote", ("yoga-rc",)))
            rows.append(("response cache missing", "weathernote-small", ("yoga",)))
        # the mix before the new documents, which fill the response cache with answers no one asks
        # again: the mix meets the cache a running server has (its cells answered before, as its fill did)
        if mixing:
            rows.append(("a realistic mix", "weathernote", ("yoga", "yoga-rc")))
        rows.append(("a new document every request", "weathernote", ("plain-strawberry",)))
        for row, ours, peers in rows:
            for run in range(args.runs):
                if row == "a realistic mix":
                    check_mix()
                for name in (ours, *peers):
                    cpu_before = cpu_seconds(pids[name])
                    if row == "cached current":
                        check_one_cell()
                        result = load(url[name], BODY, args)
                    elif row == "response cache missing":
                        check_cells()
                        result = load(cells_files[name], None, args)
                    elif row == "a new document every request":
                        check_one_cell()
                        result = load(alias_requests(url[name], f"r{run}_", args.documents), None, args)
                    else:  # the same draw for each server of a run, another draw each run
                        mix = zipf_mix(url[name], mix_points, args.zipf_s, args.mix_requests, seed=run)
                        result = load(mix, None, args)
                        # and the latency at a fixed rate, the load the issue names (open load: a slow
                        # server cannot slow the arrivals down)
                        paced = load(mix, None, args, "--rate", str(args.mix_rate))
                        result["paced_p99_ms"] = paced["p99_ms"]
                        result["paced_errors"] = paced["errors"]
                        mix.unlink()
                    result["cpu_us"] = (cpu_seconds(pids[name]) - cpu_before) / max(1, result["answered"]) * 1e6
                    results.setdefault((row, name), []).append(result)
            if row == "response cache missing":  # the answers did not fit: the cache stayed within its budget
                held = [
                    line
                    for line in httpx.get(f"http://127.0.0.1:{ports[ours]}/metrics").text.splitlines()
                    if line.startswith('weathernote_render_cache_bytes{kind="response"}')
                ]
                print(f"(weathernote-small after its runs: {held[0] if held else 'no response cache gauge'})")
        redis.close()

    print(
        f"\nrows where the cache cannot help, {args.connections} connections, {args.runs} runs x"
        f" {args.duration:g} s each (after {args.warmup:g} s warm-up), interleaved with the peer's"
    )
    if yoga_skipped:
        print(f"graphql-yoga: skipped ({yoga_skipped}): only the new-document row ran")
    else:
        print(f"graphql-yoga: {yoga_versions()}")
        print(f"yoga+response-cache: the same and @graphql-yoga/plugin-response-cache {response_cache_version()}")
    if mixing:
        print(
            f"the mix: {', '.join(f'{name} {weight}' for name, weight in MIX)} (weights), APQ GET, Zipf s={args.zipf_s:g}"
            f" over {args.mix_cells:,} cells"
        )
    print("wn/peer: WeatherNote's median req/s over this peer's; cpu us/req: the server process's CPU time per answer")
    print("(median; the load generator, Redis and the other servers share the machine's cores, so req/s moves with")
    print("them, CPU per answer much less), and peer/wn that of the peer over WeatherNote's")
    print(
        f"{'row':<30}{'server':<20}{'min req/s':>10}{'median':>9}{'max':>9}{'p99 ms':>9}{'errors':>8}{'wn/peer':>8}"
        f"{'cpu us/req':>11}{'peer/wn':>8}"
    )
    labels = {
        "weathernote": "weathernote",
        "weathernote-small": f"weathernote ({args.small_cache_bytes // 1000} kB)",
        "plain-strawberry": "plain-strawberry",
        "yoga": "yoga (no cache)",
        "yoga-rc": "yoga+response-cache",
    }
    mix_rows = [(row, ours, peers) for row, ours, peers in rows if row == "a realistic mix"]
    for row, ours, peers in mix_rows:
        paced = ", ".join(
            f"{labels[name]} {statistics.median(r['paced_p99_ms'] for r in results[(row, name)]):.2f} ms"
            f" ({sum(int(r['paced_errors']) for r in results[(row, name)])} errors)"
            for name in (ours, *peers)
        )
        print(f"the mix at a fixed {args.mix_rate:,.0f} req/s, p99 (median of the runs): {paced}")
    for row, ours, peers in rows:
        ours_median = statistics.median(r["rps"] for r in results[(row, ours)])
        ours_cpu = statistics.median(r["cpu_us"] for r in results[(row, ours)])
        for name in (ours, *peers):
            rps = [r["rps"] for r in results[(row, name)]]
            p99 = statistics.median(r["p99_ms"] for r in results[(row, name)])
            errors = sum(int(r["errors"]) for r in results[(row, name)])
            cpu = statistics.median(r["cpu_us"] for r in results[(row, name)])
            ratio = f"{ours_median / statistics.median(rps):>8.2f}" if name != ours else f"{'':>8}"
            cpu_ratio = f"{cpu / ours_cpu:>8.2f}" if name != ours else f"{'':>8}"
            print(
                f"{row if name == ours else '':<30}{labels[name]:<20}{min(rps):>10.0f}{statistics.median(rps):>9.0f}"
                f"{max(rps):>9.0f}{p99:>9.2f}{errors:>8}{ratio}{cpu:>11.0f}{cpu_ratio}"
            )


if __name__ == "__main__":
    main()
