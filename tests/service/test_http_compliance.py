"""GraphQL over HTTP as third-party clients see it: GraphiQL, REST, health (the graphql-http audit suite,
run with Node.js, is tests/system/test_graphql_http_audit.py)."""

from __future__ import annotations

import httpx

from tests.conftest import Server, Simulator


def test_graphiql_is_served_from_the_server_itself(server: Server) -> None:
    page = httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text and "http://" not in page.text
    for asset in ("graphiql.min.js", "graphiql.min.css"):
        assert f"/graphiql/{asset}" in page.text
        assert httpx.get(f"{server.url}/graphiql/{asset}").status_code == 200


def test_rest_weather_miss_then_hit(server: Server, clean: Simulator) -> None:
    url = f"{server.url}/api/v1/weather"
    first = httpx.get(url, params={"lat": 40.7128, "lon": -74.0060}).json()
    second = httpx.get(url, params={"lat": 40.7128, "lon": -74.0060}).json()
    assert first["cached"] is False and second["cached"] is True
    assert first["location"] == {"lat": 40.7, "lon": -74.0}
    assert second["current"] == first["current"]
    assert isinstance(first["current"]["temperature"], float)


def test_rest_forecast_honours_days(server: Server, clean: Simulator) -> None:
    body = httpx.get(f"{server.url}/api/v1/forecast", params={"lat": 19.4326, "lon": -99.1332, "days": 5}).json()
    assert len(body["daily"]) == 5 and body["cached"] is False
    assert body["daily"][0]["temperature_max"] >= body["daily"][0]["temperature_min"]


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(f"{server.url}/ready").status_code == 200
    health = httpx.get(f"{server.url}/health").json()
    assert health["redis"] == "ok" and health["status"] in ("ok", "degraded")
