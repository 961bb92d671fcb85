"""Fair use: shared GCRA limits across instances, hashed identities, a Redis breaker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import websockets

from tests.conftest import Server, Simulator, graphql, server_env, wait_until
from weathernote.redis.embedded import EmbeddedRedis

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { temperature cached } }"


def limited(redis_url: str, simulator: Simulator, **settings: object) -> Server:
    env = server_env(redis_url, simulator, **settings)
    env.setdefault("WEATHERNOTE_RATE_LIMIT_PER_MINUTE", "60")
    return Server(env)


@pytest.fixture(scope="module")
def pair(redis_url: str, simulator: Simulator) -> Iterator[tuple[Server, Server]]:
    first = Server(server_env(redis_url, simulator, rate_limit_per_minute=60))
    second = Server(server_env(redis_url, simulator, rate_limit_per_minute=60))
    yield first, second
    first.stop()
    second.stop()


@pytest.mark.topologies
def test_exactly_the_limit_is_allowed_across_two_instances(pair: tuple[Server, Server], clean: Simulator) -> None:
    first, second = pair
    headers = {"x-client-id": "device-sixty"}
    statuses = [graphql((first, second)[i % 2].url, QUERY, headers=headers).status_code for i in range(60)]
    assert statuses == [200] * 60
    refused = graphql(second.url, QUERY, headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"].startswith('"client";q=60;w=60')
    assert refused.headers["ratelimit"].startswith('"client";r=0;')
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == int(refused.headers["retry-after"])
    # another client is not affected
    assert graphql(first.url, QUERY, headers={"x-client-id": "device-other"}).status_code == 200


def test_rest_and_websocket_count_against_the_same_limit(pair: tuple[Server, Server], clean: Simulator) -> None:
    first, _ = pair
    headers = {"x-client-id": "device-mixed"}
    for _ in range(59):
        assert httpx.get(f"{first.url}/api/v1/weather", params={"lat": 1, "lon": 1}, headers=headers).status_code == 200

    # the WebSocket client carries the same id in its handshake headers
    async def run() -> list[dict]:
        url = first.url.replace("http", "ws") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"], additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "subscribe", "id": "a", "payload": {"query": "{ __typename }"}}))
            await ws.send(json.dumps({"type": "subscribe", "id": "b", "payload": {"query": "{ __typename }"}}))
            return [json.loads(await ws.recv()) for _ in range(3)]

    messages = asyncio.run(run())
    by_id = {}
    for message in messages:
        by_id.setdefault(message["id"], []).append(message["type"])
    assert by_id["a"] == ["next", "complete"]
    assert by_id["b"] == ["error"]
    error = next(m for m in messages if m["type"] == "error")
    assert error["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    rest = httpx.get(f"{first.url}/api/v1/weather", params={"lat": 1, "lon": 1}, headers=headers)
    assert rest.status_code == 429 and rest.json()["error"]["code"] == "RATE_LIMITED"


def test_the_window_slides(redis_url: str, simulator: Simulator, clean: Simulator) -> None:
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=5, rate_limit_period_seconds=2))
    try:
        headers = {"x-client-id": "device-window"}

        def burst(count: int) -> list[int]:
            return [graphql(srv.url, QUERY, headers=headers).status_code for _ in range(count)]

        assert burst(3) == [200] * 3
        time.sleep(1.0)
        assert burst(3) == [200, 200, 429]
        time.sleep(1.1)  # the first three left the 2 s window; the last two have not
        assert burst(4) == [200, 200, 200, 429]
    finally:
        srv.stop()


@pytest.mark.topologies
def test_rotating_client_ids_from_one_address_meets_the_address_limit(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=5, ip_rate_limit_per_minute=8))
    try:
        statuses = [graphql(srv.url, QUERY, headers={"x-client-id": f"rotating-{i}"}).status_code for i in range(12)]
        assert statuses == [200] * 8 + [429] * 4
        refused = graphql(srv.url, QUERY, headers={"x-client-id": "rotating-new"})
        assert refused.headers["ratelimit"].startswith('"address"')
    finally:
        srv.stop()


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    untrusted = Server(server_env(redis_url, simulator, rate_limit_per_minute=3))
    trusted = Server(server_env(redis_url, simulator, rate_limit_per_minute=3, trusted_proxies="127.0.0.1"))
    try:
        spoofed = [
            graphql(untrusted.url, QUERY, headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code for i in range(5)
        ]
        assert spoofed == [200, 200, 200, 429, 429], "a spoofed header must not mint new clients"
        forwarded = [
            graphql(trusted.url, QUERY, headers={"x-forwarded-for": f"198.51.100.{i}"}).status_code for i in range(5)
        ]
        assert forwarded == [200] * 5, "behind a trusted proxy each forwarded address is its own client"
    finally:
        untrusted.stop()
        trusted.stop()


@pytest.mark.topologies
def test_raw_ids_and_addresses_never_reach_redis(
    pair: tuple[Server, Server], clean: Simulator, redis_client: redis.Redis
) -> None:
    first, _ = pair
    graphql(first.url, QUERY, headers={"x-client-id": "raw-device-7f3a"})
    graphql(first.url, QUERY)
    dump = b""
    for key in redis_client.scan_iter():
        dump += key
        if redis_client.type(key) == b"string":
            dump += redis_client.get(key) or b""
    assert b"raw-device-7f3a" not in dump and b"127.0.0.1" not in dump
    keys = [k.decode() for k in redis_client.scan_iter("rate_limit:*")]
    assert keys and all(len(k.rsplit(":", 1)[1]) == 32 for k in keys), "128-bit hashes"


def test_a_dead_redis_degrades_the_service_but_never_breaks_it(
    tmp_path: Path, simulator: Simulator, clean: Simulator
) -> None:
    own = EmbeddedRedis(tmp_path / "redis", persistent=False)
    own.start()
    srv = Server(
        server_env(own.url, simulator, redis_timeout_seconds=0.3, breaker_reset_seconds=1, rate_limit_per_minute=60)
    )
    try:
        assert graphql(srv.url, QUERY).json()["data"]["current"]["cached"] is False
        assert own._process is not None
        os.kill(own._process.pid, signal.SIGSTOP)  # hung, not refused: the worst kind of dead
        responses = [graphql(srv.url, QUERY) for _ in range(30)]
        assert all(r.status_code == 200 for r in responses)
        # this process's latest entry still answers: no upstream call per request
        assert all(r.json()["data"]["current"]["temperature"] is not None for r in responses)
        assert clean.stats()["served"] == 1
        other_cell = graphql(srv.url, "{ current(lat: 10, lon: 10) { cached } }")
        assert other_cell.json() == {"data": {"current": {"cached": False}}}
        health = httpx.get(f"{srv.url}/health", timeout=5).json()
        assert health["status"] == "degraded" and health["redis"] == "down" and health["breaker"] == "open"
        os.kill(own._process.pid, signal.SIGCONT)
        wait_until(lambda: httpx.get(f"{srv.url}/health").json()["redis"] == "ok", timeout=15)
        assert httpx.get(f"{srv.url}/health").json()["breaker"] == "closed"
        assert graphql(srv.url, QUERY).status_code == 200
    finally:
        if own._process is not None:
            os.kill(own._process.pid, signal.SIGCONT)
        srv.stop()
        own.stop()
    assert "Traceback" not in srv.logs()
