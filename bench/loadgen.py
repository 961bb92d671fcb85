"""A small closed-loop HTTP/1.1 load generator (keep-alive, uvloop), run in its own process.

Each of `connections` clients sends one request, reads the whole response and
sends the next, for `duration` seconds after `warmup`. With `--rate`, the load is
open: the clients together send `rate` requests a second on a fixed schedule, and
each latency counts from the moment its request was due (a server that falls
behind is charged for the wait, no coordinated omission). With `--requests FILE`
(one JSON object a line: `{"url": ..., "body": ..., "headers": {...}}`, no body for a GET,
headers added to the `--header`s) the
clients cycle through those requests instead of repeating one, and `--total N`
ends the run after N answers. Prints one JSON line: requests, errors, seconds,
rps and latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop


def build_request(url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    method = "POST" if body is not None else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items() if body is not None or k.lower() != "content-type"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status, and whether the server closes the connection after it (nginx does every
    `keepalive_requests` answers)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    closes = False
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif line.lower() == b"connection: close":
            closes = True
    if length:
        await reader.readexactly(length)
    return status, closes


@dataclass
class Run:
    requests: list[bytes]
    stop_at: float
    record_from: float
    total: int | None = None
    answered: int = 0  # every response, the warm-up's included: what the server's CPU time paid for
    latencies: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.total is not None and len(self.latencies) + len(self.errors) >= self.total


async def client(
    host: str, port: int, run: Run, offset: int, interval: float | None = None, first_at: float = 0.0
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    due = first_at
    sent = offset
    try:
        while True:
            if interval is not None:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                started, due = due, due + interval
            else:
                started = time.perf_counter()
            if started >= run.stop_at or run.done:
                return
            writer.write(run.requests[sent % len(run.requests)])
            sent += 1
            status, closes = await read_response(reader)
            run.answered += 1
            if closes:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            if started >= run.record_from:
                if status == 200:
                    run.latencies.append(time.perf_counter() - started)
                else:
                    run.errors.append(status)
    finally:
        writer.close()


async def load(
    urls: list[str],
    bodies: list[bytes | None],
    headers: list[dict[str, str]],
    connections: int,
    duration: float,
    warmup: float,
    rate: float | None = None,
    total: int | None = None,
) -> dict[str, float]:
    parts = urlsplit(urls[0])
    now = time.perf_counter()
    run = Run(
        [build_request(*request) for request in zip(urls, bodies, headers, strict=True)],
        stop_at=now + warmup + duration,
        record_from=now + warmup,
        total=total,
    )
    interval = connections / rate if rate else None
    started = time.perf_counter()
    await asyncio.gather(
        *(
            client(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                run,
                # each client starts elsewhere in the list, so that all of it is in use at once
                index * len(run.requests) // connections,
                interval,
                # the clients' schedules interleaved: one request every 1/rate s in all
                now + 0.1 + (index * interval / connections if interval else 0.0),
            )
            for index in range(connections)
        )
    )
    seconds = min(duration, time.perf_counter() - started - warmup) if total else duration
    latencies = sorted(run.latencies)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": len(latencies),
        "answered": run.answered,
        "errors": len(run.errors),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", help="the one request's URL (or --requests)")
    parser.add_argument("--body", default=None, help="POST this body (else GET)")
    parser.add_argument("--requests", default=None, help="a file of requests, one JSON object a line")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rate", type=float, default=None, help="requests a second in all (open load)")
    parser.add_argument("--total", type=int, default=None, help="stop after this many answers")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    if args.requests:
        with open(args.requests) as lines:
            items = [json.loads(line) for line in lines if line.strip()]
        urls = [item["url"] for item in items]
        bodies = [item["body"].encode() if item.get("body") is not None else None for item in items]
        each = [headers | item.get("headers", {}) for item in items]
    else:
        urls, bodies, each = [args.url], [args.body.encode() if args.body is not None else None], [headers]
    result = uvloop.run(load(urls, bodies, each, args.connections, args.duration, args.warmup, args.rate, args.total))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
