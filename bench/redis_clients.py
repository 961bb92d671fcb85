"""Redis clients for the hot path, measured in the same run on the same private Redis.

What a cached request asks of Redis, done by N concurrent asyncio callers in one process
(default 32, under uvloop), each in a closed loop for a fixed time after a warm-up:
  - limiter+entry: in one round trip, EVALSHA of weathernote.fairuse.limiter's sliding-window
                   script (a client key and an address key, both per caller; limits of
                   100,000,000 a second, so every call records; cost 1) and MGET of one
                   ~300-byte entry: what `RateLimiter.check` sends for a cached request
  - get:           one GET of the entry (what the bare-ASGI peer of bench/cached_current.py does)

Candidates:
  - redis-py:    redis.asyncio.Redis on the project's BlockingConnectionPool of 128 connections
                 (`weathernote.redis.topology.standalone`); a pipeline(transaction=False) per operation, as the
                 project did before its own connection
  - wire:        weathernote.redis_wire.MultiplexedConnection: one socket, hiredis, the writes of
                 one loop turn coalesced
  - gateway:     RedisGateway.commands: the same connection plus the breaker, the deadline and
                 the error mapping, i.e. the hot path's real cost
  - coredis:     coredis.Redis (128 connections at most), its pipeline(transaction=False) context
                 manager for the two commands; plain commands are multiplexed by coredis itself
  - valkey-glide: glide.GlideClient (a Rust core on its own threads, one multiplexed connection),
                 a non-atomic Batch run by `exec`; under uvloop, or under asyncio's own loop (said
                 in the output) if it cannot run under uvloop

coredis and valkey-glide are not dependencies of the project; to measure them:
    .venv/bin/pip install coredis valkey-glide
A candidate that cannot be imported is skipped, with the reason printed.

Every candidate and workload runs in a child process of its own (nothing carried over between
candidates: threads, pools, garbage), one after another against the same Redis. Reported per
candidate: operations a second, p50/p99 latency of one operation (a closed loop at saturation:
about callers / throughput), CPU microseconds per operation of the benchmark process (all its
threads, glide's Rust ones included: time.process_time), and of the Redis server (which shares
this machine's cores), and ratios to redis-py. Noisy neighbours move the numbers: the load
average before the run is printed; run twice when in doubt.

Usage: python bench/redis_clients.py [--callers 32] [--duration 5] [--warmup 1]
                                     [--only redis-py wire ...] [--workload limiter+entry get]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ROOT, components

ENTRY_KEY = "weather:lat:40.7:lon:-74.0"
# ~300 bytes, shaped like a cached `current` entry
ENTRY_VALUE = json.dumps(
    {
        "lat": 40.7,
        "lon": -74.0,
        "temperature": 21.4,
        "apparent_temperature": 20.9,
        "humidity": 61,
        "wind_speed": 11.2,
        "wind_direction": 230,
        "weather_code": 2,
        "is_day": True,
        "observed_at": "2025-06-01T12:00:00Z",
        "fetched_at": "2025-06-01T12:03:11Z",
        "expires_at": "2025-06-01T12:15:00Z",
        "source": "open-meteo",
        "units": {"temperature": "celsius", "wind_speed": "km/h"},
    },
    separators=(",", ":"),
).encode()
LIMIT = 100_000_000
PERIOD_MS = 1000
ARGS = (LIMIT, PERIOD_MS, LIMIT, PERIOD_MS, 1)  # per layer limit and period, then the cost
TIMEOUT = 0.5  # the service's default redis_timeout_seconds

CANDIDATES = ("redis-py", "wire", "gateway", "coredis", "valkey-glide")
WORKLOADS = {
    "limiter+entry": "EVALSHA sliding window (2 keys) + MGET of one ~300-byte entry, in one round trip",
    "get": "one GET of the ~300-byte entry",
}
INSTALL = {"coredis": "coredis", "valkey-glide": "valkey-glide"}
BASELINE = "redis-py"

Operation = Callable[[int], Awaitable[Any]]


@dataclass(frozen=True)
class Setup:
    url: str
    host: str
    port: int
    sha: str
    callers: int
    prefix: str  # of this run's rate-limit keys

    def keys(self, caller: int) -> list[str]:
        return [f"rate_limit:hash:{self.prefix}-{caller}", f"rate_limit:ip:{self.prefix}-{caller}"]


@dataclass(frozen=True)
class Ops:
    limiter_and_entry: Operation  # replies (script's, MGET's): a sequence of two
    get: Operation  # the entry's bytes


# ---------------------------------------------------------------- candidates (child process)


@contextlib.asynccontextmanager
async def redis_py(setup: Setup) -> AsyncIterator[Ops]:
    from weathernote.redis.topology import standalone

    client = standalone(setup.url, TIMEOUT, max_connections=128)
    sha = setup.sha
    keys = [setup.keys(caller) for caller in range(setup.callers)]

    async def limiter_and_entry(caller: int) -> Any:
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(sha, 2, *keys[caller], *ARGS)
            pipe.mget([ENTRY_KEY])
            return await pipe.execute()

    async def get(_: int) -> Any:
        return await client.get(ENTRY_KEY)

    try:
        yield Ops(limiter_and_entry, get)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def wire(setup: Setup) -> AsyncIterator[Ops]:
    from weathernote.redis.wire import MultiplexedConnection

    connection = MultiplexedConnection(setup.url, TIMEOUT)
    sha = setup.sha
    keys = [setup.keys(caller) for caller in range(setup.callers)]

    async def limiter_and_entry(caller: int) -> Any:
        return await connection.execute([("EVALSHA", sha, 2, *keys[caller], *ARGS), ("MGET", ENTRY_KEY)])

    async def get(_: int) -> Any:
        [value] = await connection.execute([("GET", ENTRY_KEY)])
        return value

    try:
        yield Ops(limiter_and_entry, get)
    finally:
        await connection.aclose()


@contextlib.asynccontextmanager
async def gateway(setup: Setup) -> AsyncIterator[Ops]:
    from weathernote.breaker import CircuitBreaker
    from weathernote.fairuse.limiter import _SLIDING_WINDOW
    from weathernote.redis import RedisGateway

    redis = RedisGateway(setup.url, timeout=TIMEOUT, breaker=CircuitBreaker("redis"))
    await redis.connect()
    if redis.wire is None:
        raise RuntimeError("the gateway did not take the multiplexed connection")
    script = redis.script(_SLIDING_WINDOW)
    assert script.sha == setup.sha
    keys = [setup.keys(caller) for caller in range(setup.callers)]

    async def limiter_and_entry(caller: int) -> Any:
        # as RateLimiter.check builds it, for a request with one entry to read
        return await redis.commands([script.command(keys[caller], ARGS), ("MGET", ENTRY_KEY)])

    async def get(_: int) -> Any:
        [value] = await redis.commands([("GET", ENTRY_KEY)])
        return value

    try:
        yield Ops(limiter_and_entry, get)
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def coredis_client(setup: Setup) -> AsyncIterator[Ops]:
    import coredis

    client = coredis.Redis.from_url(
        setup.url, max_connections=128, stream_timeout=TIMEOUT, connect_timeout=TIMEOUT, pool_timeout=TIMEOUT
    )
    sha = setup.sha
    keys = [setup.keys(caller) for caller in range(setup.callers)]

    async def limiter_and_entry(caller: int) -> Any:
        # the pipeline runs when its context exits; its replies are then in `results`
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(sha, keys=keys[caller], args=ARGS)
            pipe.mget([ENTRY_KEY])
        return pipe.results

    async def get(_: int) -> Any:
        return await client.get(ENTRY_KEY)

    async with client:  # coredis 6: a client lives only inside its context
        yield Ops(limiter_and_entry, get)


@contextlib.asynccontextmanager
async def glide_client(setup: Setup) -> AsyncIterator[Ops]:
    from glide import Batch, GlideClient, GlideClientConfiguration, NodeAddress

    config = GlideClientConfiguration([NodeAddress(setup.host, setup.port)], request_timeout=int(TIMEOUT * 1000))
    client = await GlideClient.create(config)
    sha = setup.sha
    args = [str(arg) for arg in ARGS]
    # glide's Batch has no EVALSHA of its own (its Script API is for one call): a custom command
    commands = [["EVALSHA", sha, "2", *setup.keys(caller), *args] for caller in range(setup.callers)]

    async def limiter_and_entry(caller: int) -> Any:
        batch = Batch(is_atomic=False)
        batch.custom_command(commands[caller])
        batch.mget([ENTRY_KEY])
        return await client.exec(batch, raise_on_error=True)

    async def get(_: int) -> Any:
        return await client.get(ENTRY_KEY)

    try:
        yield Ops(limiter_and_entry, get)
    finally:
        await client.close()


OPENERS: dict[str, Callable[[Setup], contextlib.AbstractAsyncContextManager[Ops]]] = {
    "redis-py": redis_py,
    "wire": wire,
    "gateway": gateway,
    "coredis": coredis_client,
    "valkey-glide": glide_client,
}
IMPORTS = {"redis-py": "redis", "wire": "hiredis", "gateway": "hiredis", "coredis": "coredis", "valkey-glide": "glide"}


def check(workload: str, reply: Any) -> None:
    """The first reply must be the real one: a script that allowed, and the entry."""
    if workload == "get":
        assert reply == ENTRY_VALUE, reply
        return
    script, values = reply
    assert int(script[0]) == 1 and list(values) == [ENTRY_VALUE], reply


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid`, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


async def measure(operation: Operation, args: argparse.Namespace) -> dict[str, Any]:
    """`args.callers` closed loops of `operation`; counted only within the measured window."""
    running = True
    measuring = False
    latencies: list[int] = []
    errors = 0
    last_error = ""
    clock = time.perf_counter_ns

    async def caller(index: int) -> None:
        nonlocal errors, last_error
        while running:
            start = clock()
            try:
                await operation(index)
            except Exception as exc:
                if measuring:
                    errors += 1
                    last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                await asyncio.sleep(0.001)
                continue
            if measuring:
                latencies.append(clock() - start)

    tasks = [asyncio.create_task(caller(index)) for index in range(args.callers)]
    await asyncio.sleep(args.warmup)
    measuring = True
    cpu, wall, server = time.process_time(), time.perf_counter(), cpu_ticks(args.server_pid)
    await asyncio.sleep(args.duration)
    measuring = False
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server = (cpu_ticks(args.server_pid) - server) / os.sysconf("SC_CLK_TCK")
    running = False
    await asyncio.gather(*tasks)
    latencies.sort()
    ops = len(latencies)

    def percentile(p: float) -> float:
        return latencies[min(ops - 1, int(ops * p))] / 1e6 if ops else float("nan")

    return {
        "ops": ops,
        "seconds": wall,
        "cpu_s": cpu,
        "server_cpu_s": server,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": errors,
        "last_error": last_error,
        "threads": threads(),
    }


async def child(args: argparse.Namespace) -> dict[str, Any]:
    setup = Setup(args.url, args.host, args.port, args.sha, args.callers, prefix=f"bench-{args.child}")
    [workload] = args.workload
    try:
        opener = OPENERS[args.child](setup)
        async with opener as ops:
            operation = ops.limiter_and_entry if workload == "limiter+entry" else ops.get
            check(workload, await operation(0))
            result = await measure(operation, args)
    except ImportError as exc:
        return {"skipped": f"cannot import {exc.name or IMPORTS[args.child]} ({exc})"}
    result["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return result


def run_child(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(child(args))
    else:
        result = asyncio.run(child(args))
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- the run (parent process)


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def spawn(args: argparse.Namespace, name: str, workload: str, base: list[str], loop: str) -> dict[str, Any]:
    command = [*base, "--child", name, "--workload", workload, "--loop", loop]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=args.warmup + args.duration + 60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"failed": "timed out"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {out.returncode}: {last[:300]}"}
    return dict(json.loads(lines[-1]))


def table(workload: str, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{workload}: {WORKLOADS[workload]}")
    print(f"{args.callers} callers, {args.duration:g} s after {args.warmup:g} s of warm-up")
    print(
        f"{'candidate':<14}{'loop':>8}{'ops/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/op':>11}{'CPU %':>7}"
        f"{'redis us/op':>12}{'x ops/s':>9}{'x CPU/op':>10}{'errors':>8}{'threads':>9}"
    )
    base = results.get(BASELINE, {})
    base_ops = base["ops"] / base["seconds"] if base.get("ops") else None
    base_cpu = base["cpu_s"] / base["ops"] * 1e6 if base_ops else None
    for name, r in results.items():
        if "ops" not in r:
            reason = r.get("skipped") or r.get("failed")
            print(f"{name:<14}  {'skipped' if 'skipped' in r else 'failed'}: {reason}")
            continue
        ops = r["ops"] / r["seconds"]
        cpu = r["cpu_s"] / r["ops"] * 1e6 if r["ops"] else float("nan")
        server = r["server_cpu_s"] / r["ops"] * 1e6 if r["ops"] else float("nan")
        x_ops = f"{ops / base_ops:>9.2f}" if base_ops else f"{'-':>9}"
        x_cpu = f"{cpu / base_cpu:>10.2f}" if base_cpu else f"{'-':>10}"
        print(
            f"{name:<14}{r['loop']:>8}{ops:>9.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{cpu:>11.1f}"
            f"{r['cpu_s'] / r['seconds'] * 100:>7.0f}{server:>12.1f}{x_ops}{x_cpu}{r['errors']:>8}{r['threads']:>9}"
        )
        if r["errors"]:
            print(f"{'':<14}  last error: {r['last_error']}")
        if r.get("note"):
            print(f"{'':<14}  {r['note']}")


def conclusion(results: dict[str, dict[str, Any]]) -> str:
    measured = {name: r["cpu_s"] / r["ops"] * 1e6 for name, r in results.items() if r.get("ops")}
    if not measured:
        return "nothing measured"
    ranked = sorted(measured, key=measured.__getitem__)
    best = ranked[0]
    line = f"cheapest in client CPU per limiter+entry operation: {best} ({measured[best]:.1f} us/op)"
    if BASELINE in measured and best != BASELINE:
        line += f", {measured[BASELINE] / measured[best]:.2f}x less than {BASELINE} ({measured[BASELINE]:.1f} us/op)"
    if len(ranked) > 1:
        second = ranked[1]
        line += f"; next {second} ({measured[second]:.1f} us/op, {measured[second] / measured[best]:.2f}x)"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=32, help="concurrent asyncio callers in one process")
    parser.add_argument("--duration", type=float, default=5, help="measured seconds per candidate and workload")
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--only", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    # a child process's own arguments: one candidate, one workload
    parser.add_argument("--child", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help=argparse.SUPPRESS)
    for option, kind in (("--url", str), ("--host", str), ("--port", int), ("--sha", str), ("--server-pid", int)):
        parser.add_argument(option, type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    from redis import Redis

    from weathernote.fairuse.limiter import _SLIDING_WINDOW

    load = os.getloadavg()
    with components() as running:
        server_process = running.redis._process
        assert server_process is not None and running.redis.port is not None
        redis = Redis.from_url(running.redis_url)
        redis.set(ENTRY_KEY, ENTRY_VALUE)
        sha = str(redis.script_load(_SLIDING_WINDOW))
        info = redis.info("server")
        redis.close()
        server = f"valkey {info['valkey_version']}" if "valkey_version" in info else f"redis {info['redis_version']}"
        base = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--callers",
            str(args.callers),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--url",
            running.redis_url,
            "--host",
            running.redis.host,
            "--port",
            str(running.redis.port),
            "--sha",
            sha,
            "--server-pid",
            str(server_process.pid),
        ]
        results: dict[str, dict[str, dict[str, Any]]] = {}
        skipped: dict[str, str] = {}
        for workload in args.workload:
            results[workload] = {}
            for name in args.only:
                if name in skipped:
                    results[workload][name] = {"skipped": skipped[name]}
                    continue
                result = spawn(args, name, workload, base, "uvloop")
                if "failed" in result and name == "valkey-glide":
                    failure = result["failed"]
                    result = spawn(args, name, workload, base, "asyncio")
                    result["note"] = f"not under uvloop ({failure}): run under asyncio's default loop"
                if "skipped" in result:
                    skipped[name] = result["skipped"] + (
                        f"; install: .venv/bin/pip install {INSTALL[name]}" if name in INSTALL else ""
                    )
                    result["skipped"] = skipped[name]
                results[workload][name] = result

    print("Redis clients on the hot path, one process of asyncio callers each, against one private Redis")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average before {load[0]:.2f}; server {server}"
    )
    versions = {
        "redis-py": f"redis {version('redis')}, hiredis {version('hiredis')}",
        "wire/gateway": f"weathernote {version('weathernote')} (hiredis {version('hiredis')})",
        "coredis": f"coredis {version('coredis')}",
        "valkey-glide": f"valkey-glide {version('valkey-glide')}",
        "loop": f"uvloop {version('uvloop')}",
    }
    print("versions: " + "; ".join(f"{name}: {text}" for name, text in versions.items()))
    print(
        "CPU us/op: the benchmark process's CPU (every thread) per operation; CPU %: of one core;"
        " redis us/op: the server's; x: ratio to redis-py (x CPU/op below 1 is cheaper); threads: the process's"
    )
    for workload, by_name in results.items():
        table(workload, by_name, args)
    if "limiter+entry" in results:
        print("\n" + conclusion(results["limiter+entry"]))


if __name__ == "__main__":
    main()
