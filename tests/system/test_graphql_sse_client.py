"""A third-party client of GraphQL over SSE: the graphql-sse package (tests/node/sse.mjs, Node.js), in
both of its modes, against a live server and through the local topology's nginx.

- distinct connections (…/graphql) and a single connection (…/graphql/stream): a subscriber hears the
  cell's value, then a refresh, and its Redis subscription is gone when it leaves;
- through nginx (a small topology: a Cluster, two instances): both modes, a query and a refresh; a
  reservation handed out by one instance serves on whichever the token routes to; an event stream is
  never answered from the edge's cache, nor buffered.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, free_port, graphql, wait_until
from tests.service.test_subscriptions import PARIS, PARIS_CHANNEL, WEATHER, numsub, refresh
from tests.sseclient import EVENT_STREAM, EventReader
from weathernote.topology import Topology

CLIENTS = Path(__file__).resolve().parents[1] / "node"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature fetchedAt } }"
CLUSTER_KEY = "weather:{lat:48.9:lon:2.4}"


def sse_client(url: str, mode: str, query: str, count: int) -> subprocess.Popen[str]:
    node = shutil.which("node")
    assert node, "Node.js is required for the third-party client tests"
    return subprocess.Popen(
        [node, str(CLIENTS / "sse.mjs"), url, mode, query, json.dumps(PARIS), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=CLIENTS,
    )


def results(process: subprocess.Popen[str], count: int, between: Any = None) -> list[dict[str, Any]]:
    """`count` results of the client, `between()` called after the first; it must then exit 0."""
    assert process.stdout is not None
    try:
        received = [json.loads(process.stdout.readline() or "null")]
        assert received[0] is not None, process.stderr.read() if process.stderr else ""
        if between is not None:
            between()
        received += [json.loads(process.stdout.readline() or "null") for _ in range(count - 1)]
        assert process.wait(15) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    return received


@pytest.mark.parametrize(("mode", "path"), [("distinct", "/graphql"), ("single", "/graphql/stream")])
def test_graphql_sse_client_against_a_live_server(
    server: Server, clean: Simulator, redis_client: redis.Redis, mode: str, path: str
) -> None:
    process = sse_client(server.url + path, mode, WEATHER, 2)
    first, second = results(process, 2, lambda: refresh(server, redis_client))
    assert second["data"]["weatherUpdates"]["fetchedAt"] > first["data"]["weatherUpdates"]["fetchedAt"]
    wait_until(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)
    # a query: one result, then the server completes it
    [answer] = results(sse_client(server.url + path, mode, CURRENT, 5), 1)
    assert answer["data"]["current"]["temperature"] is not None


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    assert Path(NGINX).exists(), f"nginx not found ({NGINX}): `make nginx` (Debian: apt-get install -y nginx)"
    topology = Topology(
        tmp_path_factory.mktemp("sse-topology"),
        port=free_port(),
        instances=2,
        drain_seconds=0,
        prewarm_interval_seconds=0,
        log_level="warning",
        env={"rate_limit_per_minute": 1_000_000, "upstream_timeout_seconds": 2},
        nginx=NGINX,
    )
    topology.start(timeout=90)
    try:
        yield topology
    finally:
        topology.stop()


def refresh_through(topo: Topology) -> None:
    """A miss of the cell through nginx (its entry and stale copy deleted first)."""
    direct = redis.RedisCluster.from_url(topo.redis_url)
    try:
        direct.delete(CLUSTER_KEY, f"stale:{CLUSTER_KEY}")
        assert "errors" not in graphql(topo.url, CURRENT, PARIS).json()
    finally:
        direct.close()


@pytest.mark.parametrize(("mode", "path"), [("distinct", "/graphql"), ("single", "/graphql/stream")])
def test_graphql_sse_client_through_nginx(topo: Topology, mode: str, path: str) -> None:
    for _ in range(3):  # single connections: each reservation's token routes to one instance or the other
        process = sse_client(topo.url + path, mode, WEATHER, 2)
        first, second = results(process, 2, lambda: refresh_through(topo))
        assert second["data"]["weatherUpdates"]["fetchedAt"] > first["data"]["weatherUpdates"]["fetchedAt"]
    [answer] = results(sse_client(topo.url + path, mode, CURRENT, 5), 1)
    assert answer["data"]["current"]["temperature"] is not None


def test_an_event_stream_through_the_edge_is_neither_cached_nor_buffered(topo: Topology) -> None:
    params = {"query": CURRENT, "variables": json.dumps(PARIS)}
    # a JSON answer of the same URL that the edge keeps
    for _ in range(3):
        kept = httpx.get(f"{topo.url}/graphql", params=params, timeout=10)
        if kept.headers.get("x-cache-status") == "HIT":
            break
        time.sleep(0.2)
    assert kept.headers.get("x-cache-status") == "HIT", kept.headers

    async def stream() -> tuple[httpx.Headers, list[str]]:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"{topo.url}/graphql", params=params, headers=EVENT_STREAM) as response,
        ):
            events = EventReader(response)
            return response.headers, [(await events.next()).event, (await events.next()).event]

    headers, events = asyncio.run(stream())
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("x-cache-status") in (None, "", "BYPASS")
    assert events == ["next", "complete"]

    async def subscription() -> float:
        """How long the first event of a subscription (which never ends) takes: nothing holds it back."""
        body = {"query": WEATHER, "variables": PARIS}
        started = time.monotonic()
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("POST", f"{topo.url}/graphql", json=body, headers=EVENT_STREAM) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            assert (await EventReader(response).next(timeout=5)).event == "next"
            return time.monotonic() - started

    assert asyncio.run(subscription()) < 5
