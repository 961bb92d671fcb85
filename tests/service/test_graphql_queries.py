"""Weather over GraphQL: cache-aside through a real server, Redis and the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql

CURRENT = (
    "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached stale cell { lat lon } } }"
)
NYC = {"lat": 40.7128, "lon": -74.0060}


def data(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.topologies
def test_miss_then_hit_with_the_seed_key_and_ttl(
    server: Server, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    first = data(graphql(server.url, CURRENT, NYC))["current"]
    assert first["cached"] is False and first["stale"] is False
    assert first["cell"] == {"lat": 40.7, "lon": -74.0}
    second = data(graphql(server.url, CURRENT, {"lat": 40.68, "lon": -74.04}))["current"]
    assert second["cached"] is True
    assert second["temperature"] == first["temperature"]
    assert clean.stats()["served"] == 1
    # at most the configured 600 s, and no longer than until the upstream's next 15-minute step
    ttl = redis_client.ttl(spell("weather:lat:40.7:lon:-74.0"))
    assert 0 < ttl <= 600
    fmt, *times = redis_client.get(spell("weather:lat:40.7:lon:-74.0")).split(b"\n")[0].split()
    assert fmt == b"wn2"
    fresh_until, fetched_at, next_update = (int(v) for v in times)
    assert fresh_until <= next_update and fresh_until - fetched_at <= 600_000


@pytest.mark.topologies
def test_two_hundred_concurrent_cold_requests_cost_one_upstream_call(server: Server, clean: Simulator) -> None:
    clean.configure(latency_ms=300)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            body = {"query": CURRENT, "variables": {"lat": 51.5072, "lon": -0.1276}}
            return await asyncio.gather(*(client.post(f"{server.url}/graphql", json=body) for _ in range(200)))

    responses = asyncio.run(burst())
    temperatures = {data(r)["current"]["temperature"] for r in responses}
    assert len(temperatures) == 1
    assert clean.stats()["requests"] == 1


@pytest.mark.topologies
def test_current_query_reads_and_fetches_only_the_current_entry(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    data(graphql(server.url, CURRENT, NYC))
    assert redis_client.keys("forecast:*") == []
    [request] = clean.stats()["last_requests"]
    assert request["current"] and not request["daily"] and not request["hourly"]


@pytest.mark.topologies
def test_forecast_fetches_only_the_parts_selected(
    server: Server, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    daily_only = "{ forecast(lat: 48.8566, lon: 2.3522, days: 3) { timezone daily { date temperatureMax condition { description } } } }"
    forecast = data(graphql(server.url, daily_only))["forecast"]
    assert len(forecast["daily"]) == 3
    assert redis_client.exists(spell("forecast:lat:48.9:lon:2.4:days:16")) == 1
    assert redis_client.exists(spell("forecast:lat:48.9:lon:2.4:days:16:hourly")) == 0
    assert redis_client.exists(spell("weather:lat:48.9:lon:2.4")) == 0
    [request] = clean.stats()["last_requests"]
    assert request["daily"] and not request["hourly"] and not request["current"]

    hourly_too = "{ forecast(lat: 48.8566, lon: 2.3522, days: 2) { cached daily { date } hourly(hours: 30) { time temperature } } }"
    forecast = data(graphql(server.url, hourly_too))["forecast"]
    assert len(forecast["hourly"]) == 30 and len(forecast["daily"]) == 2
    assert forecast["cached"] is False  # the hourly part was a miss
    last = clean.stats()["last_requests"][-1]
    assert last["hourly"] and not last["daily"], "the cached daily part must not be fetched again"


def test_every_days_value_shares_one_entry(server: Server, clean: Simulator) -> None:
    query = "query($d: Int) { forecast(lat: 35.6762, lon: 139.6503, days: $d) { cached daily { date } } }"
    for days in (1, 7, 16):
        forecast = data(graphql(server.url, query, {"d": days}))["forecast"]
        assert len(forecast["daily"]) == days
    assert clean.stats()["served"] == 1


def test_fragments_and_skip_are_honoured_by_field_selection(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    query = """
      query($skip: Boolean!) {
        forecast(lat: -33.8688, lon: 151.2093) { ...Parts }
      }
      fragment Parts on Forecast { timezone hourly(hours: 3) @skip(if: $skip) { temperature } }
    """
    data(graphql(server.url, query, {"skip": True}))
    assert redis_client.exists("forecast:lat:-33.9:lon:151.2:days:16:hourly") == 0
    assert redis_client.exists("forecast:lat:-33.9:lon:151.2:days:16") == 1
    data(graphql(server.url, query, {"skip": False}))
    assert redis_client.exists("forecast:lat:-33.9:lon:151.2:days:16:hourly") == 1


def test_imperial_units_convert_from_the_same_entry(server: Server, clean: Simulator) -> None:
    query = """query($u: Units) { current(lat: 55.7558, lon: 37.6173, units: $u) {
        temperature windSpeed precipitation pressure units } }"""
    metric = data(graphql(server.url, query, {"u": "METRIC"}))["current"]
    imperial = data(graphql(server.url, query, {"u": "IMPERIAL"}))["current"]
    assert imperial["units"] == "IMPERIAL"
    assert imperial["temperature"] == pytest.approx(metric["temperature"] * 9 / 5 + 32, abs=0.06)
    assert imperial["windSpeed"] == pytest.approx(metric["windSpeed"] / 1.609344, abs=0.06)
    assert imperial["pressure"] == metric["pressure"]
    assert clean.stats()["served"] == 1


def test_condition_describes_the_weather_code(server: Server, clean: Simulator) -> None:
    query = (
        "{ current(lat: 1.3521, lon: 103.8198) { weatherCode condition { code description } isDay time fetchedAt } }"
    )
    current = data(graphql(server.url, query))["current"]
    assert current["condition"]["code"] == current["weatherCode"]
    assert current["condition"]["description"] not in ("", "Unknown")
    assert current["time"][-6] in "+-"  # local time with its UTC offset


def test_a_planned_documents_variables_are_checked_whatever_it_answered_before(
    server: Server, clean: Simulator
) -> None:
    """The endpoint skips coercing a plan's variables it bound to before (its key holds them all):
    other values, in the same cell, are still checked, and refused before anything is read."""
    query = "query($lat: Float!, $u: Units, $d: Int) { forecast(lat: $lat, lon: 2.35, units: $u, days: $d) { days timezone } }"
    for _ in range(2):  # the second time from what the first checked
        assert data(graphql(server.url, query, {"lat": 48.87, "u": "IMPERIAL", "d": 2}))["forecast"]["days"] == 2
    for variables in ({"lat": 48.86, "u": "KELVIN", "d": 2}, {"lat": 48.86, "u": "IMPERIAL", "d": "two"}):
        body = graphql(server.url, query, variables).json()
        assert "data" not in body, body
        assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"], body
    refused = graphql(server.url, query, {"lat": 48.86, "u": "IMPERIAL", "d": 40}).json()
    assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", refused
    assert clean.stats()["served"] == 1
