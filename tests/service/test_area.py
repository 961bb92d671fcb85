"""A map: a box's cells over GraphQL, through a real server, Redis and the simulator over HTTP.

`currentArea` answers every cell of a box, its hits from one read and its misses in one
multi-location upstream request; `weatherUpdatesInArea` pushes each cell's refresh.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, spell_key

AREA = """query($s: Float!, $w: Float!, $n: Float!, $e: Float!) {
  currentArea(south: $s, west: $w, north: $n, east: $e) { temperature cached stale cell { lat lon } }
}"""
# 3 x 4 cells around Lyon: 45.7..45.9 by 4.8..5.1, edges included
LYON = {"s": 45.7, "w": 4.8, "n": 45.9, "e": 5.1}
LYON_CELLS = [{"lat": lat, "lon": lon} for lat in (45.7, 45.8, 45.9) for lon in (4.8, 4.9, 5.0, 5.1)]
CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"


def body(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json())


def cells(area: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [item["cell"] for item in area]


@pytest.mark.topologies
def test_a_box_answers_every_cell_its_misses_in_one_upstream_request(
    server: Server, clean: Simulator, redis_client: redis.Redis, topology: str
) -> None:
    # one cell of the box is cached already: it is read, not fetched
    graphql(server.url, CURRENT, {"lat": 45.8, "lon": 4.9})
    clean.reset()
    answer = body(graphql(server.url, AREA, LYON))
    assert "errors" not in answer, answer
    area = answer["data"]["currentArea"]
    assert cells(area) == LYON_CELLS
    assert [item["cached"] for item in area] == [item["cell"] == {"lat": 45.8, "lon": 4.9} for item in area]
    stats = clean.stats()
    assert stats["requests"] == 1 and stats["locations"] == 11
    [request] = stats["last_requests"]
    assert request["current"] and not request["daily"]
    for cell in LYON_CELLS:
        key = spell_key(f"weather:lat:{cell['lat']}:lon:{cell['lon']}", topology)
        assert redis_client.exists(key) == 1
    # again: all twelve from the cache, nothing asked upstream
    again = body(graphql(server.url, AREA, LYON))["data"]["currentArea"]
    assert all(item["cached"] for item in again)
    assert [item["temperature"] for item in again] == [item["temperature"] for item in area]
    assert clean.stats()["requests"] == 1
