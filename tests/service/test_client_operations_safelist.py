"""The app's operations (clients/operations): listed in a current manifest, and run by a server in safelist mode
over HTTP (by hash and by text) and WebSocket; nothing else runs.

What can be checked in process (the operations against the schema, the manifest's format and ids) is in
tests/unit/test_client_operations.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, Simulator, graphql, server_env
from tests.unit.test_client_operations import MANIFEST, OPERATIONS, by_type, sha256
from tests.wsclient import GraphQLSocket

PARIS = {"lat": 48.8566, "lon": 2.3522}
VARIABLES: dict[str, dict[str, Any]] = {
    "CurrentWeather": PARIS,
    "Forecast": {**PARIS, "days": 3, "hours": 30},
    "WeatherUpdates": {**PARIS, "units": "IMPERIAL"},
    "ForecastUpdates": {**PARIS, "days": 2, "hours": 6},
    "CurrentArea": {"south": 48.8, "west": 2.3, "north": 48.9, "east": 2.4},
    "WeatherUpdatesInArea": {"south": 48.9, "west": 2.3, "north": 48.9, "east": 2.4, "units": "IMPERIAL"},
}
UNLISTED = "query CurrentWeather($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature } }"


def persisted(sha: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha}}


def first_error_code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


def test_the_manifest_is_current() -> None:
    """Fails when an operation file (or the schema it is checked against) changed without a rebuild."""
    result = subprocess.run(
        [sys.executable, str(OPERATIONS / "build_manifest.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def safelisted(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A server that runs only the committed manifest's operations."""
    srv = Server(server_env(redis_url, simulator, graphql_safelist=MANIFEST))
    yield srv
    srv.stop()


def check_query_data(name: str, data: dict[str, Any]) -> None:
    if name == "CurrentWeather":
        current = data["current"]
        assert current["cell"] == {"lat": 48.9, "lon": 2.4}
        assert isinstance(current["temperature"], float) and current["condition"]["description"]
    elif name == "CurrentArea":
        area = data["currentArea"]
        assert [item["cell"] for item in area] == [
            {"lat": lat, "lon": lon} for lat in (48.8, 48.9) for lon in (2.3, 2.4)
        ]
    else:
        forecast = data["forecast"]
        assert forecast["days"] == 3 and len(forecast["daily"]) == 3 and len(forecast["hourly"]) == 30


@pytest.mark.parametrize("operation", by_type("query"), ids=lambda operation: operation["name"])
@pytest.mark.parametrize("how", ["GET by hash", "POST by hash", "POST by text", "POST by text and hash"])
def test_every_query_runs_in_safelist_mode(
    safelisted: Server, clean: Simulator, operation: dict[str, str], how: str
) -> None:
    variables = VARIABLES[operation["name"]]
    extensions = persisted(operation["id"])
    if how == "GET by hash":
        params = {"variables": json.dumps(variables), "extensions": json.dumps(extensions)}
        response = httpx.get(f"{safelisted.url}/graphql", params=params, timeout=10)
    else:
        payload: dict[str, Any] = {"variables": variables}
        if "hash" in how:
            payload["extensions"] = extensions
        if "text" in how:
            payload["query"] = operation["body"]
        response = httpx.post(f"{safelisted.url}/graphql", json=payload, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    check_query_data(operation["name"], body["data"])


async def first_payload(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with GraphQLSocket(url) as socket:
        await socket.init()
        await socket.send({"type": "subscribe", "id": "1", "payload": payload})
        message = await socket.receive()
        await socket.stop("1")
        return message


@pytest.mark.parametrize("operation", by_type("subscription"), ids=lambda operation: operation["name"])
@pytest.mark.parametrize("how", ["hash", "text"])
async def test_every_subscription_runs_in_safelist_mode(
    safelisted: Server, clean: Simulator, operation: dict[str, str], how: str
) -> None:
    variables = VARIABLES[operation["name"]]
    payload: dict[str, Any] = {"variables": variables}
    if how == "hash":
        payload["extensions"] = persisted(operation["id"])
    else:
        payload["query"] = operation["body"]
    message = await first_payload(safelisted.url, payload)
    assert message["type"] == "next", message
    assert "errors" not in message["payload"], message
    data = message["payload"]["data"]
    if operation["name"] == "WeatherUpdates":
        assert data["weatherUpdates"]["units"] == "IMPERIAL" and data["weatherUpdates"]["fetchedAt"]
    elif operation["name"] == "WeatherUpdatesInArea":
        update = data["weatherUpdatesInArea"]  # the box's first cell
        assert update["cell"] == {"lat": 48.9, "lon": 2.3} and update["units"] == "IMPERIAL"
    else:
        updates = data["forecastUpdates"]
        assert len(updates["daily"]) == 2 and len(updates["hourly"]) == 6


def test_an_unlisted_operation_is_refused_over_http(safelisted: Server, clean: Simulator) -> None:
    assert first_error_code(graphql(safelisted.url, UNLISTED, PARIS).json()) == "PERSISTED_QUERY_NOT_IN_LIST"
    with_hash = {"query": UNLISTED, "variables": PARIS, "extensions": persisted(sha256(UNLISTED))}
    refused = httpx.post(f"{safelisted.url}/graphql", json=with_hash, timeout=10).json()
    assert first_error_code(refused) == "PERSISTED_QUERY_NOT_IN_LIST" and "data" not in refused
    # an unknown hash alone is not found (as with APQ); the text that an APQ client then sends is refused above
    params = {"variables": json.dumps(PARIS), "extensions": json.dumps(persisted(sha256(UNLISTED)))}
    unknown = httpx.get(f"{safelisted.url}/graphql", params=params, timeout=10).json()
    assert first_error_code(unknown) == "PERSISTED_QUERY_NOT_FOUND"


async def test_an_unlisted_subscription_is_refused_over_websocket(safelisted: Server, clean: Simulator) -> None:
    [listed] = [operation for operation in by_type("subscription") if operation["name"] == "WeatherUpdates"]
    reformatted = " ".join(listed["body"].split())  # the same operation, another spelling: not the listed text
    message = await first_payload(safelisted.url, {"query": reformatted, "variables": PARIS})
    assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
