"""Faults in what the service reads back: corrupt, foreign and wrong-type keys, an interrupted cycle.

What comes back from Redis is checked like any input. Each test writes the bad
data a user would meet (another release's format, garbage, valid JSON of
another shape, a key of another type) under the real keys of a running server,
on a single server and on a Cluster, and checks that it is a miss (refetched,
overwritten, counted), never a 5xx, and that one bad key never switches Redis
off for the whole instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env, wait_until
from tests.system.test_economy import counted
from tests.wsclient import GraphQLSocket

pytestmark = pytest.mark.topologies

NEW_YORK = {"lat": 40.7128, "lon": -74.006}
QUERIES = {
    "weather": "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature time cached } }",
    "forecast": "query($lat: Float!, $lon: Float!) { forecast(lat: $lat, lon: $lon) { cached daily { date temperatureMax } } }",
    "forecast-hourly": (
        "query($lat: Float!, $lon: Float!) { forecast(lat: $lat, lon: $lon) { cached hourly(hours: 24) { time temperature } } }"
    ),
}
KEYS = {
    "weather": "weather:lat:40.7:lon:-74.0",
    "forecast": "forecast:lat:40.7:lon:-74.0:days:16",
    "forecast-hourly": "forecast:lat:40.7:lon:-74.0:days:16:hourly",
}
BAD_ENTRIES: dict[str, Any] = {
    "garbage": b"\x00garbage",
    "older release": b"1700000000000 1700000000000 1700000000000\n{}",
    "foreign json": b'{"temperature": "warm", "source": "another tool"}',
    "same format, wrong shape": b'wn2 99999999999999 1 99999999999999\n{"time": 12, "date": "not-a-date"}',
    "wrong type": None,  # a list under the key
}


@pytest.fixture(scope="module")
def faulty(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(server_env(redis_url, simulator))
    yield srv
    srv.stop()


def _first_part(body: dict[str, Any]) -> Any:
    data = body["data"]
    return data["current"] if "current" in data else data["forecast"]


@pytest.mark.parametrize("bad", BAD_ENTRIES)
@pytest.mark.parametrize("part", QUERIES)
def test_an_entry_that_does_not_decode_is_a_miss_refetched_and_overwritten(
    faulty: Server, clean: Simulator, redis_client: redis.Redis, spell: Any, part: str, bad: str
) -> None:
    key, stale = spell(KEYS[part]), spell("stale:" + KEYS[part])
    warm = graphql(faulty.url, QUERIES[part], NEW_YORK).json()
    assert "errors" not in warm, warm
    undecodable = counted(faulty, "weathernote_cache_undecodable")
    for bad_key in (key, stale):  # the entry and its last good copy: nothing usable is left
        if BAD_ENTRIES[bad] is None:
            redis_client.delete(bad_key)
            redis_client.rpush(bad_key, "a", "b")
        else:
            redis_client.set(bad_key, BAD_ENTRIES[bad], ex=600)
    response = graphql(faulty.url, QUERIES[part], NEW_YORK)
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    assert _first_part(body)["cached"] is False  # refetched
    for repaired in (key, stale):  # overwritten
        assert redis_client.type(repaired) == b"string" and redis_client.get(repaired).startswith(b"wn2 ")
    again = graphql(faulty.url, QUERIES[part], NEW_YORK).json()
    assert _first_part(again)["cached"] is True
    if BAD_ENTRIES[bad] is not None:  # MGET reads a key of another type as missing: not counted
        assert counted(faulty, "weathernote_cache_undecodable") == undecodable + 2


def test_an_undecodable_entry_is_repaired_from_its_last_good_copy_without_an_upstream_call(
    faulty: Server, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    key = spell(KEYS["weather"])
    graphql(faulty.url, QUERIES["weather"], NEW_YORK)
    redis_client.set(key, b"\x00garbage", ex=600)
    body = graphql(faulty.url, QUERIES["weather"], NEW_YORK).json()
    assert "errors" not in body and body["data"]["current"]["temperature"] is not None
    assert clean.stats()["served"] == 1  # the stale copy could not have changed: renewed, not refetched
    assert redis_client.get(key).startswith(b"wn2 ")


@pytest.mark.parametrize("path", ["/api/v1/weather", "/api/v1/forecast"])
def test_rest_survives_a_corrupt_entry(
    faulty: Server, clean: Simulator, redis_client: redis.Redis, spell: Any, path: str
) -> None:
    params = {"lat": NEW_YORK["lat"], "lon": NEW_YORK["lon"]}
    assert httpx.get(f"{faulty.url}{path}", params=params).status_code == 200
    key = KEYS["weather"] if "weather" in path else KEYS["forecast"]
    for bad_key in (spell(key), spell("stale:" + key)):
        redis_client.set(bad_key, b"\x00garbage", ex=600)
    response = httpx.get(f"{faulty.url}{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False


async def test_a_subscription_survives_a_corrupt_entry_and_announcement(
    faulty: Server, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    key = spell(KEYS["weather"])
    graphql(faulty.url, QUERIES["weather"], NEW_YORK)
    redis_client.set(key, b"\x00garbage", ex=600)
    redis_client.set(spell("stale:" + KEYS["weather"]), b"\x00garbage", ex=600)
    subscription = (
        "subscription($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature fetchedAt } }"
    )
    async with GraphQLSocket(faulty.url) as socket:
        await socket.init()
        await socket.subscribe("w", subscription, NEW_YORK)
        first = (await socket.data())["data"]["weatherUpdates"]
        assert first["temperature"] is not None
        # a foreign announcement on the cell's channel is dropped, the next real one arrives
        channel = f"updates:{key}"
        if isinstance(redis_client, redis.RedisCluster):
            redis_client.execute_command(
                "SPUBLISH", channel, b"\x00garbage", target_nodes=redis_client.get_node_from_key(channel)
            )
        else:
            redis_client.publish(channel, b"\x00garbage")
        redis_client.delete(key, spell("stale:" + KEYS["weather"]))
        graphql(faulty.url, QUERIES["weather"], NEW_YORK)
        update = (await socket.data(timeout=10))["data"]["weatherUpdates"]
        assert update["fetchedAt"] > first["fetchedAt"]


def test_a_key_of_the_wrong_type_is_that_keys_problem_not_redis_being_down(
    faulty: Server, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    for key in (spell(KEYS["weather"]), spell("stale:" + KEYS["weather"]), spell("lock:" + KEYS["weather"])):
        redis_client.rpush(key, "x")
    for _ in range(5):
        response = graphql(faulty.url, QUERIES["weather"], NEW_YORK)
        assert response.status_code == 200 and "errors" not in response.json()
    health = httpx.get(f"{faulty.url}/health").json()
    assert health["redis"] == "ok" and health["breaker"] == "closed", health


def test_a_rate_limit_key_of_the_wrong_type_is_reset_and_limits_still_hold(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=5))
    try:
        headers = {"x-client-id": "wrong-type-client"}
        assert graphql(srv.url, QUERIES["weather"], NEW_YORK, headers=headers).status_code == 200
        [key] = [k for k in redis_client.scan_iter("rate_limit:hash:*")]
        redis_client.delete(key)
        redis_client.set(key, "not a sorted set")
        statuses = [graphql(srv.url, QUERIES["weather"], NEW_YORK, headers=headers).status_code for _ in range(7)]
        # the bad key costs one free pass, then the window counts again from zero
        assert statuses[:6] == [200] * 6 and statuses[6] == 429, statuses
        assert httpx.get(f"{srv.url}/health").json()["breaker"] == "closed"
    finally:
        srv.stop()


def test_an_interrupted_start_up_cycle_does_not_count_as_done(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    clean.configure(forced_status=503)
    first = Server(server_env(redis_url, simulator, prewarm_interval_seconds=900))
    try:
        wait_until(lambda: counted(first, "weathernote_prewarm_cycles") >= 1, timeout=20)
    finally:
        first.stop()
    assert redis_client.get("prewarm:last_cycle") is None  # the failed cycle did not count
    clean.configure(forced_status=None)
    second = Server(server_env(redis_url, simulator, prewarm_interval_seconds=900))
    try:
        # the next instance runs the cycle at once, not a period later: New York is warm
        # without anyone asking for it
        wait_until(lambda: redis_client.exists(spell(KEYS["weather"])) == 1, timeout=30)
        wait_until(lambda: redis_client.get("prewarm:last_cycle") is not None, timeout=10)  # and it counts
    finally:
        second.stop()
