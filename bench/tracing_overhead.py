"""What tracing costs the hottest path: cached `current` over HTTP with tracing off, on at 1 % and on at 100 %.

Three `weathernote serve` processes on the same Redis and the same warm cell, differing only in their
OTEL_* variables, loaded in turn by the same closed-loop generator (bench/loadgen.py, its own
process), the three interleaved in each of `--runs` runs (each configuration first in one of them, and
each run only once the receiver has heard nothing for a second):
  - off:   no OTLP endpoint (the default): no SDK object exists, the tracing middleware is not in the stack
  - disabled: an endpoint and OTEL_SDK_DISABLED=true: off too, measured again as the noise floor
  - 1 %:   OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01
  - 100 %: OTEL_TRACES_SAMPLER=parentbased_always_on
The traced two export over OTLP/HTTP (protobuf) to a real receiver in this process, which decodes
every request it is sent and counts the spans by service; their batch processors keep the SDK's
schedule (a batch every 5 s) with a queue large enough that no span is dropped (OTEL_BSP_MAX_QUEUE_SIZE),
so what is measured includes exporting them.

Prints each configuration's req/s (min / median / max of the runs), p99 of its median run, the ratio
of its median to off's, the server's CPU time per request (its user + system time over the runs, divided
by the requests answered: on a machine shared with other work this is steadier than req/s) and its ratio
to off's, and the spans the receiver got from it. The target (issue 22): at 1 %, at most 5 % fewer
requests a second than off.

On a machine shared with other work those figures move by several per cent from run to run (two
identical servers differ by as much), so the comparison runs in process too: one process builds the
three apps (`create_app`: the whole middleware stack, the real Redis and receiver), and drives them
through their ASGI interface without sockets in alternating blocks of requests, so that all three
meet the same machine; per configuration, the event loop's CPU time per request (its blocks' thread
time: the app's own, without HTTP parsing) and its exporter thread's, and the total's ratio to off's.

Usage: python bench/tracing_overhead.py [--duration 5] [--warmup 1] [--connections 32] [--runs 3]
                                        [--blocks 60] [--block 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cached_current import BODY, QUERY, load
from harness import components, cpu_seconds, free_port, wait_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from weathernote.simulator import SimulatorProcess

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {},
    # off as well (an endpoint, but OTEL_SDK_DISABLED=true): what two identical configurations differ by
    "disabled": {"OTEL_SDK_DISABLED": "true"},
    "1 %": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "100 %": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every POST /v1/traces decoded, its spans counted by service."""

    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        service = next(
                            (
                                a.value.string_value
                                for a in resource_spans.resource.attributes
                                if a.key == "service.name"
                            ),
                            "",
                        )
                        receiver.spans[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def quiet(self, seconds: float, at_most: float = 30.0) -> None:
        """Until no span has arrived for `seconds` (a traced server's last batches exported): the next run
        is not charged for the export of the one before it, nor for this process decoding it."""
        deadline = time.monotonic() + at_most
        last = -1
        while time.monotonic() < deadline:
            with self.lock:
                total = sum(self.spans.values())
            if total == last:
                return
            last = total
            time.sleep(seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def in_process(blocks: int, block: int, environs: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    """The three configurations' apps in this one process (each built from its own OTEL_* variables), each
    answering cached `current` queries through its ASGI interface, in alternating blocks of `block`, so that
    all three meet the same machine. Per configuration: the event loop's CPU time per request (its blocks'
    thread time) and its batch processor's export thread's (all of it, over the requests it traced)."""
    from weathernote.http.app import create_app
    from weathernote.ops.logs import configure_logging
    from weathernote.settings import Settings

    body = BODY.encode()
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: Counter[int] = Counter()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    configure_logging("info")
    apps, exporters = {}, {}
    async with contextlib.AsyncExitStack() as stack:
        for name, environ in environs.items():
            for key in [key for key in os.environ if key.startswith(("OTEL_", "WEATHERNOTE_"))]:
                del os.environ[key]
            os.environ.update(environ)
            before = set(threading.enumerate())
            app = apps[name] = create_app(Settings())
            await stack.enter_async_context(app.router.lifespan_context(app))
            exporters[name] = [
                t.native_id for t in set(threading.enumerate()) - before if t.name.startswith("OtelBatch")
            ]
        for _ in range(600):  # ready within 30 s, or the warm-up's answers fail the check below
            if all(app.state.services.ready for app in apps.values()):
                break
            await asyncio.sleep(0.05)
        for app in apps.values():
            for _ in range(block):  # the cell filled, every cache warm
                await app(dict(scope), receive, send)
        names = list(apps)
        loop_cpu = dict.fromkeys(names, 0.0)
        export_before = {name: sum(thread_cpu(tid) for tid in tids) for name, tids in exporters.items()}
        for index in range(blocks):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                app, started = apps[name], time.thread_time()
                for _ in range(block):
                    await app(dict(scope), receive, send)
                loop_cpu[name] += time.thread_time() - started
        for tracing in (app.state.services.tracing for app in apps.values()):
            if tracing is not None:
                tracing.provider.force_flush()  # what the blocks traced, exported and counted
        export = {name: sum(thread_cpu(tid) for tid in tids) - export_before[name] for name, tids in exporters.items()}
    assert statuses == {200: len(apps) * block * (blocks + 1)}, statuses
    requests = blocks * block
    return {name: {"loop": loop_cpu[name] / requests * 1e6, "export": export[name] / requests * 1e6} for name in names}


def thread_cpu(native_id: int) -> float:
    """One thread of this process: its user + system CPU time so far (0 once it has ended)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=60, help="in process: blocks per configuration")
    parser.add_argument("--block", type=int, default=200, help="in process: requests a block")
    parser.add_argument("--in-process", default=None, help=argparse.SUPPRESS)  # the worker: its environments
    args = parser.parse_args()
    if args.in_process:
        environs = json.loads(Path(args.in_process).read_text())
        print(json.dumps(asyncio.run(in_process(args.blocks, args.block, environs))))
        return
    receiver = Receiver()
    unlimited = "1000000000"
    limits = {f"rate_limit_per_{window}": int(unlimited) for window in ("minute", "hour", "day")}
    try:
        with SimulatorProcess(**limits) as simulator, components() as running:
            base = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "WEATHERNOTE_"))}
            base.update(
                {
                    "WEATHERNOTE_REDIS_URL": running.redis_url,
                    "WEATHERNOTE_UPSTREAM_URL": simulator.url,
                    "WEATHERNOTE_LOG_LEVEL": "info",  # request logs on, as users run it (written to /dev/null)
                    "WEATHERNOTE_WEATHER_TTL_SECONDS": "3600",
                    "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "100000000",
                    "WEATHERNOTE_RATE_LIMIT_PERIOD_SECONDS": "1",
                    "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
                    "WEATHERNOTE_CLIENT_ID_SECRET": "5e0b6c1d7a2f8e3b9c4d0a5f1e6b2c7d8a3f9e4b0c5d1a6f2e7b3c8d9a4f0e5b",
                }
            )
            urls, pids, envs = {}, {}, {}
            for index, (name, otel) in enumerate(CONFIGURATIONS.items()):
                port = free_port("127.0.0.1")
                env = envs[name] = {**base, "WEATHERNOTE_PORT": str(port), **otel}
                if otel:
                    env.update(
                        {
                            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                            "OTEL_SERVICE_NAME": f"bench-{index}",
                            "OTEL_BSP_MAX_QUEUE_SIZE": "262144",
                            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
                        }
                    )
                pids[name] = running.start([sys.executable, "-m", "weathernote", "serve"], env).pid
                urls[name] = f"http://127.0.0.1:{port}/graphql"
            for name, url in urls.items():
                wait_http(url.replace("/graphql", "/ready"), ready=300)
                for _ in range(2):  # a miss fills the cell, then a hit
                    answer = httpx.post(url, json={"query": QUERY}, timeout=30).json()
                assert answer["data"]["current"]["cached"] is True, (name, answer)
                if name != "1 %":  # a sampled answer carries its trace id, an untraced one nothing
                    assert ("extensions" in answer) == (name == "100 %"), (name, answer)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
            cpu = dict.fromkeys(urls, 0.0)
            names = list(urls)
            previous = None
            for run in range(args.runs):
                for name in names[run % len(names) :] + names[: run % len(names)]:  # a different one first each run
                    if CONFIGURATIONS.get(previous or "off", {}).get("OTEL_TRACES_SAMPLER"):
                        receiver.quiet(5.5)  # its last batch (one every 5 s) exported before the next run
                    previous, url = name, urls[name]
                    before = cpu_seconds(pids[name])
                    results[name].append(load(url, BODY, args))
                    cpu[name] += cpu_seconds(pids[name]) - before
            # CPU time per response (the warm-up's included, as in the CPU time)
            per_request = {name: cpu[name] / sum(r["answered"] for r in runs) * 1e6 for name, runs in results.items()}
            receiver.quiet(5.5)
            off = statistics.median(r["rps"] for r in results["off"])
            print(
                f"cached `current` over HTTP, {args.connections} connections, {args.duration:g} s a run,"
                f" {args.runs} interleaved runs each, exporting to a local OTLP/HTTP receiver"
            )
            print(
                f"{'tracing':<10}{'min':>9}{'median':>9}{'max':>9}{'p99 ms':>9}{'x off':>8}"
                f"{'CPU us/req':>12}{'x off':>8}{'spans':>10}"
            )
            for index, (name, runs) in enumerate(results.items()):
                rates = sorted(r["rps"] for r in runs)
                middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                median = statistics.median(rates)
                spans = receiver.spans.get(f"bench-{index}", 0) if name != "off" else 0
                print(
                    f"{name:<10}{rates[0]:>9.0f}{median:>9.0f}{rates[-1]:>9.0f}{middle['p99_ms']:>9.2f}"
                    f"{median / off:>8.3f}{per_request[name]:>12.1f}{per_request[name] / per_request['off']:>8.3f}"
                    f"{spans:>10,}"
                )
            environs = {name: {**envs[name], "WEATHERNOTE_PORT": "0"} for name in urls}
            for name in urls:
                if "OTEL_SERVICE_NAME" in environs[name]:
                    environs[name]["OTEL_SERVICE_NAME"] += "-in-process"
            spec = Path(tempfile.mkdtemp(prefix="bench-tracing-")) / "environs.json"
            spec.write_text(json.dumps(environs))
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--in-process",
                    str(spec),
                    "--blocks",
                    str(args.blocks),
                    "--block",
                    str(args.block),
                ],
                env=base,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                check=True,
            )
            costs = json.loads(out.stdout.strip().splitlines()[-1])
            off_us = costs["off"]["loop"] + costs["off"]["export"]
            print(
                f"\nin process: the apps in one process, each through its ASGI interface (no sockets),"
                f" {args.blocks} blocks of {args.block} requests each, alternating: CPU us per request"
            )
            print(f"{'tracing':<10}{'event loop':>12}{'exporter':>10}{'total':>9}{'x off':>8}")
            for name, cost in costs.items():
                total = cost["loop"] + cost["export"]
                print(f"{name:<10}{cost['loop']:>12.1f}{cost['export']:>10.1f}{total:>9.1f}{total / off_us:>8.3f}")
    finally:
        receiver.close()


if __name__ == "__main__":
    main()
