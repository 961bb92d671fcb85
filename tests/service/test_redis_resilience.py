"""Redis that misbehaves without saying so: a link that goes silent, a Cluster node down at start-up,
control keys evicted (issue 24; each test failed before its fix)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import Server, Simulator, free_port, server_env
from tests.wsclient import GraphQLSocket
from weathernote.breaker import CircuitBreaker
from weathernote.clock import Clock
from weathernote.model import Entry, Grid, Part
from weathernote.prewarm import Lease
from weathernote.redis import EmbeddedCluster, RedisGateway

WEATHER = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt } }"


class SilentProxy:
    """A TCP proxy whose established links can go silent (bytes held, nothing closed, no RST),
    as a partition or a stuck middlebox does; new connections pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._links: list[asyncio.Event] = []
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(5)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        started.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        flowing = asyncio.Event()
        flowing.set()
        self._links.append(flowing)
        await asyncio.gather(self._pipe(reader, up_writer, flowing), self._pipe(up_reader, writer, flowing))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await flowing.wait()  # silent: held forever, nothing closed
                writer.write(data)
                await writer.drain()

    def silence(self) -> None:
        """Every link open now stops forwarding, without closing."""
        self._loop.call_soon_threadsafe(lambda: [link.clear() for link in self._links])

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def silent_proxy(redis_server: object) -> Iterator[SilentProxy]:
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])  # type: ignore[attr-defined]
    proxy = SilentProxy(port)
    yield proxy
    proxy.close()


async def test_a_pubsub_link_that_goes_silent_is_found_and_its_refreshes_still_arrive(
    silent_proxy: SilentProxy, redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    """With no timeout or keepalive, a silent partition (no RST) froze subscriptions until TCP gave up."""
    srv = Server(server_env(f"redis://127.0.0.1:{silent_proxy.port}/0", simulator, redis_pubsub_keepalive_seconds=1))
    try:
        async with GraphQLSocket(srv.url) as sock:
            await sock.init()
            await sock.subscribe("w", WEATHER, {"lat": 30.0, "lon": 30.0})
            first = (await sock.data(timeout=10))["data"]
            silent_proxy.silence()  # the hub's connection (and every other open one) stops forwarding
            await asyncio.sleep(0.5)
            # a refresh from elsewhere: written and announced straight to Redis, not through the proxy
            key = "weather:lat:30.0:lon:30.0"
            entry = Entry.decode(Part.CURRENT, Grid().cell(30, 30), redis_client.get(key))
            newer = Entry(
                entry.part,
                entry.cell,
                entry.fetched_at_ms + 60_000,
                entry.fresh_until_ms + 60_000,
                entry.next_update_ms,
                entry.payload,
            )
            redis_client.set(key, newer.encode(), px=600_000)
            redis_client.publish(f"updates:{key}", newer.encode())
            update = (await sock.data(timeout=15))["data"]
            assert update["weatherUpdates"]["fetchedAt"] != first["weatherUpdates"]["fetchedAt"]
        assert "pub/sub link silent" in srv.logs()
    finally:
        srv.stop()


@pytest.mark.topologies
async def test_a_cluster_node_down_at_start_up_leaves_the_topology_to_the_seed_nodes(
    topology: str, redis_cluster: EmbeddedCluster
) -> None:
    """A node unreachable at start-up made the instance run as a single server until restarted."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    seeds = [url.split("//", 1)[1].split("/")[0] for url in redis_cluster.urls]
    gateway = RedisGateway(dead, timeout=0.3, breaker=CircuitBreaker("redis"), seed_nodes=seeds)
    await gateway.connect()
    try:
        assert gateway.topology_known and gateway.cluster, "learnt from a seed node"
        assert await gateway.ping()
        await gateway.call(lambda client: client.set("weather:{lat:1.0:lon:1.0}", "x"))
    finally:
        await gateway.aclose()
    alone = RedisGateway(dead, timeout=0.3, breaker=CircuitBreaker("redis"))
    await alone.connect()
    assert not alone.topology_known and not await alone.ping(), "no seed answers: not ready, nothing guessed"
    await alone.aclose()


async def test_a_moved_answer_makes_the_gateway_learn_the_topology_again(redis_cluster: EmbeddedCluster) -> None:
    """MOVED answers opened the breaker (the budget then failed open) and /ready said 200."""
    gateway = RedisGateway(redis_cluster.url, timeout=0.5, breaker=CircuitBreaker("redis", failures=50))
    try:  # not connected: it talks to the node as to a single server, as after a start-up without it
        for index in range(20):
            with contextlib.suppress(Exception):
                await gateway.call(lambda client, index=index: client.get(f"key-{index}"))  # type: ignore[misc]
            if gateway.cluster:
                break
            await asyncio.sleep(0.05)
        for _ in range(100):  # the detection runs in a task of the gateway's
            if gateway.cluster:
                break
            await asyncio.sleep(0.05)
        assert gateway.cluster and gateway.topology_known
    finally:
        await gateway.aclose()


@pytest.mark.topologies
async def test_an_evicted_lease_is_lost_by_its_holder_and_the_period_is_not_run_twice(
    redis_url: str, clean: Simulator, redis_client: redis.Redis
) -> None:
    """allkeys-lru may evict the lease: its holder learns it lost it at its next renewal; another
    instance takes it, and the period's marker keeps the cycle from running twice."""
    gateway = RedisGateway(redis_url, timeout=0.5, breaker=CircuitBreaker("redis"))
    await gateway.connect()
    try:
        first, second = Lease(gateway, Clock(), 5), Lease(gateway, Clock(), 5)
        assert await first.acquire_or_renew() and not await second.acquire_or_renew()
        redis_client.delete("prewarm:leader")  # what an eviction does
        assert await second.acquire_or_renew()
        assert not await first.acquire_or_renew(), "the old holder knows it lost the lease"
    finally:
        await gateway.aclose()


def test_junk_watchers_cannot_push_the_most_requested_cells_out_of_what_the_budget_keeps(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Watched cells were valued 1e9: ~2,000 subscriptions on junk cells pushed every popular
    unwatched cell out of `prewarm:kept`. Now a cell is worth its distinct watchers, within a share."""
    expires = time.time() + 600
    junk = {f"current|lat:-60.0:lon:{index / 10:.1f}|abuser": expires for index in range(2000)}
    redis_client.zadd("watchers", junk)
    redis_client.zadd("watched_cells", {member.rsplit("|", 1)[0]: expires for member in junk})
    popular = {f"current|lat:48.9:lon:{2 + index / 10:.1f}": 50 for index in range(20)}
    redis_client.zadd("popular_cells", popular)
    env = server_env(redis_url, simulator, upstream_budget_per_day=1000, prewarm_interval_seconds=86400)
    run = subprocess.run(
        [sys.executable, "-m", "weathernote", "prewarm", "--once"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    kept = {member.decode() for member in redis_client.smembers("prewarm:kept")} - {""}
    assert report["kept"] >= 20
    assert set(popular) <= kept, "every popular cell is kept"
    watched_kept = [member for member in kept if member.startswith("current|lat:-60.0")]
    assert len(watched_kept) <= report["kept"] / 2, "watched cells take at most half of what is kept"
