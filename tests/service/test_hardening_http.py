"""Hardening: logs without client addresses or raw ids, quiet disconnects, legacy duplicate ids,
REST operation labels, and memory bounded in bytes however many large distinct documents arrive."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Server, Simulator, server_env, wait_until
from tests.service.test_operations import scrape, value
from tests.wsclient import LEGACY, GraphQLSocket

WEATHER_UPDATES = "subscription { weatherUpdates(lat: 52.52, lon: 13.41) { temperature } }"


@pytest.fixture(scope="module")
def chatty(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A server logging at DEBUG, the level where raw headers used to show."""
    srv = Server(server_env(redis_url, simulator, log_level="debug"))
    yield srv
    srv.stop()


def log_lines(srv: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in srv.logs().splitlines() if line.startswith("{")]


def test_logs_hold_no_client_address_and_no_raw_id_even_at_debug(
    chatty: Server, clean: Simulator, redis_url: str
) -> None:
    client_id, forwarded = f"raw-device-{uuid.uuid4()}", "203.0.113.77"
    headers = {"x-client-id": client_id, "x-forwarded-for": forwarded}
    query = {"query": "{ current(lat: 48.85, lon: 2.35) { temperature } }"}
    assert httpx.post(f"{chatty.url}/graphql", json=query, headers=headers).status_code == 200
    assert httpx.get(f"{chatty.url}/api/v1/weather", params={"lat": 1, "lon": 1}, headers=headers).status_code == 200

    async def subscribe() -> int:
        url = chatty.url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-ws"], additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            await ws.recv()
            return int(ws.local_address[1])

    client_port = asyncio.run(subscribe())
    wait_until(lambda: any("WebSocket /graphql" in line["message"] for line in log_lines(chatty)))
    [accepted] = [line["message"] for line in log_lines(chatty) if "WebSocket /graphql" in line["message"]]
    assert accepted == '"WebSocket /graphql" [accepted]', "uvicorn's line, without the address it began with"
    logs = chatty.logs()
    assert client_id not in logs and forwarded not in logs
    assert f":{client_port}" not in logs, "the WebSocket client's address"
    # every address:port logged is one of our own servers', never a client's
    own = {chatty.port, clean.port, int(redis_url.rsplit(":", 1)[1].split("/")[0])}
    assert {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", logs)} <= own, logs[-3000:]


def test_a_client_leaving_mid_body_is_not_an_error(chatty: Server) -> None:
    with socket.create_connection(("127.0.0.1", chatty.port)) as raw:
        raw.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: weathernote\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"query": "{ __typ'
        )
        time.sleep(0.2)  # the request is now waiting for the rest of its body

    def unanswered() -> list[dict[str, Any]]:
        return [line for line in log_lines(chatty) if line["message"] == "request" and line["status"] != 200]

    wait_until(unanswered)
    [line] = unanswered()
    assert line["status"] == 499 and line["outcome"] == "bad_request", "nginx's client closed request"
    assert line["level"] == "INFO" and line["path"] == "/graphql"
    assert not [line for line in log_lines(chatty) if line["level"] in ("ERROR", "CRITICAL")], chatty.logs()[-3000:]
    assert "Traceback" not in chatty.logs() and "ClientDisconnect" not in chatty.logs()
    assert httpx.post(f"{chatty.url}/graphql", json={"query": "{ __typename }"}).status_code == 200


def test_legacy_protocol_answers_a_duplicate_operation_id_with_an_error(chatty: Server, clean: Simulator) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with GraphQLSocket(chatty.url, LEGACY) as ws:
            await ws.init()
            await ws.subscribe("1", WEATHER_UPDATES)
            await ws.data()
            await ws.subscribe("1", "subscription { weatherUpdates(lat: 1, lon: 1) { temperature } }")
            refused = await ws.receive()
            await ws.subscribe("2", WEATHER_UPDATES)
            return refused, await ws.receive()

    refused, other = asyncio.run(run())
    assert refused["type"] == "error" and refused["id"] == "1", refused
    assert refused["payload"]["extensions"]["code"] == "BAD_REQUEST"
    assert other["type"] == "data" and other["id"] == "2", "the connection and its operations go on"
    assert clean.stats()["requests"] == 1, "the refused duplicate read nothing"


def test_rest_requests_are_labelled_like_their_graphql_fields(chatty: Server, clean: Simulator) -> None:
    before = scrape(chatty.url)
    assert httpx.get(f"{chatty.url}/api/v1/weather", params={"lat": 3, "lon": 3}).status_code == 200
    assert httpx.get(f"{chatty.url}/api/v1/forecast", params={"lat": 3, "lon": 3, "days": 3}).status_code == 200
    assert httpx.get(f"{chatty.url}/api/v1/forecast", params={"lat": 3, "lon": 3, "days": 99}).status_code == 400
    after = scrape(chatty.url)

    def moved(operation: str, outcome: str) -> float:
        labels = {"transport": "rest", "operation": operation, "outcome": outcome}
        return value(after, "weathernote_requests_total", **labels) - value(
            before, "weathernote_requests_total", **labels
        )

    assert (moved("current", "ok"), moved("forecast", "ok"), moved("forecast", "bad_request")) == (1, 1, 1)
    assert moved("other", "ok") == 0
    lines = [
        line for line in log_lines(chatty) if line.get("transport") == "rest" and "/api/v1/" in line.get("path", "")
    ]
    assert {(line["path"], line["operation"]) for line in lines} >= {
        ("/api/v1/weather", "current"),
        ("/api/v1/forecast", "forecast"),
    }


HOURLY = "time temperature precipitationProbability weatherCode windSpeed"
DAILY = (
    "date temperatureMax temperatureMin precipitationSum precipitationProbabilityMax weatherCode sunrise sunset"
    " windSpeedMax uvIndexMax"
)
ALIASES = 6
LARGE = (
    "query Large($lat: Float!, $lon: Float!, "
    + ", ".join(f"$h{i}: Int" for i in range(ALIASES))
    + ") { "
    + " ".join(
        f"f{i}: forecast(lat: $lat, lon: $lon, days: 16) {{ cached daily {{ {DAILY} }} hourly(hours: $h{i}) {{ {HOURLY} }} }}"
        for i in range(ALIASES)
    )
    + " }"
)
CURRENT_FIELDS = "temperature apparentTemperature humidity precipitation weatherCode cloudCover pressure windSpeed"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_is_bounded_in_bytes_by_many_large_distinct_documents(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    budget = 2 * 1024 * 1024
    srv = Server(server_env(redis_url, simulator, render_cache_bytes=budget))
    rng = random.Random(11)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:

            def large() -> httpx.Response:
                hours = {f"h{i}": rng.randint(300, 384) for i in range(ALIASES)}
                return client.post("/graphql", json={"query": LARGE, "variables": {"lat": 48.85, "lon": 2.35, **hours}})

            assert "errors" not in large().json()  # the cell is fetched once; from now on every answer is a hit
            warm = large()
            assert warm.json()["data"]["f0"]["cached"] is True and len(warm.content) > 200_000
            start = rss_bytes(srv.process.pid)
            # 160 distinct answers of ~270 kB each (~43 MB), then 100 distinct documents
            for _ in range(160):
                assert large().status_code == 200
            for i in range(100):
                aliases = " ".join(f"a{j}: current(lat: 48.85, lon: 2.35) {{ {CURRENT_FIELDS} }}" for j in range(15))
                assert "errors" not in client.post("/graphql", json={"query": f"query Q{i} {{ {aliases} }}"}).json()
            grown = rss_bytes(srv.process.pid) - start
            samples = scrape(srv.url)
        held = {kind: value(samples, "weathernote_render_cache_bytes", kind=kind) for kind in ("response", "document")}
        assert budget / 2 < held["response"] <= budget, held
        assert 0 < held["document"] <= budget, held
        assert value(samples, "weathernote_renders_total", kind="response") >= 260, "every document rendered"
        assert grown < 24 * 1024 * 1024, f"the process grew by {grown / 2**20:.0f} MiB"
    finally:
        srv.stop()
