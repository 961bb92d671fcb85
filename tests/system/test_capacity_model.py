"""The capacity model's Redis constants (docs/capacity.md) are what the code does.

docs/capacity.md sizes Redis from the commands a request costs, measured by bench/capacity.py.
Those counts are deterministic, so they are checked here exactly, against real servers: a
cached request is one rate-limit script and one read on a single server (the hot path's one
round trip), two scripts (one per layer: their keys live in different slots) and one read on a
Cluster; and a cold miss announces its refresh once. A new Redis command on the request path
fails this test, and the document's figures with it. Counts come from the servers' own INFO
commandstats (commands run inside the scripts included), summed over the primaries.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, server_env

pytestmark = pytest.mark.topologies

REQUESTS = 40
CURRENT = (
    "query CurrentWeather($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) "
    "{ cell { lat lon } temperature cached fetchedAt } }"
)
# per cached request: (single server, Cluster); the script's own commands marked as such
CACHED = {
    "evalsha": (1, 2),  # the rate limit: both layers in one script, or one script per layer
    "mget": (1, 1),  # the cell's entry
    "time": (1, 2),  # inside the script: Redis's clock, once per script
    "zadd": (2, 2),  # inside the script: the request recorded in the client's and the address's window
}


@pytest.fixture
def primaries(topology: str, request: pytest.FixtureRequest) -> Iterator[list[redis.Redis]]:
    """A plain client of every primary (of the one server, or of the Cluster's three)."""
    if topology == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        urls = [node.url for node in cluster.nodes if cluster.role(node) == "role:master"]
    else:
        urls = [request.getfixturevalue("redis_server").url]
    clients = [redis.Redis.from_url(url) for url in urls]
    yield clients
    for client in clients:
        client.close()


def commands(clients: list[redis.Redis]) -> Counter[str]:
    """Calls per command over the primaries (INFO's own left out)."""
    totals: Counter[str] = Counter()
    for client in clients:
        stats: dict[str, Any] = client.info("commandstats")
        for name, value in stats.items():
            if name != "cmdstat_info":
                totals[name.removeprefix("cmdstat_")] += int(value["calls"])
    return totals


def ask(client: httpx.Client, url: str, lat: float, lon: float, phone: int) -> dict[str, Any]:
    body = {"query": CURRENT, "operationName": "CurrentWeather", "variables": {"lat": lat, "lon": lon}}
    response = client.post(
        f"{url}/graphql",
        content=json.dumps(body),
        headers={"content-type": "application/json", "x-client-id": f"phone-{phone}"},
    )
    answer: dict[str, Any] = response.json()
    assert "errors" not in answer, answer
    current: dict[str, Any] = answer["data"]["current"]
    return current


def test_redis_commands_per_request_match_the_model(
    topology: str, redis_url: str, clean: Any, primaries: list[redis.Redis]
) -> None:
    column = 1 if topology == "cluster" else 0
    server = Server(server_env(redis_url, clean))
    try:
        with httpx.Client(timeout=10) as client:
            assert ask(client, server.url, 48.85, 2.35, 0)["cached"] is False  # the cell filled
            before = commands(primaries)
            answers = [ask(client, server.url, 48.85, 2.35, phone) for phone in range(REQUESTS)]
            after = commands(primaries)
            assert all(answer["cached"] for answer in answers)
            spent = after - before
            for command, expected in CACHED.items():
                assert spent[command] == REQUESTS * expected[column], (command, spent)
            # nothing else runs once per request: the rest is background (counts flushed every few seconds)
            others = {name: calls for name, calls in spent.items() if name not in CACHED and calls >= REQUESTS / 2}
            assert set(others) <= {"zremrangebyscore", "zcard", "zrange", "pexpire"}, others  # the script's own

            # a cold cell: one miss, one upstream call, one announcement of the refresh
            calls = clean.stats()["requests"]
            before = commands(primaries)
            assert ask(client, server.url, -33.87, 151.21, 0)["cached"] is False
            spent = commands(primaries) - before
            assert clean.stats()["requests"] == calls + 1
            assert spent["spublish" if topology == "cluster" else "publish"] == 1, spent
    finally:
        server.stop()
