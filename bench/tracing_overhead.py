"""What tracing costs the hottest path: cached `current` over HTTP with tracing off, on at 1 % and on at 100 %.

Three `weathernote serve` processes on the same Redis and the same warm cell, differing only in their
OTEL_* variables, loaded in turn by the same closed-loop generator (bench/loadgen.py, its own
process), the three interleaved in each of `--runs` runs:
  - off:   no OTLP endpoint (the default): no SDK object exists, the tracing middleware is not in the stack
  - 1 %:   OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01
  - 100 %: OTEL_TRACES_SAMPLER=parentbased_always_on
The traced two export over OTLP/HTTP (protobuf) to a real receiver in this process, which decodes
every request it is sent and counts the spans by service; their batch processors get a queue large
enough that no span is dropped (OTEL_BSP_MAX_QUEUE_SIZE), so what is measured includes exporting them.

Prints each configuration's req/s (min / median / max of the runs), p99 of its median run, the ratio
of its median to off's, the server's CPU time per request (its user + system time over the runs, divided
by the requests answered: on a machine shared with other work this is steadier than req/s) and its ratio
to off's, and the spans the receiver got from it. The target (issue 22): at 1 %, at most 5 % fewer
requests a second than off.

On a machine shared with other work those figures move by several per cent from run to run, so the
same comparison runs in process too: for each configuration and run a fresh process builds the app
(`create_app`, its whole middleware stack, the real Redis and receiver), answers `--asgi-requests`
cached queries through it one after another without sockets (no HTTP parsing: the figure is the
app's own), and reports its CPU time per request (the batch processor's thread and its exports
included). Interleaved like the load runs; min / median / max and the median's ratio to off's.

Usage: python bench/tracing_overhead.py [--duration 5] [--warmup 1] [--connections 32] [--runs 3]
                                        [--asgi-requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from harness import ROOT, components, free_port, wait_http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from weathernote.simulator import SimulatorProcess

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { temperature cached cell { lat lon } } }"
BODY = json.dumps({"query": QUERY})
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {},
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

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    return dict(json.loads(out.stdout))


async def asgi_requests(count: int) -> float:
    """In a process of its own (its OTEL_* and WEATHERNOTE_* variables set): the app's CPU seconds per
    cached `current` query, driven through its ASGI interface `count` times after as many to warm up."""
    from weathernote.http.app import create_app
    from weathernote.ops.logs import configure_logging
    from weathernote.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
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

    async with app.router.lifespan_context(app):
        for _ in range(600):  # ready within 30 s, or the warm-up's first answers fail the check below
            if app.state.services.ready:
                break
            await asyncio.sleep(0.05)
        for _ in range(count):  # the cell filled, every cache warm
            await app(dict(scope), receive, send)
        started = time.process_time()
        for _ in range(count):
            await app(dict(scope), receive, send)
        spent = time.process_time() - started
    assert statuses == {200: 2 * count}, statuses
    return spent / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--asgi-requests", type=int, default=5000)
    parser.add_argument("--asgi-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.asgi_worker:
        print(json.dumps({"cpu": asyncio.run(asgi_requests(args.asgi_requests))}))
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
                            "OTEL_BSP_SCHEDULE_DELAY": "500",
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
            for _ in range(args.runs):
                for name, url in urls.items():
                    before = cpu_seconds(pids[name])
                    results[name].append(load(url, args))
                    cpu[name] += cpu_seconds(pids[name]) - before
            # CPU time per response (the warm-up's included, as in the CPU time)
            per_request = {name: cpu[name] / sum(r["answered"] for r in runs) * 1e6 for name, runs in results.items()}
            time.sleep(2)  # the last batches exported (OTEL_BSP_SCHEDULE_DELAY 0.5 s)
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
            in_process: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(args.runs):
                for name in urls:
                    out = subprocess.run(
                        [sys.executable, __file__, "--asgi-worker", "--asgi-requests", str(args.asgi_requests)],
                        env={**envs[name], "OTEL_SERVICE_NAME": "bench-asgi"},
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    in_process[name].append(json.loads(out.stdout.strip().splitlines()[-1])["cpu"] * 1e6)
            base_us = statistics.median(in_process["off"])
            print(
                f"\nin process (the app through its ASGI interface, no sockets), {args.asgi_requests:,} requests"
                f" a run, {args.runs} interleaved runs each: CPU us per request"
            )
            print(f"{'tracing':<10}{'min':>9}{'median':>9}{'max':>9}{'x off':>8}")
            for name, costs in in_process.items():
                print(
                    f"{name:<10}{min(costs):>9.1f}{statistics.median(costs):>9.1f}{max(costs):>9.1f}"
                    f"{statistics.median(costs) / base_us:>8.3f}"
                )
    finally:
        receiver.close()


if __name__ == "__main__":
    main()
