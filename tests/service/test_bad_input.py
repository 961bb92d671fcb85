"""Bad input gets a precise error, never a 500, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, Simulator, graphql


def codes(response: httpx.Response) -> list[str | None]:
    return [e.get("extensions", {}).get("code") for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "args",
    [
        "lat: 90.5, lon: 0",
        "lat: -91, lon: 0",
        "lat: 0, lon: 180.5",
        "lat: 0, lon: -200",
        "lat: 1e999, lon: 0",
    ],
)
def test_out_of_range_coordinates_are_bad_user_input(server: Server, clean: Simulator, args: str) -> None:
    response = graphql(server.url, f"{{ current({args}) {{ temperature }} }}")
    assert response.status_code == 200
    assert codes(response) == ["BAD_USER_INPUT"]
    assert response.json()["data"] is None
    assert clean.stats()["requests"] == 0


@pytest.mark.parametrize("days", [0, 17, -1])
def test_days_outside_1_to_16_are_bad_user_input(server: Server, clean: Simulator, days: int) -> None:
    response = graphql(server.url, f"{{ forecast(lat: 1, lon: 1, days: {days}) {{ daily {{ date }} }} }}")
    assert codes(response) == ["BAD_USER_INPUT"]


def test_hours_beyond_the_days_asked_are_bad_user_input(server: Server, clean: Simulator) -> None:
    response = graphql(server.url, "{ forecast(lat: 1, lon: 1, days: 1) { hourly(hours: 25) { time } } }")
    assert codes(response) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ('{ current(lat: "abc", lon: 1) { temperature } }', None),
        ("{ current(lat: 1) { temperature } }", None),
        ("{ current(lat: 1, lon: 1) { nope } }", None),
        ("query($lat: Float!) { current(lat: $lat, lon: 1) { temperature } }", {"lat": "north"}),
        ("{ current(lat: 1, lon: 1) { temperature ", None),
        ("subscription { nope }", None),
    ],
)
def test_malformed_graphql_is_a_request_error(server: Server, query: str, variables: dict | None) -> None:
    response = graphql(server.url, query, variables)
    assert response.status_code == 200  # application/json: errors travel in the body
    body = response.json()
    assert body["errors"] and body.get("data") is None
    assert all("Traceback" not in e["message"] for e in body["errors"])
    strict = graphql(server.url, query, variables, headers={"accept": "application/graphql-response+json"})
    assert strict.status_code == 400 and "data" not in strict.json()


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"query": 42}', "application/json", 400),
        (b'{"query": "{ __typename }", "variables": "x"}', "application/json", 400),
        (b"query=%7B__typename%7D", "application/x-www-form-urlencoded", 415),
        (b'{"query": "{ __typename }"}', "", 415),
    ],
)
def test_malformed_http_requests_get_4xx(server: Server, content: bytes, content_type: str, status: int) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{server.url}/graphql", content=content, headers=headers)
    assert response.status_code == status
    assert response.json()["errors"][0]["message"]


def test_mutation_over_get_is_refused_and_get_queries_work(server: Server, clean: Simulator) -> None:
    ok = httpx.get(f"{server.url}/graphql", params={"query": "{ __typename }"})
    assert ok.status_code == 200 and ok.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "params",
    [
        {"lat": "abc", "lon": "1"},
        {"lat": "nan", "lon": "1"},
        {"lat": "inf", "lon": "1"},
        {"lat": "91", "lon": "1"},
        {"lon": "1"},
        {"lat": "1", "lon": "1", "days": "17"},
        {"lat": "1", "lon": "1", "days": "two"},
    ],
)
def test_rest_bad_input_is_400(server: Server, clean: Simulator, params: dict[str, str]) -> None:
    path = "/api/v1/forecast" if "days" in params else "/api/v1/weather"
    response = httpx.get(f"{server.url}{path}", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"
    assert clean.stats()["requests"] == 0


def test_server_still_serves_after_bad_input(server: Server, clean: Simulator) -> None:
    response = graphql(server.url, "{ current(lat: 10, lon: 10) { cached } }")
    assert response.json() == {"data": {"current": {"cached": False}}}
