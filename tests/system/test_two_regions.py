"""Two regions behind one front that fails over (weathernote.topology.Regions, docs/regions.md).

Each region is a whole local topology of its own, in a small shape: a Valkey Cluster of 3
primaries without replicas, its own upstream simulator (Open-Meteo as that region's egress
address sees it), 2 `weathernote serve` instances and its nginx. One more nginx, the front,
sends everything to region-1 and fails over to region-2 (`backup`). The pre-warmer is off, so
that no refresh happens but those a test causes.

- What the regions share: the client-id secret (one client id is one identity in both), and
  nothing on the request path: a miss in one region is an upstream call of that region and an
  entry in that region's cluster only.
- Killing region-1's nginx (SIGKILL, the region the front sends to) under a query load through
  the front: no client sees a 5xx or a failed request (the front sends each failed attempt on to
  region-2 before any of its answer reached the client); queries go on, answered by region-2.
  Open subscriptions drop with region-1 and come back through the front in region-2: the raw
  WebSocket client's first message there is region-2's current value (its cache, no upstream
  call), and the Python client's watches, over WebSocket and over SSE, reconnect by themselves
  and deliver it; then each receives the refreshes of region-2.
- The command line's `status` and `down` on the regions (last: `down` stops them).

Figures are printed under -s, never asserted as timings. About 25 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.conftest import ROOT, free_port, graphql
from tests.wsclient import GraphQLSocket
from weathernote.topology import Regions, Topology

CLIENT_DIR = ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))  # the client is its own distribution; the tests use its source tree

from weathernote_client import CurrentWeather, RetryPolicy, WeatherNoteClient  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TS_WATCH = ROOT / "clients" / "typescript" / "dist" / "watch.js"  # built by `npm ci` there (make test does it)
BERLIN = {"lat": 52.52, "lon": 13.405}
KEY = "weather:{lat:52.5:lon:13.4}"  # on a Cluster the cell is the key's hash tag
WEATHER = (
    "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt cached } }"
)
CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { fetchedAt cached } }"
LOAD_CELLS = [{"lat": 40.04 + i * 0.3, "lon": -3.96 + i * 0.3} for i in range(4)]
LOAD_SECONDS, LOAD_CLIENTS = 6.0, 4
FAST_RECONNECT = RetryPolicy(base_delay=0.1, max_delay=0.5)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regions]:
    assert Path(NGINX).exists(), f"nginx not found ({NGINX}): `make nginx` (Debian: apt-get install -y nginx)"
    front = free_port()
    topology = Regions(
        tmp_path_factory.mktemp("regions"),
        regions=2,
        port=front,
        region_ports=[free_port(), free_port()],
        instances=2,
        primaries=3,
        replicas=0,
        drain_seconds=2,
        prewarm_interval_seconds=0,
        log_level="warning",
        env={"rate_limit_per_minute": "1000000", "upstream_timeout_seconds": "2"},
        nginx=NGINX,
    )
    started = time.monotonic()
    topology.start(timeout=90)  # stops what it started if it fails
    print(f"\ntwo regions up in {time.monotonic() - started:.1f} s: front {topology.url}")
    try:
        yield topology
    finally:
        topology.stop()


# ---------------------------------------------------------------------------- helpers


def epoch(fetched_at: str) -> float:
    return dt.datetime.fromisoformat(fetched_at).timestamp()


def cluster(region: Topology) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(region.redis_url)


def upstream_calls(region: Topology) -> int:
    return int(httpx.get(f"{region.upstream_url}/__simulator/stats", timeout=5).json()["requests"])


def answered_by(regions: Regions, header: str) -> str | None:
    """The region whose nginx answered, from the front's X-Front-Upstream ("A, B": B answered)."""
    return regions.region_of(header.split(",")[-1])


def refresh_in(region: Topology, instance: int) -> str:
    """Drop the cell's entry and stale copy in `region`'s cluster, then a miss on one of its
    instances; the refresh's fetchedAt."""
    with contextlib.closing(cluster(region)) as direct:
        direct.delete(KEY, f"stale:{KEY}")
    body = graphql(region.instance_urls[instance], CURRENT, BERLIN).json()
    assert "errors" not in body and body["data"]["current"]["cached"] is False, body
    return str(body["data"]["current"]["fetchedAt"])


async def next_at_least(socket: GraphQLSocket, fetched_at: str) -> dict[str, Any]:
    """The first update at least as new as `fetched_at`, within 10 s."""
    async with asyncio.timeout(10):
        while True:
            update = (await socket.data(timeout=10))["data"]["weatherUpdates"]
            if epoch(update["fetchedAt"]) >= epoch(fetched_at):
                return dict(update)


@dataclass
class Answer:
    at: float
    status: int  # 0: no HTTP answer
    error: str | None
    region: str | None
    retried_ok: bool | None = None


async def load(regions: Regions, seconds: float) -> list[Answer]:
    """`LOAD_CLIENTS` clients querying through the front, a request each every 50 ms. A failure
    is retried like an app would (up to 3 times); its first attempt is what counts."""
    answers: list[Answer] = []
    until = time.monotonic() + seconds

    async def attempt(client: httpx.AsyncClient, cell: dict[str, float]) -> Answer:
        try:
            response = await client.post("/graphql", json={"query": CURRENT, "variables": cell})
        except httpx.HTTPError as exc:
            return Answer(time.time(), 0, type(exc).__name__, None)
        error = None
        if response.status_code < 500 and response.json().get("errors"):
            error = str(response.json()["errors"][0].get("extensions", {}).get("code"))
        return Answer(
            time.time(), response.status_code, error, answered_by(regions, response.headers["X-Front-Upstream"])
        )

    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=regions.url, timeout=10, headers={"x-client-id": f"load-{n}"}) as client:
            i = n
            while time.monotonic() < until:
                answer = await attempt(client, LOAD_CELLS[i % len(LOAD_CELLS)])
                if answer.status != 200 or answer.error:
                    answer.retried_ok = False
                    for _ in range(3):
                        await asyncio.sleep(0.1)
                        retry = await attempt(client, LOAD_CELLS[i % len(LOAD_CELLS)])
                        if retry.status == 200 and not retry.error:
                            answer.retried_ok = True
                            break
                answers.append(answer)
                i += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client_loop(n) for n in range(LOAD_CLIENTS)))
    return answers


@contextlib.asynccontextmanager
async def watching(client: WeatherNoteClient) -> AsyncIterator[asyncio.Queue[CurrentWeather]]:
    """The client's watch of the cell, each value it delivers put on a queue, for the block's length."""
    values: asyncio.Queue[CurrentWeather] = asyncio.Queue()

    async def run() -> None:
        async with contextlib.aclosing(client.watch_current(BERLIN["lat"], BERLIN["lon"])) as watch:
            async for value in watch:
                values.put_nowait(value)

    task = asyncio.create_task(run())
    try:
        yield values
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def typescript_watching(url: str) -> AsyncIterator[asyncio.Queue[CurrentWeather]]:
    """The TypeScript client's watch of the cell (its `watch` command, one JSON line a value), for
    the block's length: graphql-ws reconnects it by itself (its backoff: 1 s and 0.3-3 s more)."""
    node = shutil.which("node")
    assert node and TS_WATCH.exists(), f"node and {TS_WATCH} are needed: `npm ci` in clients/typescript"
    process = await asyncio.create_subprocess_exec(
        node,
        str(TS_WATCH),
        *("--url", f"{url}/graphql", "--lat", str(BERLIN["lat"]), "--lon", str(BERLIN["lon"])),
        *("--client-id", "watch-ts", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    values: asyncio.Queue[CurrentWeather] = asyncio.Queue()

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            values.put_nowait(CurrentWeather.from_json(json.loads(line)))

    reader = asyncio.create_task(read())
    try:
        yield values
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def delivered(values: asyncio.Queue[CurrentWeather], fetched_at: str) -> CurrentWeather:
    """The first value the watch delivers that is at least as new as `fetched_at`, within 15 s."""
    async with asyncio.timeout(15):
        while True:
            value = await values.get()
            if value.fetched_at.timestamp() >= epoch(fetched_at):
                return value


def front_log(regions: Regions, since: float) -> list[tuple[int, str]]:
    """The front's log of /graphql requests since `since`: (status, regions' nginx tried)."""
    entries = []
    for line in regions.access_log.read_text().splitlines():
        match = re.match(r"^(\S+) (\d+) \"(\S+) /graphql[ ?].* upstream=(.*) upstream_status=", line)
        if match and float(match.group(1)) >= since:
            entries.append((int(match.group(2)), match.group(4)))
    return entries


# ---------------------------------------------------------------------------- tests


def test_the_regions_share_the_client_id_secret_and_nothing_on_the_request_path(regions: Regions) -> None:
    one, two = regions.region("region-1"), regions.region("region-2")
    assert (one.dir / "client_id_secret").read_text() == (two.dir / "client_id_secret").read_text()
    assert one.redis_url != two.redis_url and one.upstream_url != two.upstream_url

    # a miss in region-1: an upstream call of region-1, an entry in region-1's cluster only
    before = upstream_calls(one), upstream_calls(two)
    cell = {"lat": 35.68, "lon": 139.69}
    body = graphql(one.url, CURRENT, cell).json()
    assert body["data"]["current"]["cached"] is False, body
    assert (upstream_calls(one), upstream_calls(two)) == (before[0] + 1, before[1])
    with contextlib.closing(cluster(one)) as first, contextlib.closing(cluster(two)) as second:
        assert first.exists("weather:{lat:35.7:lon:139.7}") and not second.exists("weather:{lat:35.7:lon:139.7}")

        # one client id is one identity everywhere: its hash (keyed by the shared secret) names
        # the same rate-limit key in both regions' clusters, each counting its own requests
        for region in (one, two):
            graphql(region.url, CURRENT, cell, headers={"x-client-id": "device-7f3a"})
        keys = [{k.decode() for k in c.scan_iter(match="rate_limit:*") if b"hash" in k} for c in (first, second)]
    assert keys[0] & keys[1], f"no rate-limit key in common: {keys}"


async def test_killing_the_serving_regions_nginx_queries_and_subscriptions_continue_in_the_other_region(
    regions: Regions,
) -> None:
    one, two = regions.region("region-1"), regions.region("region-2")
    socket = GraphQLSocket(regions.url)
    await socket.__aenter__()
    python_ws = WeatherNoteClient(regions.url, client_id="watch-ws", retry=FAST_RECONNECT)
    python_sse = WeatherNoteClient(regions.url, client_id="watch-sse", retry=FAST_RECONNECT, transport="sse")
    try:
        async with (
            watching(python_ws) as over_ws,
            watching(python_sse) as over_sse,
            typescript_watching(regions.url) as over_ts,
        ):
            watches = {"python websocket": over_ws, "python sse": over_sse, "typescript websocket": over_ts}
            # before: the front sends everything to region-1, where the cell is a miss
            await socket.init()
            await socket.subscribe("w", WEATHER, BERLIN)
            first = (await socket.data())["data"]["weatherUpdates"]
            assert answered_by(regions, socket.ws.response.headers["X-Front-Upstream"]) == "region-1"
            for watch in watches.values():
                assert (await delivered(watch, first["fetchedAt"])).fetched_at.timestamp() == epoch(first["fetchedAt"])

            # region-2's own users ask for the cell too: its value, fetched by region-2, is newer
            in_two = graphql(two.url, CURRENT, BERLIN).json()["data"]["current"]
            assert in_two["cached"] is False and epoch(in_two["fetchedAt"]) > epoch(first["fetchedAt"])
            for cell in LOAD_CELLS:  # the load's cells are cached in both regions
                for url in (regions.url, two.url):
                    assert graphql(url, CURRENT, cell).status_code == 200
            calls_in_two = upstream_calls(two)

            started = time.time()
            queries = asyncio.create_task(load(regions, LOAD_SECONDS))
            await asyncio.sleep(1.5)
            killed_at = time.time()
            one.signal_load_balancer(signal.SIGKILL)

            # the raw subscriber's socket drops with region-1; it reconnects through the front
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await socket.receive(timeout=10)
            await socket.__aexit__(None, None, None)
            socket = GraphQLSocket(regions.url)
            await socket.__aenter__()
            await socket.init()
            await socket.subscribe("w", WEATHER, BERLIN)
            again = (await socket.data())["data"]["weatherUpdates"]
            reconnected_after = time.time() - killed_at
            tried = socket.ws.response.headers["X-Front-Upstream"]
            assert answered_by(regions, tried) == "region-2", tried
            # the current value first: region-2's, from its cache (no upstream call)
            assert again["fetchedAt"] == in_two["fetchedAt"] and again["cached"] is True, (again, in_two)
            assert upstream_calls(two) == calls_in_two

            # the clients' watches reconnected by themselves and delivered it
            back_after = {}
            for kind, watch in watches.items():
                value = await delivered(watch, in_two["fetchedAt"])
                assert value.fetched_at.timestamp() == epoch(in_two["fetchedAt"]), (kind, value)
                back_after[kind] = f"{time.time() - killed_at:.1f} s"

            # then region-2's refreshes, caused by misses on either of its instances
            for instance in (0, 1):
                fetched_at = await asyncio.to_thread(refresh_in, two, instance)
                update = await next_at_least(socket, fetched_at)
                assert update["fetchedAt"] == fetched_at and update["cached"] is False
                for kind, watch in watches.items():
                    value = await delivered(watch, fetched_at)
                    assert value.fetched_at.timestamp() == epoch(fetched_at), (kind, value)

            # and the Python client's queries (APQ GETs) are answered too
            answer = await python_ws.current(BERLIN["lat"], BERLIN["lon"])
            assert answer.fetched_at.timestamp() >= epoch(fetched_at)
            answers = await queries
    finally:
        await socket.__aexit__(None, None, None)
        await python_ws.aclose()
        await python_sse.aclose()

    failed = [a for a in answers if a.status != 200 or a.error]
    after = [a for a in answers if a.at > killed_at + 0.2]
    logged = front_log(regions, started)
    print(
        f"\nregion-1's nginx SIGKILLed under load through the front: {len(answers)} queries by status"
        f" {dict(Counter(a.status for a in answers))}, by region {dict(Counter(a.region for a in answers))},"
        f" failed at first attempt {len(failed)} (retried successfully {sum(1 for a in failed if a.retried_ok)});"
        f" the front logged {sum(1 for _, tried in logged if ',' in tried)} requests sent on to region-2 after"
        f" region-1 failed them; the raw subscriber was back (in region-2) {reconnected_after:.2f} s after the kill,"
        f" the clients' watches had delivered region-2's value by {back_after}"
    )
    assert answers and after, "the load ran past the kill"
    assert not [a for a in answers if a.status >= 500], "a 5xx reached a client"
    assert not failed, [(a.status, a.error) for a in failed]
    assert all(a.region == "region-2" for a in after), Counter(a.region for a in after)
    assert not [status for status, _ in logged if status >= 500], "the front answered a 5xx"


def test_the_command_line_status_and_down_handle_both_regions(regions: Regions) -> None:
    """Last: `down` stops this module's regions (the fixture's own stop then finds nothing)."""
    script = [sys.executable, "-m", "weathernote.topology"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args, "--dir", str(regions.dir)], capture_output=True, text=True, timeout=60)

    status = run("status")
    # region-1's nginx is dead (the test before killed it): "some of it runs"
    assert status.returncode == 1, status.stdout + status.stderr
    assert regions.url in status.stdout and "region-1" in status.stdout and "region-2" in status.stdout
    assert "NOT RUNNING" in status.stdout

    one_region = run("up")  # a one-region `up` does not take the regions' directory
    assert one_region.returncode == 1 and "regions run" in one_region.stderr, one_region.stderr

    down = run("down")
    # the front, and per region 3 nodes, a simulator, 2 instances and nginx (dead already)
    assert down.returncode == 0 and "stopped 14 running processes of 15" in down.stdout, down.stdout + down.stderr
    assert not any(region.instance_alive(i) for region in regions.regions for i in range(2))
    assert not (regions.dir / "regions.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{regions.url}/nginx-health", timeout=2)
    gone = run("status")
    assert gone.returncode == 3, gone.stdout
    print(
        f"\n$ python -m weathernote.topology status (before down)\n{status.stdout.strip()}\n$ down\n{down.stdout.strip()}"
    )
