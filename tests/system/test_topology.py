"""The local topology without Docker (weathernote.topology): failures behind nginx.

One topology for the module, all on loopback: a Valkey Cluster of 3 primaries and 3
replicas, the upstream simulator, three `weathernote serve` instances and nginx in front
(least_conn, passive health, retries on the next instance). The instances pre-warm every
2 s (a 3 s lease), drain 2 s on SIGTERM, and have their rate limits lifted (one test
client stands for many users; the limits have tests of their own).

- a subscriber connected through nginx receives the refreshes caused by misses on the
  other instances (asked on their own ports);
- nginx as the edge: a repeated GET is answered from its cache (the instances never see it), a
  conditional one is a 304, an error is never kept;
- the benchmark's small version: subscribers spread over the instances by nginx, every
  refresh reaches every one;
- SIGKILL the instance holding a subscriber's socket under load: nobody sees a 5xx or a
  dropped request, and the client reconnects through nginx and receives the next refresh;
- a reconnect storm (bench/storm.py, short): SIGKILL the instance holding the most subscribers
  under load; all subscribe again, no cache miss, no 5xx, every one receives the next refresh;
- SIGKILL the pre-warm leader: another instance leads once the lease lapses;
- SIGTERM an instance under load: it stops being ready at once, keeps serving while it
  drains, then stops listening; nginx retries elsewhere, so no request fails, and after it
  is gone nginx routes nothing to it. Its subscribers, told to go away (1001), subscribe
  again through nginx at once (the draining instance refuses the handshake, nginx tries the
  next). Restarted, it gets traffic again;
- the command line: `status`, `up` on a running topology, `down` twice (last: it stops the
  module's topology).

Each test starts with every instance running (killed ones are restarted first). Figures
are printed (visible with -s), never asserted as timings. nginx is Debian's package
(`make nginx`); the tests fail without it.

The module takes about 40-55 s on a 2-core machine. `TOPOLOGY_SOAK=1` makes it a soak (a few
minutes): the loads run 30 s with twice the clients, and the delivery check is the
benchmark's full 300 subscribers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.conftest import ROOT, free_port, graphql
from tests.wsclient import GraphQLSocket
from weathernote.topology import Topology

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _load(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# the benchmarks are scripts, not a package: their `run` is loaded from the file
bench = _load("topology_delivery", ROOT / "bench" / "topology_delivery.py")
storm_bench = _load("storm", ROOT / "bench" / "storm.py")
edge_bench = _load("edge", ROOT / "bench" / "edge.py")

PARIS = {"lat": 48.8566, "lon": 2.3522}
KEY = "weather:{lat:48.9:lon:2.4}"  # on a Cluster the cell is the key's hash tag
WEATHER = (
    "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt cached } }"
)
MISS = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { fetchedAt cached } }"
LOAD_QUERY = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached stale } }"
LOAD_CELLS = [{"lat": 45.04 + i * 0.3, "lon": 4.04 + i * 0.3} for i in range(6)]
PREWARM_SECONDS = 2.0  # the lease is max(3, period) = 3 s
DRAIN_SECONDS = 2.0
SOAK = os.environ.get("TOPOLOGY_SOAK") == "1"
KILL_LOAD_SECONDS, TERM_LOAD_SECONDS, LOAD_CLIENTS = (30.0, 30.0, 12) if SOAK else (5.0, 7.0, 6)
SUBSCRIBERS, REFRESHES = (300, 10) if SOAK else (30, 3)
STORM_SUBSCRIBERS = 3000 if SOAK else 300


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    assert Path(NGINX).exists(), f"nginx not found ({NGINX}): `make nginx` (Debian: apt-get install -y nginx)"
    topology = Topology(
        tmp_path_factory.mktemp("topology"),
        port=free_port(),
        drain_seconds=DRAIN_SECONDS,
        prewarm_interval_seconds=PREWARM_SECONDS,
        log_level="warning",
        env={"rate_limit_per_minute": 1_000_000, "upstream_timeout_seconds": 2},
        nginx=NGINX,
    )
    started = time.monotonic()
    topology.start(timeout=90)  # stops what it started if it fails
    print(
        f"\ntopology up in {time.monotonic() - started:.1f} s: nginx {topology.url}, instances {topology.instance_urls}"
    )
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture(autouse=True)
def every_instance_running(topo: Any) -> None:
    restarted = topo.heal()
    if restarted:
        print(f"\n(restarted instance(s) {[i + 1 for i in restarted]} first)")


@pytest.fixture
def direct(topo: Any) -> Iterator[redis.RedisCluster]:
    client = redis.RedisCluster.from_url(topo.redis_url)
    yield client
    client.close()


# ---------------------------------------------------------------------------- helpers


def epoch(fetched_at: str) -> float:
    return datetime.fromisoformat(fetched_at).timestamp()


def holder(socket: GraphQLSocket, topo: Any) -> int:
    """The instance (0-based) nginx connected this WebSocket to: the last one it tried."""
    tried = socket.ws.response.headers["X-Upstream"]
    index = topo.instance_of(tried.split(",")[-1])
    assert index is not None, tried
    return int(index)


def refresh_at(url: str, direct: redis.RedisCluster) -> str:
    """Drop the cell's entry and stale copy, then a miss at `url`; the refresh's fetchedAt."""
    for _ in range(5):
        direct.delete(KEY, f"stale:{KEY}")  # the stale copy would be renewed, not refetched
        body = graphql(url, MISS, PARIS).json()
        assert "errors" not in body, body
        if body["data"]["current"]["cached"] is False:
            return str(body["data"]["current"]["fetchedAt"])
        # refilled between the delete and the miss (the pre-warmer keeps watched cells): again
    raise AssertionError("the cell was refilled before every miss")


async def next_refresh(socket: GraphQLSocket, fetched_at: str) -> dict[str, Any]:
    """The first update at least as new as `fetched_at` (older ones still in flight are
    skipped), within 10 s."""
    async with asyncio.timeout(10):
        while True:
            update = (await socket.data(timeout=10))["data"]["weatherUpdates"]
            if epoch(update["fetchedAt"]) >= epoch(fetched_at):
                return dict(update)


def metric(url: str, name: str) -> float:
    """The sum of `name`'s samples (all labels) on one instance's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


@dataclass
class Answer:
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    error: str | None
    upstream: str
    retried_ok: bool | None = None  # for a failed one: did the client's retry succeed?


async def steady_load(topo: Any, seconds: float, clients: int = 6, interval: float = 0.1) -> list[Answer]:
    """`clients` clients querying through nginx for `seconds`, each a request every `interval`.

    A failed request (no answer, a 5xx, a GraphQL error) is retried like an app would, up to
    3 times; the first attempt's failure is what counts.
    """
    answers: list[Answer] = []
    until = time.monotonic() + seconds

    async def attempt(client: httpx.AsyncClient, cell: dict[str, float]) -> Answer:
        started = time.time()
        try:
            response = await client.post("/graphql", json={"query": LOAD_QUERY, "variables": cell})
        except httpx.HTTPError as exc:
            return Answer(started, time.time(), 0, type(exc).__name__, "")
        error = None
        if response.status_code < 500:
            body = response.json()
            if body.get("errors"):
                error = str(body["errors"][0].get("extensions", {}).get("code"))
        return Answer(started, time.time(), response.status_code, error, response.headers.get("X-Upstream", ""))

    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=topo.url, timeout=10, headers={"x-client-id": f"load-{n}"}) as client:
            i = n
            while time.monotonic() < until:
                cell = LOAD_CELLS[i % len(LOAD_CELLS)]
                i += 1
                answer = await attempt(client, cell)
                if answer.status == 0 or answer.status >= 500 or answer.error:
                    answer.retried_ok = False
                    for _ in range(3):
                        await asyncio.sleep(0.1)
                        retry = await attempt(client, cell)
                        if retry.status == 200 and not retry.error:
                            answer.retried_ok = True
                            break
                answers.append(answer)
                await asyncio.sleep(interval)

    await asyncio.gather(*(client_loop(n) for n in range(clients)))
    return answers


def failures(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status == 0 or a.status >= 500 or a.error]


def by_status(answers: list[Answer]) -> dict[str, int]:
    return dict(Counter("connection error" if a.status == 0 else str(a.status) for a in answers))


def warm(topo: Any) -> None:
    """The load's cells cached, and nginx routing to every instance again (a restarted one may
    still be skipped for fail_timeout after its last failure)."""
    for cell in LOAD_CELLS:
        assert graphql(topo.url, LOAD_QUERY, cell).status_code == 200
    seen: set[int] = set()
    deadline = time.monotonic() + 15
    while len(seen) < len(topo.instance_urls):
        assert time.monotonic() < deadline, f"nginx routes only to instances {sorted(seen)}"
        response = httpx.get(f"{topo.url}/health", timeout=5)
        index = topo.instance_of(response.headers.get("X-Upstream", "").split(",")[-1])
        if index is not None:
            seen.add(index)
        time.sleep(0.05)


def access_log(topo: Any, since: float) -> list[tuple[float, int, str, list[str]]]:
    """nginx's log of /graphql POSTs since `since`: (time, status, request, instances tried)."""
    entries = []
    for line in topo.access_log.read_text().splitlines():
        match = re.match(r"^(\S+) (\d+) \"([^\"]*)\" upstream=(.*) upstream_status=", line)
        if not match or float(match.group(1)) < since or not match.group(3).startswith("POST /graphql"):
            continue
        tried = [part.strip() for part in match.group(4).split(",") if part.strip() and part.strip() != "-"]
        entries.append((float(match.group(1)), int(match.group(2)), match.group(3), tried))
    return entries


# ---------------------------------------------------------------------------- tests


async def test_a_subscriber_through_nginx_receives_refreshes_from_misses_on_the_other_instances(
    topo: Any, direct: redis.RedisCluster
) -> None:
    async with GraphQLSocket(topo.url) as socket:
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        first = (await socket.data())["data"]["weatherUpdates"]
        mine = holder(socket, topo)
        others = [i for i in range(len(topo.instance_urls)) if i != mine]
        latest = first["fetchedAt"]
        for other in others:
            fetched_at = await asyncio.to_thread(refresh_at, topo.instance_urls[other], direct)
            update = await next_refresh(socket, fetched_at)
            assert epoch(update["fetchedAt"]) > epoch(latest), (update, latest)
            latest = update["fetchedAt"]
        print(
            f"\nsubscriber on instance {mine + 1} (through nginx) received the misses of instances {[o + 1 for o in others]}"
        )


def test_nginx_forwards_the_client_address_and_the_instances_believe_it(topo: Any) -> None:
    """Behind nginx, each client's address is its own (X-Forwarded-For from 127.0.0.1 is
    trusted), not nginx's: the limits count one client apart from another."""

    def remaining(address: str) -> int:
        response = httpx.post(
            f"{topo.url}/graphql",
            json={"query": LOAD_QUERY, "variables": LOAD_CELLS[0]},
            headers={"X-Forwarded-For": address},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return int(response.headers["RateLimit"].split("r=")[1].split(";")[0])

    first, second = remaining("198.51.100.7"), remaining("198.51.100.7")
    other = remaining("198.51.100.8")
    assert second < first, "the same client, counted twice"
    assert other > second, "another address, counted apart"


def test_nginx_as_the_edge_answers_a_repeated_get_itself_until_the_next_update(topo: Any) -> None:
    """The instances' Cache-Control, ETag and Last-Modified are what nginx's proxy_cache follows: the
    second GET of a cell is a HIT the instances never see, a conditional GET is a 304 from the
    edge, and an error (no-store) is never kept."""
    params = {"query": LOAD_QUERY, "variables": '{"lat": 45.94, "lon": 4.94}'}
    first = httpx.get(f"{topo.url}/graphql", params=params, timeout=10)
    assert first.status_code == 200 and first.json()["data"]["current"]["temperature"] is not None, first.text
    assert first.headers["X-Cache-Status"] == "MISS"
    assert "max-age=" in first.headers["Cache-Control"] and "ETag" in first.headers
    before = edge_bench.origin_requests(topo)
    second = httpx.get(f"{topo.url}/graphql", params=params, timeout=10)
    assert second.headers["X-Cache-Status"] == "HIT"
    assert second.content == first.content and second.headers["ETag"] == first.headers["ETag"]
    unchanged = httpx.get(
        f"{topo.url}/graphql", params=params, headers={"If-None-Match": first.headers["ETag"]}, timeout=10
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert edge_bench.origin_requests(topo) == before, "the edge asked an instance for what it keeps"

    refused = {"query": LOAD_QUERY, "variables": '{"lat": 95, "lon": 4.94}'}
    for _ in range(2):
        error = httpx.get(f"{topo.url}/graphql", params=refused, timeout=10)
        assert error.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", error.text
        assert error.headers["Cache-Control"] == "no-store" and error.headers["X-Cache-Status"] == "MISS"


async def test_subscribers_spread_by_nginx_receive_every_refresh(topo: Any) -> None:
    """The benchmark's small version: none lost (its timings are printed, not judged)."""
    report = await bench.run(topo, subscribers=SUBSCRIBERS, refreshes=REFRESHES, log=lambda *_: None)
    print("\n" + report.summary(topo.url))
    assert report.expected == SUBSCRIBERS * REFRESHES
    assert report.lost == 0, report.summary(topo.url)
    assert sum(report.per_instance.values()) == SUBSCRIBERS


async def test_sigkill_of_the_instance_holding_the_socket_the_client_reconnects_and_nobody_sees_a_5xx(
    topo: Any, direct: redis.RedisCluster
) -> None:
    await asyncio.to_thread(warm, topo)
    socket = GraphQLSocket(topo.url)
    await socket.__aenter__()
    try:
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        first = (await socket.data())["data"]["weatherUpdates"]
        victim = holder(socket, topo)

        load = asyncio.create_task(steady_load(topo, KILL_LOAD_SECONDS, LOAD_CLIENTS))
        await asyncio.sleep(1.0)
        killed_at = time.time()
        topo.signal_instance(victim, signal.SIGKILL)
        await asyncio.to_thread(topo.wait_instance_exit, victim, 10)

        # the socket dies with its instance (nginx drops the client's side: no close frame)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await socket.receive(timeout=10)
        await socket.__aexit__(None, None, None)

        # the client reconnects through nginx: another instance takes it
        reconnected_at = time.time()
        socket = GraphQLSocket(topo.url)
        await socket.__aenter__()
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        again = (await socket.data())["data"]["weatherUpdates"]
        now_on = holder(socket, topo)
        assert now_on != victim
        assert epoch(again["fetchedAt"]) >= epoch(first["fetchedAt"])

        # the next refresh, caused by a miss on a third instance if there is one, arrives
        refresher = next(i for i in range(len(topo.instance_urls)) if i not in (victim, now_on))
        fetched_at = await asyncio.to_thread(refresh_at, topo.instance_urls[refresher], direct)
        update = await next_refresh(socket, fetched_at)
        assert update["fetchedAt"] == fetched_at and update["cached"] is False

        answers = await load
    finally:
        await socket.__aexit__(None, None, None)
    failed = failures(answers)
    print(
        f"\nSIGKILL of instance {victim + 1} (holding the subscriber) under load through nginx:"
        f" {len(answers)} requests by status {by_status(answers)}, failed at first attempt {len(failed)}"
        f" (retried successfully {sum(1 for a in failed if a.retried_ok)});"
        f" the subscriber reconnected to instance {now_on + 1} {reconnected_at - killed_at:.2f} s after the kill"
        f" and received the refresh of a miss on instance {refresher + 1}"
    )
    assert answers, "the load ran"
    assert not failed, [(a.status, a.error) for a in failed]


async def test_a_reconnect_storm_costs_no_upstream_call_no_5xx_and_no_update(topo: Any) -> None:
    """The storm benchmark's short version: the instance holding the most subscribers is SIGKILLed
    under HTTP load; its subscribers (reconnecting with jittered backoff, honouring 4429) all hold a
    value again, every cell was cached so no instance misses, nginx logs no 5xx, and every
    subscriber receives the next refresh."""
    storm = await storm_bench.run(
        topo, STORM_SUBSCRIBERS, cells=10, rate=50, load_seconds=3, processes=2, timeout=120, log=lambda *_: None
    )
    print("\n" + storm.table())
    assert storm.recovered_seconds is not None, storm
    assert storm.reconnects >= storm.held[storm.killed] > 0, storm
    assert storm.misses == 0, storm  # (the simulator's count includes this module's 2 s pre-warmer)
    assert storm.server_errors == 0 and storm.http_errors == 0, storm
    assert storm.refreshed == STORM_SUBSCRIBERS, storm


async def test_sigkill_of_the_prewarm_leader_another_instance_leads_within_the_lease(topo: Any) -> None:
    urls = topo.instance_urls
    cycles = "weathernote_prewarm_cycles_total"

    def counts() -> list[float]:
        return [metric(url, cycles) for url in urls]

    # the leader: the one instance whose cycle count grows over two periods
    before = await asyncio.to_thread(counts)
    deadline = time.monotonic() + 4 * PREWARM_SECONDS + 3
    while True:
        await asyncio.sleep(0.5)
        now = await asyncio.to_thread(counts)
        grew = [i for i in range(len(urls)) if now[i] > before[i]]
        if grew or time.monotonic() > deadline:
            break
    assert len(grew) == 1, f"exactly one leader, cycles {before} -> {now}"
    leader = grew[0]

    killed_at = time.monotonic()
    topo.signal_instance(leader, signal.SIGKILL)
    await asyncio.to_thread(topo.wait_instance_exit, leader, 10)
    survivors = [i for i in range(len(urls)) if i != leader]
    base = {i: metric(urls[i], cycles) for i in survivors}
    lease = max(3.0, PREWARM_SECONDS)
    # bounded generously: the lease lapses, a survivor's next try takes it (every lease / 3),
    # its first cycle comes with the next period
    deadline = killed_at + lease + lease / 3 + PREWARM_SECONDS + 10
    new_leader = None
    while new_leader is None:
        assert time.monotonic() < deadline, "no instance took the lead"
        await asyncio.sleep(0.1)
        for i in survivors:
            if await asyncio.to_thread(metric, urls[i], cycles) > base[i]:
                new_leader = i
    took = time.monotonic() - killed_at

    # and it stays the only one leading
    steady = {i: await asyncio.to_thread(metric, urls[i], cycles) for i in survivors}
    await asyncio.sleep(2 * PREWARM_SECONDS + 0.5)
    later = {i: await asyncio.to_thread(metric, urls[i], cycles) for i in survivors}
    leading = [i for i in survivors if later[i] > steady[i]]
    print(
        f"\npre-warm leader instance {leader + 1} SIGKILLed; instance {new_leader + 1} ran its first cycle"
        f" {took:.1f} s later (lease {lease:.0f} s, period {PREWARM_SECONDS:.0f} s)"
    )
    assert leading == [new_leader], f"one leader after the takeover: {steady} -> {later}"


async def test_sigterm_under_load_drains_without_a_failed_request_and_nginx_stops_routing_to_it(topo: Any) -> None:
    await asyncio.to_thread(warm, topo)
    victim = 1
    victim_addr = f"127.0.0.1:{topo.instance_ports[victim]}"
    # a subscriber on the victim (nginx balances by connections: a few sockets reach it)
    sockets: list[GraphQLSocket] = []
    on_victim = None
    for _ in range(2 * len(topo.instance_urls)):
        socket = GraphQLSocket(topo.url)
        await socket.__aenter__()
        sockets.append(socket)
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        await socket.data()
        if holder(socket, topo) == victim:
            on_victim = socket
            break
    try:
        assert on_victim is not None, "no socket reached the victim"
        started = time.time()
        load = asyncio.create_task(steady_load(topo, TERM_LOAD_SECONDS, LOAD_CLIENTS))
        await asyncio.sleep(1.5)

        term_at = time.time()
        topo.signal_instance(victim, signal.SIGTERM)
        # not ready at once, directly and through nginx's route to it, yet still serving
        async with httpx.AsyncClient(timeout=2) as client:
            ready = None
            for _ in range(20):
                ready = (await client.get(f"{topo.instance_urls[victim]}/ready")).status_code
                if ready == 503:
                    break
                await asyncio.sleep(0.05)
            through_nginx = (await client.get(f"{topo.url}/_instances/{victim + 1}/ready")).status_code
            served = await client.post(
                f"{topo.instance_urls[victim]}/graphql", json={"query": LOAD_QUERY, "variables": LOAD_CELLS[0]}
            )
        assert ready == 503 and through_nginx == 503, (ready, through_nginx)
        assert served.status_code == 200 and "errors" not in served.json(), "a draining instance still serves"

        # its subscriber is told to go away (1001) and reconnects through nginx at once, elsewhere,
        # while the victim still drains (nginx retries the handshake the victim refuses)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await on_victim.receive(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, closed.value
        again = GraphQLSocket(topo.url)
        await again.__aenter__()
        sockets.append(again)
        await again.init()
        await again.subscribe("w", WEATHER, PARIS)
        await again.data()
        reconnected_after = time.time() - term_at
        tried = again.ws.response.headers["X-Upstream"]
        assert holder(again, topo) != victim and topo.instance_alive(victim), (tried, reconnected_after)
    finally:
        for socket in sockets:
            await socket.__aexit__(None, None, None)

    exit_code = await asyncio.to_thread(topo.wait_instance_exit, victim, 30)
    exited_at = time.time()
    answers = await load

    failed = failures(answers)
    log = access_log(topo, started)
    during_drain = [e for e in log if term_at <= e[0] < exited_at and e[3] and e[3][-1] == victim_addr]
    after = [e for e in log if e[0] >= exited_at + 0.2]
    answered_after = [e for e in after if e[3] and e[3][-1] == victim_addr]
    tried_after = [e for e in after if victim_addr in e[3]]
    print(
        f"\nSIGTERM of instance {victim + 1} under load through nginx: {len(answers)} requests by status"
        f" {by_status(answers)}, failed at first attempt {len(failed)}"
        f" (retried successfully {sum(1 for a in failed if a.retried_ok)});"
        f" it answered {len(during_drain)} requests while draining, exited {exited_at - term_at:.1f} s after"
        f" SIGTERM (code {exit_code}); afterwards nginx answered {len(after)} requests, none from it"
        f" ({len(tried_after)} tried it first: refused, retried on the next instance);"
        f" its subscriber got 1001 and was subscribed again through nginx {reconnected_after:.2f} s after SIGTERM,"
        f" on instance {holder(again, topo) + 1} (nginx tried {tried})"
    )
    assert answers, "the load ran"
    assert not failed, [(a.status, a.error, a.upstream) for a in failed]
    assert exit_code == 0, "a graceful exit"
    assert during_drain, "nginx kept sending it requests while it drained, and they succeeded"
    assert after and not answered_after, answered_after[:3]

    # a rolling restart's second half: started again, it gets traffic again once nginx retries it
    await asyncio.to_thread(topo.restart_instance, victim)
    restarted_at = time.monotonic()
    await asyncio.to_thread(warm, topo)
    print(
        f"restarted, instance {victim + 1} answered through nginx again {time.monotonic() - restarted_at:.1f} s after it was ready"
    )


def test_the_command_line_status_up_again_and_down_twice(topo: Any) -> None:
    """Last: `down` stops this module's topology (the fixture's own stop then finds nothing)."""
    script = [sys.executable, "-m", "weathernote.topology"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args, "--dir", str(topo.dir)], capture_output=True, text=True, timeout=60)

    status = run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert topo.url in status.stdout and all(url in status.stdout for url in topo.instance_urls), status.stdout

    again = run("up")  # already running: nothing started, the same topology printed
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert topo.url in again.stdout

    pids = [topo.instance_pid(i) for i in range(len(topo.instance_urls))]
    down = run("down")
    assert down.returncode == 0 and "stopped 11 running processes" in down.stdout, down.stdout + down.stderr
    assert not any(topo.instance_alive(i) for i in range(len(pids)))
    assert not (topo.dir / "state.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{topo.url}/nginx-health", timeout=2)

    twice = run("down")
    assert twice.returncode == 0 and "nothing was running" in twice.stdout, twice.stdout
    gone = run("status")
    assert gone.returncode == 3 and "no local topology runs" in gone.stdout, gone.stdout
    print(f"\n$ python -m weathernote.topology down\n{down.stdout.strip()}\n$ (again)\n{twice.stdout.strip()}")
