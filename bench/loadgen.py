"""A small closed-loop HTTP/1.1 load generator (keep-alive, uvloop), run in its own process.

Each of `connections` clients sends one request, reads the whole response and
sends the next, for `duration` seconds after `warmup`. With `--rate`, the load is
open: the clients together send `rate` requests a second on a fixed schedule, and
each latency counts from the moment its request was due (a server that falls
behind is charged for the wait, no coordinated omission). Prints one JSON line:
requests, errors, seconds, rps and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import uvloop


def build_request(url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    method = "POST" if body is not None else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def client(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    record_from: float,
    latencies: list[float],
    errors: list[int],
    interval: float | None = None,
    first_at: float = 0.0,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    due = first_at
    try:
        while True:
            if interval is not None:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                started, due = due, due + interval
            else:
                started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            status = await read_response(reader)
            if started >= record_from:
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(status)
    finally:
        writer.close()


async def run(
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    connections: int,
    duration: float,
    warmup: float,
    rate: float | None = None,
) -> dict[str, float]:
    parts = urlsplit(url)
    request = build_request(url, body, headers)
    now = time.perf_counter()
    record_from, stop_at = now + warmup, now + warmup + duration
    latencies: list[float] = []
    errors: list[int] = []
    interval = connections / rate if rate else None
    await asyncio.gather(
        *(
            client(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                request,
                stop_at,
                record_from,
                latencies,
                errors,
                interval,
                # the clients' schedules interleaved: one request every 1/rate s in all
                now + 0.1 + (index * interval / connections if interval else 0.0),
            )
            for index in range(connections)
        )
    )
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": duration,
        "rps": len(latencies) / duration,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--body", default=None)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rate", type=float, default=None, help="requests a second in all (open load)")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    body = args.body.encode() if args.body is not None else None
    result = uvloop.run(run(args.url, body, headers, args.connections, args.duration, args.warmup, args.rate))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
