"""A failing upstream: precise errors, nothing cached from a bad answer, stale when allowed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env

QUERY = "{ current(lat: 52.52, lon: 13.41) { temperature cached stale } }"


@pytest.fixture(scope="module")
def short_ttl_server(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    # its clock runs 300x: the upstream's next 15-minute step comes within 3 real seconds
    srv = Server(server_env(redis_url, simulator, weather_ttl_seconds=60, upstream_timeout_seconds=1, clock_speed=300))
    yield srv
    srv.stop()


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert response.status_code == 200 and body["data"] is None, body
    [error] = body["errors"]
    assert "Traceback" not in error["message"]
    return error["extensions"]["code"]


@pytest.mark.parametrize(
    "knobs",
    [
        {"forced_status": 500},
        {"forced_status": 502},
        {"forced_status": 429},
        {"error_rate": 1.0},
        {"latency_ms": 1500},  # beyond the 1 s upstream timeout
    ],
    ids=["500", "502", "429", "garbage-or-fault", "timeout"],
)
def test_failures_are_upstream_unavailable_and_cache_nothing(
    short_ttl_server: Server, clean: Simulator, redis_client: redis.Redis, knobs: dict
) -> None:
    clean.configure(**knobs)
    assert code_of(graphql(short_ttl_server.url, QUERY)) == "UPSTREAM_UNAVAILABLE"
    assert redis_client.keys("*weather:*") == []
    rest = httpx.get(f"{short_ttl_server.url}/api/v1/weather", params={"lat": 52.52, "lon": 13.41})
    assert rest.status_code == 503 and rest.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    health = httpx.get(f"{short_ttl_server.url}/health").json()
    assert health["upstream"] == "failing" and health["status"] == "degraded"
    # the process keeps serving: once the upstream recovers, so does the answer
    clean.configure(forced_status=None, error_rate=0, latency_ms=0)
    recovered = graphql(short_ttl_server.url, QUERY).json()
    assert recovered["data"]["current"]["cached"] is False
    assert httpx.get(f"{short_ttl_server.url}/health").json()["upstream"] == "ok"


def test_expired_entry_is_served_stale_when_the_upstream_fails(short_ttl_server: Server, clean: Simulator) -> None:
    fresh = graphql(short_ttl_server.url, QUERY).json()["data"]["current"]
    time.sleep(3.5)  # past its TTL and past the step after it: a refresh is due
    clean.configure(forced_status=503)
    stale = graphql(short_ttl_server.url, QUERY).json()["data"]["current"]
    assert stale == {"temperature": fresh["temperature"], "cached": True, "stale": True}
    clean.configure(forced_status=None)
    refreshed = graphql(short_ttl_server.url, QUERY).json()["data"]["current"]
    assert refreshed["stale"] is False and refreshed["cached"] is False
