"""Live weather over WebSockets: real servers, real Redis pub/sub, real clients."""

from __future__ import annotations

import asyncio
import json
import signal
import socket as socket_module
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import websockets

from tests.conftest import Server, Simulator, eventually, graphql, server_env, spell_key
from tests.wsclient import LEGACY, TRANSPORT, GraphQLSocket

WEATHER = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature cached fetchedAt cell { lat lon } } }"
PARIS = {"lat": 48.8566, "lon": 2.3522}
PARIS_KEY = "weather:lat:48.9:lon:2.4"
PARIS_CHANNEL = f"updates:{PARIS_KEY}"


def _topology(redis_client: redis.Redis | redis.RedisCluster) -> str:
    return "cluster" if isinstance(redis_client, redis.RedisCluster) else "standalone"


def refresh(server: Server, redis_client: redis.Redis, key: str = PARIS_KEY, where: dict = PARIS) -> None:
    """Make the cell refresh: drop its entry and stale copy, then ask for it (a miss refetches and announces)."""
    key = spell_key(key, _topology(redis_client))
    redis_client.delete(key, f"stale:{key}")  # the stale copy would be renewed, not refetched
    if key.startswith("weather:"):
        body = graphql(
            server.url, "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { cached } }", where
        ).json()
        assert body["data"]["current"]["cached"] is False
    else:
        body = graphql(
            server.url,
            "query($lat: Float!, $lon: Float!) { forecast(lat: $lat, lon: $lon) { cached daily { date } hourly(hours: 384) { time } } }",
            {**where},
        ).json()
        assert "errors" not in body or "hours" in str(body)


def redis_now(redis_client: redis.Redis) -> float:
    seconds, micros = redis_client.time()
    return seconds + micros / 1e6


def numsub(redis_client: redis.Redis | redis.RedisCluster, channel: str) -> int:
    """Subscribers of `channel`: on a Cluster, sharded subscribers on the node owning it."""
    if isinstance(redis_client, redis.RedisCluster):
        channel = spell_key(channel, "cluster")
        return int(dict(redis_client.pubsub_shardnumsub(channel)).get(channel.encode(), 0))
    return dict(redis_client.pubsub_numsub(channel)).get(channel.encode(), 0)


@pytest.fixture(scope="module")
def second(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(server_env(redis_url, simulator))
    yield srv
    srv.stop()


@pytest.mark.topologies
@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_current_value_at_once_then_every_refresh(
    server: Server, clean: Simulator, redis_client: redis.Redis, protocol: str
) -> None:
    async with GraphQLSocket(server.url, protocol) as socket:
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        first = (await socket.data())["data"]["weatherUpdates"]
        assert first["cell"] == {"lat": 48.9, "lon": 2.4} and first["cached"] is False
        seen = [first["fetchedAt"]]
        for _ in range(2):
            refresh(server, redis_client)
            update = (await socket.data())["data"]["weatherUpdates"]
            assert update["fetchedAt"] > seen[-1]
            seen.append(update["fetchedAt"])
        await socket.stop("w")
        await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)


@pytest.mark.topologies
async def test_a_miss_on_another_instance_reaches_the_subscriber(
    server: Server, second: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    async with GraphQLSocket(server.url) as socket:
        await socket.init()
        await socket.subscribe("w", WEATHER, PARIS)
        first = (await socket.data())["data"]["weatherUpdates"]
        refresh(second, redis_client)
        update = (await socket.data(timeout=5))["data"]["weatherUpdates"]
        assert update["fetchedAt"] > first["fetchedAt"]
        assert update["cached"] is False


@pytest.mark.topologies
async def test_one_redis_subscription_per_process_and_nothing_left_behind(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    sockets = [GraphQLSocket(server.url) for _ in range(5)]
    for socket in sockets:
        await socket.__aenter__()
        await socket.init()
        await socket.subscribe("a", WEATHER, PARIS)
        await socket.subscribe("b", WEATHER, {"lat": 48.87, "lon": 2.37})  # same cell
        await socket.data()
        await socket.data()
    assert numsub(redis_client, PARIS_CHANNEL) == 1
    refresh(server, redis_client)
    for socket in sockets:
        payloads = [await socket.data(), await socket.data()]
        assert payloads[0] == payloads[1]
    # abrupt disconnects, no `complete`
    for socket in sockets:
        socket.ws.transport.abort()
    await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)


async def test_a_stalled_subscriber_neither_delays_others_nor_queues_without_bound(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    query = "subscription($lat: Float!, $lon: Float!) { forecastUpdates(lat: $lat, lon: $lon, days: 16) { fetchedAt hourly(hours: 384) { time temperature precipitationProbability weatherCode windSpeed } } }"
    key = "forecast:lat:48.9:lon:2.4:days:16:hourly"
    refresh_query = "{ forecast(lat: 48.8566, lon: 2.3522, days: 16) { hourly(hours: 1) { time } } }"
    # a tiny receive window, so the stalled client's backlog stays on the server's side
    raw = socket_module.socket()
    raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    async with GraphQLSocket(server.url) as fast, GraphQLSocket(server.url, sock=raw, max_queue=1) as stalled:
        for client in (fast, stalled):
            await client.init()
            await client.subscribe("f", query, PARIS)
            await client.data()
        # from here the stalled client reads nothing: one frame queued, then its socket fills
        refreshes = 120  # ~5 MB of payloads: more than the kernel buffers between us
        last = None
        for _ in range(refreshes):
            redis_client.delete(key, f"stale:{key}")
            assert "errors" not in graphql(server.url, refresh_query).json()
            last = (await fast.data(timeout=5))["data"]["forecastUpdates"]["fetchedAt"]
        received = []
        while True:
            try:
                received.append((await stalled.data(timeout=2))["data"]["forecastUpdates"]["fetchedAt"])
            except TimeoutError:
                break
        assert len(set(received)) == len(received), "no refresh is delivered twice"
        assert received[-1] == last, "the stalled subscriber ends on the latest refresh"
        assert len(received) < refreshes, "older refreshes were replaced, not queued"


async def test_redis_restart_under_live_subscriptions(tmp_path: Path, simulator: Simulator) -> None:
    from weathernote.redis.embedded import EmbeddedRedis

    own = EmbeddedRedis(tmp_path / "redis", persistent=False)
    own.start()
    srv = Server(server_env(own.url, simulator))
    try:
        client = redis.Redis.from_url(own.url)
        async with GraphQLSocket(srv.url) as socket:
            await socket.init()
            await socket.subscribe("w", WEATHER, PARIS)
            first = (await socket.data())["data"]["weatherUpdates"]
            port = own.port
            own.kill()
            await asyncio.sleep(1.5)
            own.port = port
            own.start()
            await eventually(lambda: numsub(client, PARIS_CHANNEL) == 1, timeout=15)
            refresh(srv, client)
            update = (await socket.data(timeout=10))["data"]["weatherUpdates"]
            assert update["fetchedAt"] > first["fetchedAt"]
    finally:
        srv.stop()
        own.stop()


async def test_announcements_lost_during_a_partition_are_caught_up_once(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    from tests.tcp_proxy import TcpProxy

    host_port = redis_url.split("//")[1].split("/")[0]
    proxy = TcpProxy("127.0.0.1", int(host_port.split(":")[1]))
    behind = Server(server_env(f"redis://127.0.0.1:{proxy.port}/0", simulator))
    direct = Server(server_env(redis_url, simulator))
    try:
        async with GraphQLSocket(behind.url) as socket:
            await socket.init()
            await socket.subscribe("w", WEATHER, PARIS)
            first = (await socket.data())["data"]["weatherUpdates"]
            proxy.cut()
            await asyncio.sleep(0.5)
            refresh(direct, redis_client)  # announced while `behind` cannot hear
            refreshed = json.loads(graphql(direct.url, "{ current(lat: 48.8566, lon: 2.3522) { fetchedAt } }").text)
            proxy.restore()
            update = (await socket.data(timeout=15))["data"]["weatherUpdates"]
            assert update["fetchedAt"] == refreshed["data"]["current"]["fetchedAt"] > first["fetchedAt"]
            with pytest.raises(asyncio.TimeoutError):
                await socket.data(timeout=2)  # caught up once, no duplicate
    finally:
        behind.stop()
        direct.stop()
        proxy.close()


@pytest.mark.topologies
async def test_watched_cells_are_registered_and_age_out(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    srv = Server(server_env(redis_url, simulator, watch_ttl_seconds=1.5))
    try:
        async with GraphQLSocket(srv.url) as socket:
            await socket.init()
            await socket.subscribe("w", WEATHER, PARIS)
            await socket.data()
            await asyncio.sleep(2.5)  # longer than the TTL: only renewal keeps it
            score = redis_client.zscore("watched_cells", "current|lat:48.9:lon:2.4")
            assert score is not None and score > redis_now(redis_client)
        await asyncio.sleep(2)
        score = redis_client.zscore("watched_cells", "current|lat:48.9:lon:2.4")
        assert score is None or score < redis_now(redis_client)
    finally:
        srv.stop()


async def test_documents_the_planner_skips_still_stream(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    query = "subscription($lat: Float!, $lon: Float!, $t: Boolean!) { weatherUpdates(lat: $lat, lon: $lon) { temperature @include(if: $t) fetchedAt } }"
    async with GraphQLSocket(server.url) as socket:
        await socket.init()
        await socket.subscribe("g", query, {**PARIS, "t": False})
        first = (await socket.data())["data"]["weatherUpdates"]
        assert "temperature" not in first
        refresh(server, redis_client)
        update = (await socket.data())["data"]["weatherUpdates"]
        assert update["fetchedAt"] > first["fetchedAt"]


async def test_subscription_errors(server: Server, clean: Simulator) -> None:
    async with GraphQLSocket(server.url) as socket:
        await socket.init()
        await socket.subscribe("bad", "subscription { weatherUpdates(lat: 95, lon: 0) { temperature } }")
        payload = await socket.data()
        assert payload["data"] is None and payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert (await socket.receive())["type"] == "complete"
        for days in (0, 17):  # the planned path keeps the resolver's check of days
            await socket.subscribe(
                f"days{days}",
                "subscription($d: Int) { forecastUpdates(lat: 1, lon: 1, days: $d) { cached } }",
                {"d": days},
            )
            payload = await socket.data()
            assert payload["data"] is None and payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            assert "days must be between 1 and 16" in payload["errors"][0]["message"]
            assert (await socket.receive())["type"] == "complete"
        await socket.subscribe("invalid", "subscription { weatherUpdates(lat: 1, lon: 0) { nope } }")
        error = await socket.receive()
        assert error["type"] == "error" and "nope" in error["payload"][0]["message"]
        clean.configure(forced_status=503)
        await socket.subscribe("down", WEATHER, {"lat": 10, "lon": 10})
        payload = await socket.data()
        assert payload["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert (await socket.receive())["type"] == "complete"
        await socket.send({"type": "subscribe", "id": "q", "payload": {"query": "{ __typename }"}})
        assert (await socket.data()) == {"data": {"__typename": "Query"}}


@pytest.fixture(scope="module")
def strict(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(
        server_env(redis_url, simulator, ws_init_timeout_seconds=0.5, ws_keepalive_seconds=0.3, ws_max_subscriptions=2)
    )
    yield srv
    srv.stop()


async def close_code(socket: GraphQLSocket) -> int:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await socket.receive(timeout=5, skip_keepalive=False)
    return closed.value.rcvd.code


async def test_protocol_violations_close_with_their_codes(strict: Server) -> None:
    async with GraphQLSocket(strict.url) as socket:  # no connection_init
        assert await close_code(socket) == 4408
    async with GraphQLSocket(strict.url) as socket:
        await socket.subscribe("early", WEATHER, PARIS)
        assert await close_code(socket) == 4401
    async with GraphQLSocket(strict.url) as socket:
        await socket.init()
        await socket.ws.send("{not json")
        assert await close_code(socket) == 4400
    async with GraphQLSocket(strict.url) as socket:
        await socket.init()
        await socket.send({"type": "connection_init"})
        assert await close_code(socket) == 4429
    async with GraphQLSocket(strict.url) as socket:
        await socket.init()
        await socket.subscribe("x", WEATHER, PARIS)
        await socket.subscribe("x", WEATHER, PARIS)
        assert await close_code(socket) == 4409
    async with GraphQLSocket(strict.url) as socket:
        await socket.init()
        await socket.ws.send("x" * 100_000)
        assert await close_code(socket) == 1009
    async with websockets.connect(strict.url.replace("http", "ws") + "/graphql", subprotocols=["mqtt"]) as raw:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await raw.recv()
        assert closed.value.rcvd.code == 4406


async def test_keepalive_and_operation_limit(strict: Server, clean: Simulator) -> None:
    async with GraphQLSocket(strict.url) as socket:
        await socket.init()
        ping = await socket.receive(timeout=2, skip_keepalive=False)
        assert ping["type"] == "ping"
        for operation_id in ("1", "2", "3"):
            await socket.subscribe(operation_id, WEATHER, PARIS)
        messages = [await socket.receive() for _ in range(3)]
        errors = [m for m in messages if m["type"] == "error"]
        assert [e["id"] for e in errors] == ["3"]
        assert errors[0]["payload"][0]["message"] == "Subscription limit reached"


async def test_shutdown_closes_sockets_with_going_away(redis_url: str, simulator: Simulator, clean: Simulator) -> None:
    srv = Server(server_env(redis_url, simulator))
    try:
        async with GraphQLSocket(srv.url) as socket:
            await socket.init()
            await socket.subscribe("w", WEATHER, PARIS)
            await socket.data()
            srv.process.send_signal(signal.SIGTERM)
            assert await close_code(socket) == 1001
        assert srv.process.wait(20) == 0
    finally:
        srv.stop()


def _kill_subscribed_clients(redis_client: redis.Redis | redis.RedisCluster) -> int:
    """Close every connection holding a (sharded) subscription, on every node; how many."""
    nodes = redis_client.get_nodes() if isinstance(redis_client, redis.RedisCluster) else [None]
    killed = 0
    for node in nodes:
        client = node.redis_connection if node is not None else redis_client
        for entry in client.client_list():
            if int(entry.get("sub", 0)) or int(entry.get("ssub", 0)):
                killed += int(client.client_kill_filter(_id=entry["id"]))
    return killed


@pytest.mark.topologies
async def test_every_watched_cell_is_heard_again_after_the_pubsub_connections_drop(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Eight cells (on a Cluster, several share a node but not a slot) resubscribed after a drop."""
    cells = [{"lat": 30.04 + i, "lon": 31.04 + i} for i in range(8)]
    async with GraphQLSocket(server.url) as socket:
        await socket.init()
        for index, cell in enumerate(cells):
            await socket.subscribe(str(index), WEATHER, cell)
        first = {}
        for _ in cells:
            message = await socket.receive()
            first[message["id"]] = message["payload"]["data"]["weatherUpdates"]["fetchedAt"]
        lost_before = server.logs().count("pub/sub connection lost")
        assert _kill_subscribed_clients(redis_client) >= 1
        await asyncio.sleep(1.5)  # the hub notices and reconnects
        for cell in cells:
            key = f"weather:lat:{cell['lat']:.1f}:lon:{cell['lon']:.1f}"
            refresh(server, redis_client, key=key, where=cell)
        updated = {}
        while len(updated) < len(cells):
            message = await socket.receive(timeout=10)
            fetched_at = message["payload"]["data"]["weatherUpdates"]["fetchedAt"]
            if fetched_at > first[message["id"]]:
                updated[message["id"]] = fetched_at
        assert sorted(updated) == sorted(first)
        await asyncio.sleep(1)
        # one loss per connection dropped, then settled: not a reconnect loop (each SSUBSCRIBE is per slot)
        assert server.logs().count("pub/sub connection lost") - lost_before <= 3
