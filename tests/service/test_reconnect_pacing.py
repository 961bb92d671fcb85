"""A reconnect storm meets a pacer, not a wall: past a burst, a process admits `connection_init`s at
a steady rate and closes the rest with 4429 and, in the close reason, when to come back (issue 21).
Those who come back when told are admitted; the sockets already open are not disturbed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, Simulator, server_env

RATE, BURST = 4, 3


@pytest.fixture(scope="module")
def paced(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(
        server_env(
            redis_url, simulator, connection_start_rate_per_second=RATE, connection_start_burst=BURST, log_level="info"
        )
    )
    yield srv
    srv.stop()


async def _start(server: Server) -> tuple[websockets.ClientConnection, float | None]:
    """A socket and its `connection_init`: (socket, None) if acknowledged, else the retry hint of its 4429."""
    socket = await websockets.connect(
        server.url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
    try:
        answer = json.loads(await socket.recv())
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4429, closed
        reason = json.loads(closed.rcvd.reason)
        assert reason["code"] == "RATE_LIMITED", reason
        return socket, float(reason["retryAfter"])
    assert answer["type"] == "connection_ack", answer
    return socket, None


async def test_a_storm_is_admitted_at_the_rate_and_the_refused_are_told_when(paced: Server) -> None:
    await asyncio.sleep(BURST / RATE + 0.5)  # a full burst, whatever ran before
    storm = await asyncio.gather(*(_start(paced) for _ in range(BURST + 5)))
    admitted = [socket for socket, hint in storm if hint is None]
    hints = sorted(hint for _, hint in storm if hint is not None)
    assert len(admitted) == BURST, storm
    assert len(hints) == 5 and len(set(hints)) == 5, f"the refused are told to come back apart: {hints}"
    assert hints[-1] - hints[0] >= 4 / RATE - 0.2, hints

    # each comes back when told (at the latest hint, all at once would meet the pacer again; in turn, not)
    retried = 0
    loop = asyncio.get_running_loop()
    began = loop.time()
    for hint in hints:
        await asyncio.sleep(max(0.0, began + hint - loop.time()))
        socket, again = await _start(paced)
        retried += again is None
        await socket.close()
    assert retried == len(hints), "told when to come back, they found room"

    for socket in admitted:  # the storm did not disturb the sockets already open
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv())["type"] == "pong"
        await socket.close()
    metrics = (await asyncio.to_thread(httpx.get, f"{paced.url}/metrics")).text
    assert 'weathernote_rate_limited_total{scope="starts",transport="ws"} 5.0' in metrics


async def test_event_streams_are_paced_like_websocket_starts(paced: Server) -> None:
    """An SSE subscriber reconnecting in a storm meets the same pacer: refused before its stream opens
    with HTTP 429, Retry-After and RATE_LIMITED; the streams it admitted are served."""
    await asyncio.sleep(BURST / RATE + 0.5)
    query = "subscription { weatherUpdates(lat: 48.8566, lon: 2.3522) { temperature } }"
    async with httpx.AsyncClient(timeout=10) as client:

        async def start() -> tuple[int, str, httpx.Response]:
            request = client.build_request(
                "POST", f"{paced.url}/graphql", json={"query": query}, headers={"accept": "text/event-stream"}
            )
            response = await client.send(request, stream=True)
            return response.status_code, response.headers.get("retry-after", ""), response

        started = await asyncio.gather(*(start() for _ in range(BURST + 3)))
        try:
            statuses = sorted(status for status, _, _ in started)
            assert statuses == [200] * BURST + [429] * 3, statuses
            for status, retry_after, response in started:
                if status == 429:
                    body = json.loads(await response.aread())
                    assert int(retry_after) >= 1 and body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
                else:
                    assert response.headers["content-type"].startswith("text/event-stream")
        finally:
            await asyncio.gather(*(response.aclose() for _, _, response in started))
