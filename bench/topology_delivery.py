"""Delivery of one refresh to subscribers spread over the local topology's instances, through nginx.

The issue's figure: "p99 delivery of one refresh to subscribers spread over the three instances,
through nginx". The benchmark starts the local topology (weathernote.topology: a 3+3 Valkey
Cluster, the simulator, three instances, nginx) in a temporary directory, or uses the one running
in `--dir`; opens `--subscribers` WebSocket subscriptions to one cell, all through nginx (which
balances them by open connections, so each instance holds about a third: the benchmark reads
which instance each handshake reached from nginx's X-Upstream header and reports the split);
then triggers `--refreshes` refreshes of the cell one after the other: delete the entry and its
stale copy, then a miss on one instance's own port (each instance in turn), which fetches from
the upstream, writes, and announces on the cell's shard. For each refresh and subscriber it
takes the time from the write to the subscriber's receipt (receipt minus the entry's
`fetchedAt`, stamped by the refreshing instance just before it writes; same machine, same
clock) and from the miss's HTTP answer (which the announcement often beats: those are negative).
It prints p50/p95/p99/max, the split per instance, and how many deliveries were lost (a
subscriber that never saw the refresh or anything newer); it exits 1 when any was lost.

Everything runs on one machine: the clients' own event loop is part of what is measured, and on
a 2-core machine the servers, nginx, Valkey and the clients share two cores. Bounded: each
refresh waits at most `--refresh-timeout`, the whole run at most `--timeout`.

Usage: .venv/bin/python bench/topology_delivery.py [--subscribers 300] [--refreshes 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets
from websockets.typing import Subprotocol

from weathernote.topology import Topology

SUBSCRIPTION = (
    "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt } }"
)
MISS = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { fetchedAt cached } }"
PARIS = {"lat": 48.8566, "lon": 2.3522}
CELL = "lat:48.9:lon:2.4"
KEY = "weather:{" + CELL + "}"  # a Cluster's spelling: the cell is the hash tag


def epoch(fetched_at: str) -> float:
    return datetime.fromisoformat(fetched_at).timestamp()


@dataclass
class Subscriber:
    index: int
    instance: int | None  # 0-based, from nginx's X-Upstream
    ws: Any
    received: dict[float, float] = field(default_factory=dict)  # fetchedAt → receipt time
    newest: float = 0.0  # the newest fetchedAt seen
    error: str | None = None


@dataclass
class Report:
    subscribers: int
    per_instance: dict[int, int]
    refreshes: int
    triggered_at: Counter[int] = field(default_factory=Counter)
    from_write_ms: list[tuple[int, float]] = field(default_factory=list)  # (instance, ms)
    from_answer_ms: list[float] = field(default_factory=list)
    expected: int = 0
    delivered: int = 0
    superseded: int = 0  # saw something newer instead (latest wins): not lost
    lost: int = 0
    setup_failures: int = 0  # subscription attempts the server failed (retried)
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self, lb_url: str) -> str:
        def row(name: str, values: list[float]) -> str:
            if not values:
                return f"  {name:<26} (none)"
            ordered = sorted(values)

            def pct(p: float) -> float:
                return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

            return (
                f"  {name:<26} {statistics.median(ordered):7.1f} {pct(95):7.1f} {pct(99):7.1f} {ordered[-1]:7.1f}"
                f"   ({len(values)} deliveries)"
            )

        split = ", ".join(f"instance {i + 1}: {n}" for i, n in sorted(self.per_instance.items()))
        triggered = ", ".join(f"instance {i + 1}: {n}" for i, n in sorted(self.triggered_at.items()))
        lines = [
            f"topology delivery: {self.subscribers} subscribers of {CELL} through nginx ({lb_url}), {self.refreshes} refreshes, {self.elapsed:.1f} s",
            f"subscribers per instance (nginx least_conn): {split}",
            f"refreshes caused by a miss on: {triggered}",
            f"delivered {self.delivered}/{self.expected}, superseded {self.superseded}, lost {self.lost}",
            f"  {'delivery latency (ms)':<26} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}",
            row("from the write", [ms for _, ms in self.from_write_ms]),
        ]
        for instance in sorted(self.per_instance):
            lines.append(row(f"  via instance {instance + 1}", [ms for i, ms in self.from_write_ms if i == instance]))
        lines.append(row("from the miss's answer", self.from_answer_ms))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


async def _open(topology: Topology, index: int, first_timeout: float) -> Subscriber:
    """One subscriber through nginx holding the cell's current value, as its own client (id and
    address, so no rate limit is shared). Raises when the server refuses or fails it."""
    url = topology.url.replace("http://", "ws://", 1) + "/graphql"
    headers = {"x-client-id": f"bench-{index}", "X-Forwarded-For": f"198.18.{index // 250}.{index % 250 + 1}"}
    ws = await websockets.connect(
        url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        additional_headers=headers,
        max_queue=None,
        open_timeout=30,
    )
    try:
        assert ws.response is not None
        upstream = ws.response.headers.get("X-Upstream", "").split(",")[-1]  # the last instance tried answered
        subscriber = Subscriber(index, topology.instance_of(upstream), ws)
        async with asyncio.timeout(first_timeout):
            await ws.send('{"type":"connection_init"}')
            ack = json.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {ack}")
            await ws.send(
                json.dumps({"type": "subscribe", "id": "1", "payload": {"query": SUBSCRIPTION, "variables": PARIS}})
            )
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "next":
                    received = time.time()
                    fetched = epoch(message["payload"]["data"]["weatherUpdates"]["fetchedAt"])
                    subscriber.received[fetched] = received
                    subscriber.newest = fetched
                    return subscriber
                if message.get("type") != "ping":
                    raise RuntimeError(f"instead of the first value: {str(message)[:200]}")
    except BaseException:
        await asyncio.wait_for(ws.close(), 5)
        raise


class Deliveries:
    """Readers of every subscriber, and the refresh they wait for."""

    def __init__(self, subscribers: list[Subscriber]) -> None:
        self.subscribers = subscribers
        self.target = 0.0
        self.pending: set[int] = set()
        self.done = asyncio.Event()
        self.tasks = [asyncio.create_task(self._read(s)) for s in subscribers]

    def expect(self, fetched_at: float) -> None:
        """Wait for `fetched_at` (or newer) everywhere; subscribers already there count at once."""
        self.target = fetched_at
        self.pending = {s.index for s in self.subscribers if s.newest < fetched_at and s.error is None}
        self.done = asyncio.Event()
        if not self.pending:
            self.done.set()

    async def _read(self, subscriber: Subscriber) -> None:
        ws = subscriber.ws
        try:
            while True:
                raw = await ws.recv()
                received = time.time()
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                    continue
                if kind != "next":
                    if kind in ("error", "complete"):
                        raise RuntimeError(f"subscription ended: {message}")
                    continue
                fetched = epoch(message["payload"]["data"]["weatherUpdates"]["fetchedAt"])
                subscriber.received.setdefault(fetched, received)
                subscriber.newest = max(subscriber.newest, fetched)
                if subscriber.index in self.pending and fetched >= self.target:
                    self.pending.discard(subscriber.index)
                    if not self.pending:
                        self.done.set()
        except (websockets.ConnectionClosed, RuntimeError, KeyError, TypeError) as exc:
            subscriber.error = f"{type(exc).__name__}: {exc}"
            self.pending.discard(subscriber.index)
            if not self.pending:
                self.done.set()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(s.ws.close(), 5) for s in self.subscribers), return_exceptions=True)


async def _miss(client: httpx.AsyncClient, direct: Any, url: str) -> tuple[float, float, float]:
    """Delete the cell's entry and stale copy, ask one instance directly: (fetchedAt, sent, answered)."""
    for _ in range(5):
        await asyncio.to_thread(direct.delete, KEY, f"stale:{KEY}")
        sent = time.time()
        response = await client.post(
            f"{url}/graphql", json={"query": MISS, "variables": PARIS}, headers={"x-client-id": "bench-refresher"}
        )
        answered = time.time()
        body = response.json()
        if "errors" in body:
            raise RuntimeError(f"the miss failed: {body}")
        current = body["data"]["current"]
        if current["cached"] is False:
            return epoch(current["fetchedAt"]), sent, answered
        await asyncio.sleep(0.05)  # someone (the pre-warmer) refilled it in between: again
    raise RuntimeError("five deletions in a row were refilled before the miss")


async def run(
    topology: Topology,
    subscribers: int = 300,
    refreshes: int = 20,
    *,
    refresh_timeout: float = 10.0,
    pause: float = 0.2,
    connect_concurrency: int = 10,
    first_timeout: float = 20.0,
    attempts: int = 3,
    log: Any = print,
) -> Report:
    """Open the subscribers through nginx, refresh the cell `refreshes` times, measure every delivery."""
    started = time.monotonic()
    direct = redis.RedisCluster.from_url(topology.redis_url)
    gate = asyncio.Semaphore(connect_concurrency)
    setup_failures: list[str] = []

    async def opened(index: int) -> Subscriber:
        for attempt in range(1, attempts + 1):
            try:
                async with gate:
                    return await _open(topology, index, first_timeout)
            except (OSError, TimeoutError, RuntimeError, websockets.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:160]
                setup_failures.append(reason)
                if attempt == attempts:
                    raise RuntimeError(f"subscriber {index} failed {attempts} times, last: {reason}") from exc
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    subs = list(await asyncio.gather(*(opened(i) for i in range(subscribers))))
    per_instance = Counter(s.instance for s in subs if s.instance is not None)
    report = Report(subscribers, dict(per_instance), refreshes)
    if (
        len(per_instance) < len(topology.instance_urls)
        or min(per_instance.values()) < subscribers / len(topology.instance_urls) / 2
    ):
        report.notes.append(f"uneven split over the instances: {dict(per_instance)}")
    if setup_failures:
        reasons = Counter(setup_failures)
        report.notes.append(
            f"{len(setup_failures)} subscription attempts failed and were retried (a client reconnects):"
            + "".join(f"\n  {n} x {reason}" for reason, n in reasons.most_common())
        )
    report.setup_failures = len(setup_failures)
    deliveries = Deliveries(subs)
    try:
        log(
            f"{subscribers} subscribers hold the cell: {', '.join(f'instance {i + 1}: {n}' for i, n in sorted(per_instance.items()))}"
        )
        async with httpx.AsyncClient(timeout=15) as client:
            for k in range(refreshes):
                instance = k % len(topology.instance_urls)
                fetched, _sent, answered = await _miss(client, direct, topology.instance_urls[instance])
                report.triggered_at[instance] += 1
                deliveries.expect(fetched)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(deliveries.done.wait(), refresh_timeout)
                for s in subs:
                    report.expected += 1
                    if fetched in s.received:
                        report.delivered += 1
                        ms = (s.received[fetched] - fetched) * 1000
                        report.from_write_ms.append((s.instance if s.instance is not None else -1, ms))
                        report.from_answer_ms.append((s.received[fetched] - answered) * 1000)
                    elif s.newest > fetched:
                        report.superseded += 1
                    else:
                        report.lost += 1
                await asyncio.sleep(pause)
    finally:
        await deliveries.close()
        direct.close()
    errors = [s.error for s in subs if s.error]
    if errors:
        report.notes.append(f"{len(errors)} subscribers ended early, e.g. {errors[0]}")
    report.elapsed = time.monotonic() - started
    return report


async def _main(args: argparse.Namespace) -> int:
    own = None
    if args.dir:
        topology = Topology(args.dir)
        if not topology.attach():
            print(
                f"no running topology in {args.dir}: start one with python -m weathernote.topology up", file=sys.stderr
            )
            return 2
    else:
        state = Path(tempfile.mkdtemp(prefix="weathernote-topology-bench-"))
        own = topology = Topology(
            state,
            port=args.port,
            log_level="warning",
            # one benchmark client stands for many users; the limits have tests of their own
            env={"rate_limit_per_minute": 1_000_000},
        )
        print(f"starting the local topology in {state} …", flush=True)
        await asyncio.to_thread(topology.start, 120)
    lb_url = topology.url
    report = None
    try:
        async with asyncio.timeout(args.timeout):
            report = await run(
                topology,
                args.subscribers,
                args.refreshes,
                refresh_timeout=args.refresh_timeout,
                connect_concurrency=args.connect_concurrency,
            )
    finally:
        if own is not None:
            await asyncio.to_thread(own.stop)
            if report is not None and not report.lost and not report.setup_failures:
                shutil.rmtree(own.dir, ignore_errors=True)
            else:
                print(f"the topology's logs are kept in {own.dir / 'logs'}", file=sys.stderr)
    print(report.summary(lb_url))
    return 1 if report.lost else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None, help="use the topology running in this state directory")
    parser.add_argument(
        "--port", type=int, default=8089, help="nginx's port when the benchmark starts its own topology"
    )
    parser.add_argument("--connect-concurrency", type=int, default=10, help="subscriptions being opened at once")
    parser.add_argument(
        "--refresh-timeout", type=float, default=10.0, help="seconds one refresh may take to reach everyone"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(args))
    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
