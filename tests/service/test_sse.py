"""GraphQL over SSE (the graphql-sse protocol) against real servers, with a real httpx streaming client:
distinct connections on /graphql, the single connection's reservations on /graphql/stream, their limits."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, eventually, server_env
from tests.service.test_subscriptions import PARIS, PARIS_CHANNEL, WEATHER, numsub, refresh
from tests.sseclient import EVENT_STREAM, TOKEN_HEADER, EventReader
from tests.wsclient import GraphQLSocket

CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cell { lat lon } } }"


@pytest.fixture(scope="module")
def tight(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A server with small SSE limits, a short keep-alive and a low per-client rate limit."""
    srv = Server(
        server_env(
            redis_url,
            simulator,
            sse_keepalive_seconds=0.3,
            sse_max_operations=2,
            sse_max_reservations_per_address=3,
            sse_max_streams_per_address=3,
            sse_reservation_ttl_seconds=1,
            rate_limit_per_minute=4,
            ip_rate_limit_per_minute=1000000,
        )
    )
    yield srv
    srv.stop()


@asynccontextmanager
async def distinct(
    url: str, query: str, variables: dict[str, Any], method: str = "POST", headers: dict[str, str] | None = None
) -> AsyncIterator[EventReader]:
    """A distinct connection's stream (GET: the operation in the query string)."""
    async with httpx.AsyncClient(timeout=10) as client:
        if method == "GET":
            params = {"query": query, "variables": json.dumps(variables)}
            request = client.build_request(
                "GET", f"{url}/graphql", params=params, headers={**EVENT_STREAM, **(headers or {})}
            )
        else:
            body = {"query": query, "variables": variables}
            request = client.build_request(
                "POST", f"{url}/graphql", json=body, headers={**EVENT_STREAM, **(headers or {})}
            )
        response = await client.send(request, stream=True)
        try:
            yield EventReader(response)
        finally:
            await response.aclose()


async def stream_status(client: httpx.AsyncClient, url: str, **kwargs: Any) -> int:
    """The status of a GET for an event stream, without waiting for a body (a stream's never ends)."""
    async with client.stream("GET", url, **kwargs) as response:
        return response.status_code


def assert_stream_headers(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-accel-buffering"] == "no"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_distinct_subscription_then_hanging_up_leaves_the_hub(
    server: Server, clean: Simulator, redis_client: redis.Redis, method: str
) -> None:
    async with distinct(server.url, WEATHER, PARIS, method) as events:
        assert_stream_headers(events.response)
        first = (await events.data())["data"]["weatherUpdates"]
        assert first["cell"] == {"lat": 48.9, "lon": 2.4}
        assert numsub(redis_client, PARIS_CHANNEL) == 1
        await asyncio.to_thread(refresh, server, redis_client)
        update = (await events.data())["data"]["weatherUpdates"]
        assert update["fetchedAt"] > first["fetchedAt"]
    # the client hung up: its subscription leaves the hub, and the hub Redis
    await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)


async def test_a_query_is_one_next_then_complete(server: Server, clean: Simulator) -> None:
    async with distinct(server.url, CURRENT, PARIS) as events:
        assert (await events.data())["data"]["current"]["cell"] == {"lat": 48.9, "lon": 2.4}
        complete = await events.next()
        assert complete.event == "complete" and complete.data == ""
        assert await events.ended()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ current(lat: 1, lon: 1) { temperature ", "GRAPHQL_PARSE_FAILED"),
        ("{ current(lat: 1, lon: 1) { nothing } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ " + " ".join(f"a{i}: current(lat: 1, lon: 1) {{ temperature }}" for i in range(20)) + " }",
            "QUERY_TOO_COMPLEX",
        ),
    ],
)
async def test_a_bad_document_is_a_next_of_coded_errors_then_complete(server: Server, query: str, code: str) -> None:
    async with distinct(server.url, query, {}) as events:
        assert events.response.status_code == 200  # the protocol: errors before execution go through the stream
        result = await events.data()
        assert "data" not in result
        assert result["errors"][0]["extensions"]["code"] == code
        assert (await events.next()).event == "complete"
        assert await events.ended()


async def test_a_malformed_request_is_answered_before_any_stream(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.url}/graphql", content=b"{not json", headers={**EVENT_STREAM, "content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        batch = [{"query": "{ __typename }"}] * 2
        response = await client.post(f"{server.url}/graphql", json=batch, headers=EVENT_STREAM)
        assert response.status_code == 400


async def test_single_connection_reservation_flow(server: Server, clean: Simulator, redis_client: redis.Redis) -> None:
    stream_url = f"{server.url}/graphql/stream"
    async with httpx.AsyncClient(timeout=10) as client:
        reserved = await client.put(stream_url)
        assert reserved.status_code == 201 and reserved.headers["content-type"].startswith("text/plain")
        token = reserved.text
        auth = {TOKEN_HEADER: token}
        # an operation may be submitted to the reservation before its stream opens
        submit = {"query": CURRENT, "variables": PARIS, "extensions": {"operationId": "q1"}}
        assert (await client.post(stream_url, json=submit, headers=auth)).status_code == 202
        # the token as a search parameter (EventSource cannot send headers)
        request = client.build_request("GET", stream_url, params={"token": token}, headers=EVENT_STREAM)
        response = await client.send(request, stream=True)
        try:
            assert_stream_headers(response)
            events = EventReader(response)
            assert await stream_status(client, stream_url, params={"token": token}, headers=EVENT_STREAM) == 409
            first = await events.data()
            assert first["id"] == "q1" and first["payload"]["data"]["current"]["cell"] == {"lat": 48.9, "lon": 2.4}
            assert (await events.next()).json() == {"id": "q1"}  # complete
            subscribe = {"query": WEATHER, "variables": PARIS, "extensions": {"operationId": "w"}}
            assert (await client.post(stream_url, json=subscribe, headers=auth)).status_code == 202
            assert (await client.post(stream_url, json=subscribe, headers=auth)).status_code == 409
            initial = await events.data()
            assert initial["id"] == "w"
            await asyncio.to_thread(refresh, server, redis_client)
            update = await events.data()
            assert update["id"] == "w"
            assert (
                update["payload"]["data"]["weatherUpdates"]["fetchedAt"]
                > initial["payload"]["data"]["weatherUpdates"]["fetchedAt"]
            )
            bad = {"query": "{ nothing }", "extensions": {"operationId": "bad"}}
            refused = await client.post(stream_url, json=bad, headers=auth)
            assert refused.status_code == 400
            assert refused.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
            missing = await client.post(stream_url, json={"query": CURRENT, "variables": PARIS}, headers=auth)
            assert missing.status_code == 400
            stopped = await client.delete(stream_url, params={"operationId": "w"}, headers=auth)
            assert stopped.status_code == 200
            await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)
        finally:
            await response.aclose()
        # the stream ended, and its reservation with it
        await eventually(lambda: httpx.post(stream_url, json=submit, headers=auth).status_code == 404, timeout=5)
        assert (await client.post(stream_url, json=submit, headers={TOKEN_HEADER: "forged.1.x"})).status_code == 404
        forged = {**EVENT_STREAM, TOKEN_HEADER: "a.99999999999.b"}
        assert await stream_status(client, stream_url, headers=forged) == 404


async def test_hanging_up_a_single_connection_ends_its_subscriptions(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    stream_url = f"{server.url}/graphql/stream"
    async with httpx.AsyncClient(timeout=10) as client:
        auth = {TOKEN_HEADER: (await client.put(stream_url)).text}
        async with client.stream("GET", stream_url, headers={**EVENT_STREAM, **auth}) as response:
            events = EventReader(response)
            for operation_id in ("a", "b"):
                subscribe = {"query": WEATHER, "variables": PARIS, "extensions": {"operationId": operation_id}}
                assert (await client.post(stream_url, json=subscribe, headers=auth)).status_code == 202
            assert {(await events.data())["id"], (await events.data())["id"]} == {"a", "b"}
            assert numsub(redis_client, PARIS_CHANNEL) == 1
    await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)


async def test_keepalive_comments(tight: Server) -> None:
    async with distinct(tight.url, WEATHER, PARIS, headers={"x-client-id": "sse-keepalive"}) as events:
        await events.data()
        comments = [await events.next(timeout=2, comments=True) for _ in range(3)]
        assert all(event.event == "comment" for event in comments)


async def test_operation_and_reservation_limits(tight: Server) -> None:
    stream_url = f"{tight.url}/graphql/stream"
    async with httpx.AsyncClient(timeout=10) as client:
        tokens = [(await client.put(stream_url)).text for _ in range(3)]
        over = await client.put(stream_url)
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert over.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        auth = {TOKEN_HEADER: tokens[0], "x-client-id": "sse-operations"}
        for operation_id in ("a", "b"):
            subscribe = {"query": WEATHER, "variables": PARIS, "extensions": {"operationId": operation_id}}
            assert (await client.post(stream_url, json=subscribe, headers=auth)).status_code == 202
        third = {"query": WEATHER, "variables": PARIS, "extensions": {"operationId": "c"}}
        refused = await client.post(stream_url, json=third, headers=auth)
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        # an unused reservation lapses after its time to live, and makes room for another
        await asyncio.sleep(1.3)
        async with client.stream("GET", stream_url, headers={**EVENT_STREAM, TOKEN_HEADER: tokens[1]}) as lapsed:
            assert lapsed.status_code == 404
        assert (await client.put(stream_url)).status_code == 201


async def test_streams_per_address(tight: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        responses = []
        try:
            for index in range(3):
                request = client.build_request(
                    "POST",
                    f"{tight.url}/graphql",
                    json={"query": WEATHER, "variables": PARIS},
                    headers={**EVENT_STREAM, "x-client-id": f"sse-streams-{index}"},
                )
                responses.append(await client.send(request, stream=True))
                assert responses[-1].status_code == 200
            over = await client.post(
                f"{tight.url}/graphql", json={"query": WEATHER, "variables": PARIS}, headers=EVENT_STREAM
            )
            assert over.status_code == 429 and "retry-after" in over.headers
        finally:
            for response in responses:
                await response.aclose()


async def test_rate_limited_operations(tight: Server) -> None:
    headers = {"x-client-id": "sse-rate-limited"}
    for _ in range(4):
        async with distinct(tight.url, CURRENT, PARIS, headers=headers) as events:
            assert "data" in await events.data()
    async with distinct(tight.url, CURRENT, PARIS, headers=headers) as events:
        refused = events.response
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        await refused.aread()
        [error] = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1
    stream_url = f"{tight.url}/graphql/stream"
    async with httpx.AsyncClient(timeout=10) as client:
        auth = {TOKEN_HEADER: (await client.put(stream_url)).text, **headers}
        submit = {"query": CURRENT, "variables": PARIS, "extensions": {"operationId": "q"}}
        refused = await client.post(stream_url, json=submit, headers=auth)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_an_sse_and_a_websocket_subscriber_hear_the_same_updates(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    async with distinct(server.url, WEATHER, PARIS) as events, GraphQLSocket(server.url) as socket:
        await socket.init()
        first_sse = (await events.data())["data"]
        await socket.subscribe("w", WEATHER, PARIS)
        first_ws = (await socket.data())["data"]
        # the same entry (the first subscriber's miss fetched it: only `cached` differs)
        assert first_sse["weatherUpdates"] | {"cached": True} == first_ws["weatherUpdates"]
        for _ in range(2):
            await asyncio.to_thread(refresh, server, redis_client)
            assert (await events.data())["data"] == (await socket.data())["data"]


async def test_shutdown_ends_the_streams(redis_url: str, simulator: Simulator) -> None:
    """On SIGTERM every stream ends (without `complete`: the client reconnects elsewhere), so none holds the exit."""
    srv = Server(server_env(redis_url, simulator))
    try:
        async with distinct(srv.url, WEATHER, PARIS) as events:
            await events.data()
            srv.process.send_signal(signal.SIGTERM)
            assert await events.ended(timeout=5)
        assert await asyncio.to_thread(srv.process.wait, 10) == 0
    finally:
        srv.stop()
