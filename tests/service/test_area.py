"""A map: a box's cells over GraphQL, through a real server, Redis and the simulator over HTTP.

`currentArea` answers every cell of a box, its hits from one read and its misses in one
multi-location upstream request; `weatherUpdatesInArea` pushes each cell's refresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env, spell_key
from tests.wsclient import GraphQLSocket

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


def test_boxes_too_large_or_out_of_order_are_bad_user_input(server: Server, clean: Simulator) -> None:
    for box, says in (
        ({"s": 10.0, "w": 10.0, "n": 11.0, "e": 11.0}, "the box holds 121 cells of 0.1 degrees; at most 100 cells"),
        ({"s": 11.0, "w": 10.0, "n": 10.0, "e": 11.0}, "south must not exceed north"),
        ({"s": 10.0, "w": 179.9, "n": 10.1, "e": -179.9}, "a box does not cross the antimeridian"),
        ({"s": 10.0, "w": 10.0, "n": 95.0, "e": 11.0}, "north must be between -90 and 90"),
    ):
        answer = body(graphql(server.url, AREA, box))
        [error] = answer["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and says in error["message"], error
        assert error["path"] == ["currentArea"] and answer["data"] is None
    assert clean.stats()["requests"] == 0


def test_a_bad_location_in_the_answer_spoils_only_its_own_cell(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    clean.configure(corrupt="nulls", corrupt_location=2)  # the third cell asked: 45.7, 5.0
    answer = body(graphql(server.url, AREA, LYON))
    [error] = answer["errors"]
    assert error["path"] == ["currentArea", 2] and error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert error["extensions"]["cell"] == {"lat": 45.7, "lon": 5.0}
    area = answer["data"]["currentArea"]
    assert area[2] is None and all(item["cached"] is False for i, item in enumerate(area) if i != 2)
    assert cells([item for item in area if item]) == [cell for i, cell in enumerate(LYON_CELLS) if i != 2]
    assert redis_client.exists("weather:lat:45.7:lon:5.0", "stale:weather:lat:45.7:lon:5.0") == 0, "never cached"
    assert redis_client.exists("weather:lat:45.7:lon:4.9") == 1
    # once the upstream answers it right, only that cell is asked for
    clean.configure(corrupt=None, corrupt_location=None)
    again = body(graphql(server.url, AREA, LYON))
    assert "errors" not in again and again["data"]["currentArea"][2]["cached"] is False
    assert [request["locations"] for request in clean.stats()["last_requests"]] == [12, 1]


@pytest.fixture(scope="module")
def frugal(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A server whose clients may read 30 entries a minute and spend 6 weighted calls a minute."""
    env = server_env(
        redis_url,
        simulator,
        rate_limit_per_minute=30,
        upstream_budget_per_minute=100,
        upstream_client_share_per_minute=0.06,
        upstream_budget_wait_seconds=0,
    )
    srv = Server(env)
    yield srv
    srv.stop()


def test_a_box_is_charged_one_read_a_cell(server: Server, frugal: Server, clean: Simulator) -> None:
    assert "errors" not in body(graphql(server.url, AREA, LYON))  # cached by a server without shares
    reader = {"x-client-id": "map-reader"}
    # a box may hold no more cells than a client may read in a minute
    [error] = body(graphql(frugal.url, AREA, {"s": 45.0, "w": 4.0, "n": 45.5, "e": 4.5}, headers=reader))["errors"]
    assert (
        error["extensions"]["code"] == "BAD_USER_INPUT"
        and "holds 36 cells" in error["message"]
        and "at most 30 cells" in error["message"]
    )
    for _ in range(2):  # 2 + 12 + 12 reads (the refused box charged nothing)
        assert "errors" not in body(graphql(frugal.url, AREA, LYON, headers=reader))
    refused = body(graphql(frugal.url, AREA, LYON, headers=reader))
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1
    assert "12 cells" in error["message"] and refused["data"] is None
    # what is left of the minute still answers a single read
    one = graphql(frugal.url, CURRENT, {"lat": 45.8, "lon": 4.9}, headers=reader)
    assert one.status_code == 200 and one.json()["data"]["current"]["cached"] is True


def test_past_its_share_a_box_answers_what_is_cached_and_rate_limited_cells(frugal: Server, clean: Simulator) -> None:
    reader = {"x-client-id": "map-spender"}
    answer = body(graphql(frugal.url, AREA, LYON, headers=reader))
    # its share (6 weighted calls) has room for half of the twelve cold cells: fetched in one request
    assert [request["locations"] for request in clean.stats()["last_requests"]] == [6]
    area, errors = answer["data"]["currentArea"], answer["errors"]
    assert [item is not None for item in area] == [True] * 6 + [False] * 6
    assert [error["path"] for error in errors] == [["currentArea", i] for i in range(6, 12)]
    assert {error["extensions"]["code"] for error in errors} == {"RATE_LIMITED"}
    assert all(error["extensions"]["retryAfter"] >= 1 for error in errors)
    assert [error["extensions"]["cell"] for error in errors] == LYON_CELLS[6:]
    # again: the six from the cache, the others still refused; nothing more asked upstream
    again = body(graphql(frugal.url, AREA, LYON, headers=reader))
    assert [item["cached"] for item in again["data"]["currentArea"][:6]] == [True] * 6
    assert len(again["errors"]) == 6 and clean.stats()["requests"] == 1


SUBSCRIPTION = """subscription($s: Float!, $w: Float!, $n: Float!, $e: Float!) {
  weatherUpdatesInArea(south: $s, west: $w, north: $n, east: $e) { fetchedAt cached cell { lat lon } }
}"""


@pytest.mark.topologies
async def test_the_subscription_yields_every_cell_then_a_cells_refresh(
    server: Server, clean: Simulator, redis_client: redis.Redis, topology: str
) -> None:
    box = {"s": 45.7, "w": 4.8, "n": 45.8, "e": 4.9}  # 2 x 2 cells
    async with GraphQLSocket(server.url) as socket:
        await socket.init()
        await socket.subscribe("map", SUBSCRIPTION, box)
        first = [(await socket.data())["data"]["weatherUpdatesInArea"] for _ in range(4)]
        assert cells(first) == [
            {"lat": 45.7, "lon": 4.8},
            {"lat": 45.7, "lon": 4.9},
            {"lat": 45.8, "lon": 4.8},
            {"lat": 45.8, "lon": 4.9},
        ]
        assert clean.stats()["requests"] == 1, "the box's misses in one request"
        # one cell of the box refreshes (a miss elsewhere fetches and announces it)
        key = spell_key("weather:lat:45.8:lon:4.8", topology)
        redis_client.delete(key, f"stale:{key}")
        assert graphql(server.url, CURRENT, {"lat": 45.8, "lon": 4.8}).json()["data"]["current"]["cached"] is False
        update = (await socket.data())["data"]["weatherUpdatesInArea"]
        assert update["cell"] == {"lat": 45.8, "lon": 4.8} and update["fetchedAt"] > first[2]["fetchedAt"]
        await socket.stop("map")
