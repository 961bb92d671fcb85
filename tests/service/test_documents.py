"""Abusive documents are refused cheaply with QUERY_TOO_COMPLEX; persisted queries and safelists."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, Simulator, graphql, server_env
from tests.wsclient import GraphQLSocket

CURRENT = "{ current(lat: 52.52, lon: 13.41) { temperature } }"


def code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]


def nested_fragments(depth: int) -> str:
    """A document whose depth grows only through fragments."""
    fragments = [f"fragment F{i} on Forecast {{ daily {{ date }} ...F{i + 1} }}" for i in range(depth)]
    return "{ forecast(lat: 1, lon: 1) { ...F0 } }\n" + "\n".join(fragments).replace(f"...F{depth}", "")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("{ forecast(lat: 1, lon: 1) { daily { condition { code } } } }", None),  # depth 4: fine
        ("{ " + " ".join(f"a{i}: current(lat: 1, lon: 1) {{ temperature }}" for i in range(16)) + " }", "aliases"),
        (
            "query { ...A } fragment A on Query { "
            + " ".join(f"x{i}: current(lat: 1, lon: 1) {'{'} b{i}: temperature {'}'}" for i in range(8))
            + " }",
            "aliases",
        ),
        ("{ current(lat: 1, lon: 1) { " + "temperature " * 1200 + "} }", "tokens"),
        ("{ current(lat: 1, lon: 1) { temperature } }" + " " * 17000, "bytes"),
    ],
)
def test_document_limits(server: Server, clean: Simulator, query: str, reason: str | None) -> None:
    response = graphql(server.url, query)
    if reason is None:
        assert "errors" not in response.json(), response.json()
        return
    assert code(response) == "QUERY_TOO_COMPLEX", response.json()
    assert clean.stats()["requests"] == 0, "refused before anything ran"
    strict = graphql(server.url, query, headers={"accept": "application/graphql-response+json"})
    assert strict.status_code == 400 and "data" not in strict.json()


def test_depth_limit_follows_fragments_and_ignores_introspection(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    srv = Server(server_env(redis_url, simulator, graphql_max_depth=3))
    try:
        assert (
            code(graphql(srv.url, "{ forecast(lat: 1, lon: 1) { daily { condition { code } } } }"))
            == "QUERY_TOO_COMPLEX"
        )
        assert (
            code(graphql(srv.url, nested_fragments(1).replace("daily { date }", "daily { condition { code } }")))
            == "QUERY_TOO_COMPLEX"
        )
        introspection = "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"
        assert "errors" not in graphql(srv.url, introspection).json()
    finally:
        srv.stop()


def test_batches(server: Server, clean: Simulator) -> None:
    batch = [{"query": CURRENT}, {"query": "{ __typename }"}]
    response = httpx.post(f"{server.url}/graphql", json=batch)
    assert response.status_code == 200
    first, second = response.json()
    assert first["data"]["current"]["temperature"] is not None and second == {"data": {"__typename": "Query"}}
    too_many = httpx.post(f"{server.url}/graphql", json=[{"query": "{ __typename }"}] * 11)
    assert too_many.status_code == 400 and code(too_many) == "QUERY_TOO_COMPLEX"
    assert httpx.post(f"{server.url}/graphql", json=[]).status_code == 400


@pytest.fixture(scope="module")
def locked_down(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(server_env(redis_url, simulator, graphql_introspection="false", graphql_field_suggestions="false"))
    yield srv
    srv.stop()


def test_introspection_and_suggestions_can_be_switched_off(server: Server, locked_down: Server) -> None:
    introspection = "{ __schema { queryType { name } } }"
    assert "errors" not in graphql(server.url, introspection).json()
    refused = graphql(locked_down.url, introspection).json()
    assert "introspection" in refused["errors"][0]["message"].lower()
    typo = "{ current(lat: 1, lon: 1) { temperatur } }"
    assert "Did you mean" in graphql(server.url, typo).json()["errors"][0]["message"]
    assert "Did you mean" not in graphql(locked_down.url, typo).json()["errors"][0]["message"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_automatic_persisted_queries_over_http(server: Server, clean: Simulator) -> None:
    query = "query Berlin { current(lat: 52.52, lon: 13.41) { temperature cached } }"
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}}
    params = {"extensions": json.dumps(extensions)}
    unknown = httpx.get(f"{server.url}/graphql", params=params)
    assert (
        code(unknown) == "PERSISTED_QUERY_NOT_FOUND"
        and unknown.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    )
    registered = httpx.post(f"{server.url}/graphql", json={"query": query, "extensions": extensions})
    assert registered.json()["data"]["current"]["cached"] is False
    by_hash = httpx.get(f"{server.url}/graphql", params=params)
    assert by_hash.json()["data"]["current"]["cached"] is True
    cache_control = by_hash.headers["cache-control"]
    assert cache_control.startswith("public, max-age=")
    assert 0 < int(cache_control.split("max-age=")[1].split(",")[0]) <= 900, "until the next 15-minute step"
    mismatch = httpx.post(f"{server.url}/graphql", json={"query": CURRENT, "extensions": extensions})
    assert mismatch.status_code == 400


def test_persisted_queries_over_websocket(server: Server, clean: Simulator) -> None:
    subscription = "subscription { weatherUpdates(lat: 52.52, lon: 13.41) { temperature } }"
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha(subscription)}}

    async def run() -> tuple[dict, dict]:
        async with GraphQLSocket(server.url) as socket:
            await socket.init()
            await socket.send({"type": "subscribe", "id": "1", "payload": {"extensions": extensions}})
            unknown = await socket.receive()
            await socket.send(
                {"type": "subscribe", "id": "2", "payload": {"query": subscription, "extensions": extensions}}
            )
            await socket.data()
            await socket.send({"type": "subscribe", "id": "3", "payload": {"extensions": extensions}})
            return unknown, await socket.data()

    unknown, known = asyncio.run(run())
    assert unknown["type"] == "error" and unknown["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert known["data"]["weatherUpdates"]["temperature"] is not None


def test_safelist_mode_runs_only_listed_operations(
    tmp_path: Path, redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    listed = "query Listed { current(lat: 52.52, lon: 13.41) { temperature } }"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": sha(listed), "name": "Listed", "type": "query", "body": listed}],
            }
        )
    )
    srv = Server(server_env(redis_url, simulator, graphql_safelist=manifest))
    try:
        by_hash = httpx.get(
            f"{srv.url}/graphql",
            params={"extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha(listed)}})},
        )
        assert by_hash.json()["data"]["current"]["temperature"] is not None
        assert "errors" not in graphql(srv.url, listed).json(), "the listed text itself is accepted"
        refused = graphql(srv.url, CURRENT)
        assert code(refused) == "PERSISTED_QUERY_NOT_IN_LIST"
        not_registered = httpx.post(
            f"{srv.url}/graphql",
            json={"query": CURRENT, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(CURRENT)}}},
        )
        assert code(not_registered) == "PERSISTED_QUERY_NOT_IN_LIST"

        async def over_websocket() -> dict:
            async with GraphQLSocket(srv.url) as socket:
                await socket.init()
                await socket.subscribe("1", "subscription { weatherUpdates(lat: 1, lon: 1) { temperature } }")
                return await socket.receive()

        error = asyncio.run(over_websocket())
        assert error["type"] == "error" and error["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
    finally:
        srv.stop()
