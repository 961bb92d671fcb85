"""Every error carries `extensions.code`; an error before execution leaves `data` out, over every transport."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import Server, Simulator
from tests.wsclient import LEGACY, TRANSPORT, GraphQLSocket

GRAPHQL_RESPONSE = "application/graphql-response+json"
CURRENT = "query Now($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature } }"
WEATHER_UPDATES = (
    "subscription Live($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { temperature } }"
)

# (query, variables, operationName) refused before execution, and the code each must carry
REFUSED = {
    "syntax": ("{ current(lat: 1, lon: 1) { temperature }", None, None, "GRAPHQL_PARSE_FAILED"),
    "empty document": ("", None, None, "GRAPHQL_PARSE_FAILED"),
    "unknown field": ("{ current(lat: 1, lon: 1) { temperatur } }", None, None, "GRAPHQL_VALIDATION_FAILED"),
    "missing argument": ("{ current(lat: 1) { temperature } }", None, None, "GRAPHQL_VALIDATION_FAILED"),
    "no mutations": ("mutation { current { temperature } }", None, None, "GRAPHQL_VALIDATION_FAILED"),
    "variable of the wrong type": (CURRENT, {"lat": "north", "lon": 2}, None, "BAD_USER_INPUT"),
    "missing required variable": (CURRENT, {"lat": 1}, None, "BAD_USER_INPUT"),
    "unknown enum value": (
        "query($u: Units) { current(lat: 1, lon: 1, units: $u) { temperature } }",
        {"u": "KELVIN"},
        None,
        "BAD_USER_INPUT",
    ),
    "unknown operation name": (CURRENT, {"lat": 1, "lon": 2}, "Later", "OPERATION_RESOLUTION_FAILURE"),
    "several operations, no name": (
        "query A { __typename } query B { __typename }",
        None,
        None,
        "OPERATION_RESOLUTION_FAILURE",
    ),
}


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body["errors"]]


def post(url: str, query: str, variables: Any, operation_name: str | None, accept: str | None = None) -> httpx.Response:
    headers = {"accept": accept} if accept else {}
    body = {"query": query, "variables": variables, "operationName": operation_name}
    return httpx.post(f"{url}/graphql", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_errors_before_execution_carry_their_code_and_no_data(server: Server, clean: Simulator, case: str) -> None:
    query, variables, operation_name, code = REFUSED[case]
    legacy = post(server.url, query, variables, operation_name)
    assert legacy.status_code == 200, "application/json answers 200 to every well-formed request"
    assert "data" not in legacy.json() and set(codes(legacy.json())) == {code}, legacy.json()
    strict = post(server.url, query, variables, operation_name, accept=GRAPHQL_RESPONSE)
    assert strict.status_code == 400 and strict.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "data" not in strict.json() and set(codes(strict.json())) == {code}, strict.json()
    assert clean.stats()["requests"] == 0, "nothing ran"


def test_get_requests_are_coded_like_posts(server: Server, clean: Simulator) -> None:
    parse = httpx.get(f"{server.url}/graphql", params={"query": "{ current("})
    assert parse.status_code == 200 and "data" not in parse.json() and codes(parse.json()) == ["GRAPHQL_PARSE_FAILED"]
    variables = httpx.get(f"{server.url}/graphql", params={"query": CURRENT, "variables": '{"lat": true, "lon": 1}'})
    assert "data" not in variables.json() and codes(variables.json()) == ["BAD_USER_INPUT"]


def test_a_subscription_over_http_is_a_bad_request(server: Server, clean: Simulator) -> None:
    response = post(server.url, WEATHER_UPDATES, {"lat": 1, "lon": 2}, None)
    assert response.status_code == 200 and "data" not in response.json()
    assert codes(response.json()) == ["BAD_REQUEST"]
    assert post(server.url, WEATHER_UPDATES, {"lat": 1, "lon": 2}, None, GRAPHQL_RESPONSE).status_code == 400


def test_malformed_http_requests_carry_a_code(server: Server) -> None:
    not_json = httpx.post(f"{server.url}/graphql", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and codes(not_json.json()) == ["BAD_REQUEST"]
    no_query = httpx.post(f"{server.url}/graphql", json={"variables": {}})
    assert no_query.status_code == 400 and codes(no_query.json()) == ["BAD_REQUEST"]


def test_errors_during_execution_keep_data(server: Server, clean: Simulator) -> None:
    response = post(server.url, CURRENT, {"lat": 95, "lon": 2}, None)
    body = response.json()
    assert response.status_code == 200 and body["data"] is None, "execution began: `data` is present"
    assert codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["path"] == ["current"]


def test_a_batch_answers_each_operation_on_its_own(server: Server, clean: Simulator) -> None:
    batch = [{"query": "{ __typename }"}, {"query": "{ nope }"}, {"query": CURRENT, "variables": {"lat": "x"}}]
    first, second, third = httpx.post(f"{server.url}/graphql", json=batch).json()
    assert first == {"data": {"__typename": "Query"}}
    assert "data" not in second and codes(second) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "data" not in third and set(codes(third)) == {"BAD_USER_INPUT"}


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
def test_websocket_errors_carry_the_same_codes(server: Server, clean: Simulator, protocol: str) -> None:
    cases = {
        "parse": ("subscription { weatherUpdates(", {}, "GRAPHQL_PARSE_FAILED"),
        "validation": ("subscription { weatherUpdates(lat: 1, lon: 1) { nope } }", {}, "GRAPHQL_VALIDATION_FAILED"),
        "wrong type": (WEATHER_UPDATES, {"lat": "north", "lon": 2}, "BAD_USER_INPUT"),
        "missing": (WEATHER_UPDATES, {"lon": 2}, "BAD_USER_INPUT"),
    }

    async def run() -> dict[str, dict[str, Any]]:
        answers = {}
        async with GraphQLSocket(server.url, protocol) as socket:
            await socket.init()
            for name, (query, variables, _) in cases.items():
                await socket.subscribe(name, query, variables)
                answers[name] = await socket.receive()
            await socket.send({"type": "start" if protocol == LEGACY else "subscribe", "id": "bad", "payload": {}})
            answers["no query"] = await socket.receive()
        return answers

    answers = asyncio.run(run())
    expected = {name: code for name, (_, _, code) in cases.items()} | {"no query": "BAD_REQUEST"}
    for name, code in expected.items():
        message = answers[name]
        assert message["type"] == "error", (name, message)
        # graphql-transport-ws: a list of errors; legacy graphql-ws: one error object
        errors = message["payload"] if protocol == TRANSPORT else message["payload"].get("errors", [message["payload"]])
        assert [error["extensions"]["code"] for error in errors] == [code] * len(errors), (name, message)
    assert clean.stats()["requests"] == 0, "nothing ran"
