"""Fan-out by callbacks: every newer version exactly once, one render per version, stalled readers bounded.

Real servers, real Redis pub/sub, real WebSocket clients over both protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket as socket_module
from collections.abc import Iterator

import httpx
import psutil
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env
from tests.service.test_subscriptions import PARIS, PARIS_KEY, WEATHER, refresh
from tests.wsclient import LEGACY, TRANSPORT, GraphQLSocket

SHORT = "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { fetchedAt } }"
FORECAST = "subscription($lat: Float!, $lon: Float!) { forecastUpdates(lat: $lat, lon: $lon, days: 16) { fetchedAt hourly(hours: 384) { time temperature precipitationProbability weatherCode windSpeed } } }"
FORECAST_KEY = "forecast:lat:48.9:lon:2.4:days:16:hourly"


def latest(server: Server) -> str:
    """The cell's current version, as a query reads it."""
    body = graphql(server.url, "{ current(lat: 48.8566, lon: 2.3522) { fetchedAt } }").json()
    return str(body["data"]["current"]["fetchedAt"])


def subscription_renders(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r'^weathernote_renders_total\{kind="subscription"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_every_subscriber_gets_every_newer_version_exactly_once(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Twelve sockets, both protocols, two documents on one cell: one render per document and version."""
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(GraphQLSocket(server.url, TRANSPORT if i % 2 else LEGACY))
            for i in range(12)
        ]
        for socket in sockets:
            await socket.init()
            await socket.subscribe("full", WEATHER, PARIS)
            await socket.subscribe("short", SHORT, PARIS)
        seen: dict[tuple[int, str], list[str]] = {}
        for index, socket in enumerate(sockets):
            for _ in range(2):
                message = await socket.receive()
                seen[(index, message["id"])] = [message["payload"]["data"]["weatherUpdates"]["fetchedAt"]]
        renders = subscription_renders(server)
        versions = []
        for _ in range(3):
            refresh(server, redis_client)
            versions.append(latest(server))
            for index, socket in enumerate(sockets):
                for _ in range(2):
                    message = await socket.receive()
                    seen[(index, message["id"])].append(message["payload"]["data"]["weatherUpdates"]["fetchedAt"])
        for socket in sockets:  # nothing more: no version twice
            with pytest.raises(TimeoutError):
                await socket.receive(timeout=0.5)
        for history in seen.values():
            assert history[1:] == versions and history[0] < versions[0]
        assert subscription_renders(server) - renders == 2 * len(versions), "once per document and version"


async def test_subscribers_joining_during_refreshes_never_see_a_version_twice(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Each joins while refreshes land: what it is sent only moves forward, and ends on the latest."""

    def one_refresh() -> None:  # a joining subscriber's own read may be the miss that refetches it
        redis_client.delete(PARIS_KEY, f"stale:{PARIS_KEY}")
        latest(server)

    async def refreshes() -> None:
        for _ in range(6):
            await asyncio.to_thread(one_refresh)
            await asyncio.sleep(0.05)

    async def subscriber(delay: float) -> list[str]:
        await asyncio.sleep(delay)
        async with GraphQLSocket(server.url) as socket:
            await socket.init()
            await socket.subscribe("w", SHORT, PARIS)
            history = [(await socket.data())["data"]["weatherUpdates"]["fetchedAt"]]
            await done.wait()
            final = await asyncio.to_thread(latest, server)
            while history[-1] != final:
                history.append((await socket.data(timeout=5))["data"]["weatherUpdates"]["fetchedAt"])
            with pytest.raises(TimeoutError):
                history.append((await socket.data(timeout=0.5))["data"]["weatherUpdates"]["fetchedAt"])
            return history

    done = asyncio.Event()
    subscribers = [asyncio.create_task(subscriber(0.03 * i)) for i in range(16)]
    await refreshes()
    done.set()
    for history in await asyncio.gather(*subscribers):
        assert history == sorted(set(history)), history


@pytest.fixture(scope="module")
def small_cache(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A render cache of 1 MB, so what the server keeps is what its sockets hold."""
    srv = Server(server_env(redis_url, simulator, render_cache_bytes=1_000_000))
    yield srv
    srv.stop()


def stalled_socket(port: int) -> socket_module.socket:
    """A socket with a tiny receive window, so a reader that stops leaves its backlog on the server's side."""
    raw = socket_module.socket()
    raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    return raw


async def test_stalled_readers_keep_only_their_latest_frame(
    small_cache: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Eight readers that stop, two operations each: the server's memory does not grow with what they miss."""
    refresh_query = "{ forecast(lat: 48.8566, lon: 2.3522, days: 16) { hourly(hours: 1) { time } } }"
    server_process = psutil.Process(small_cache.process.pid)

    def one_refresh() -> None:
        redis_client.delete(FORECAST_KEY, f"stale:{FORECAST_KEY}")
        assert "errors" not in graphql(small_cache.url, refresh_query).json()

    async with contextlib.AsyncExitStack() as stack:
        fast = await stack.enter_async_context(GraphQLSocket(small_cache.url))
        stalled = [
            await stack.enter_async_context(
                GraphQLSocket(small_cache.url, sock=stalled_socket(small_cache.port), max_queue=1)
            )
            for _ in range(8)
        ]
        await fast.init()
        await fast.subscribe("f", FORECAST, PARIS)
        await fast.data()
        for socket in stalled:
            await socket.init()
            for operation_id in ("a", "b"):
                await socket.subscribe(operation_id, FORECAST, PARIS)
            await socket.data()
            await socket.data()
        # from here the stalled readers read nothing; their sockets fill, then the server holds the rest
        for _ in range(15):
            one_refresh()
            await fast.data(timeout=5)
        held = server_process.memory_info().rss
        refreshes, last, payload_bytes = 100, None, 0
        for _ in range(refreshes):
            one_refresh()
            payload = await fast.data(timeout=5)
            last, payload_bytes = payload["data"]["forecastUpdates"]["fetchedAt"], len(json.dumps(payload))
        grown = server_process.memory_info().rss - held
        queued = 16 * refreshes * payload_bytes  # what the server would hold if it queued every frame
        print(
            f"\nserver RSS grew {grown / 1e6:.1f} MB over {refreshes} refreshes; queueing would hold ~{queued / 1e6:.0f} MB"
        )
        assert grown < queued / 4
        for socket in stalled:
            received: dict[str, list[str]] = {"a": [], "b": []}
            with contextlib.suppress(TimeoutError):
                while True:
                    message = await socket.receive(timeout=2)
                    received[message["id"]].append(message["payload"]["data"]["forecastUpdates"]["fetchedAt"])
            for history in received.values():
                assert history == sorted(set(history)), "no refresh is delivered twice"
                assert history[-1] == last, "a stalled reader ends on the latest refresh"
                assert len(history) < refreshes, "older refreshes were replaced, not queued"
