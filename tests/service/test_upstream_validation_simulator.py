"""A hardened upstream client against the simulator process: bodies capped, one deadline per call, causes
logged, and a `weathernote serve` process in front of a misbehaving upstream.

The client is in-process here, or inside the server, and speaks real HTTP to the simulator. The contract
checks on answers in memory are in tests/unit/test_upstream_validation.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import DEFAULT_KNOBS, Server, Simulator, free_port, graphql, server_env, wait_until
from tests.service.test_upstream_faults import code_of
from tests.unit.test_upstream_validation import OFFLINE_HINT, fetch, new_point, upstream_records
from weathernote.errors import UpstreamFailed
from weathernote.upstream import OpenMeteoClient

# Knobs added with these tests; conftest's defaults do not know them yet.
TIMEOUT = 2.0  # the servers' upstream timeout here
FORECAST = (
    "query ($lat: Float!, $lon: Float!)"
    " { forecast(lat: $lat, lon: $lon, days: 16) { daily { date } hourly(hours: 48) { time } cached } }"
)
CURRENT = "query ($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"


# ---------------------------------------------------------------------------------------------
# The client, in-process, over real HTTP to the simulator


@pytest.fixture
def upstream(clean: Simulator) -> Iterator[Simulator]:
    """The shared simulator with default knobs, which are put back after the test as well."""
    yield clean
    clean.configure(**DEFAULT_KNOBS)


async def test_body_cap_is_per_request_and_grows_with_the_batch(upstream: Simulator) -> None:
    # a full answer is about 16 KB a location
    client = OpenMeteoClient(upstream.url, max_body_bytes=40_000, max_body_bytes_per_location=40_000)
    try:
        await fetch(client)
        upstream.configure(body_padding_bytes=30_000)
        with pytest.raises(UpstreamFailed) as refused:
            await fetch(client)  # about 46 KB: over the 40 KB cap of one location
        assert refused.value.cause == "malformed" and "larger than 40000 bytes" in refused.value.reason
        await fetch(client, 3)  # about 78 KB: within the 120 KB of three
    finally:
        await client.aclose()


async def test_a_compressed_bomb_is_capped_on_its_decoded_size(upstream: Simulator) -> None:
    upstream.configure(body_padding_bytes=20_000_000)  # gzip on the wire: some 20 KB
    client = OpenMeteoClient(upstream.url)
    try:
        with pytest.raises(UpstreamFailed) as refused:
            await fetch(client)
        assert refused.value.cause == "malformed" and str(8 * 1024 * 1024) in refused.value.reason
    finally:
        await client.aclose()


async def test_a_trickling_body_is_cut_at_the_deadline(upstream: Simulator) -> None:
    upstream.configure(trickle_bytes_per_second=1)
    client = OpenMeteoClient(upstream.url, timeout=TIMEOUT)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamFailed) as timed_out:
            await asyncio.wait_for(fetch(client), 30)  # before the deadline it lasted hours
    finally:
        await client.aclose()
    assert timed_out.value.cause == "timeout"
    assert time.monotonic() - started < TIMEOUT * 2 + 2


async def test_waiting_for_a_pooled_connection_counts_against_the_deadline(upstream: Simulator) -> None:
    timeout = 3.0
    upstream.configure(latency_ms=timeout * 1000 + 500)  # every call outlasts its deadline
    client = OpenMeteoClient(upstream.url, timeout=timeout, max_connections=1)

    async def timed_out_after(delay: float) -> float:
        await asyncio.sleep(delay)
        started = time.monotonic()
        with pytest.raises(UpstreamFailed) as failed:
            await fetch(client)
        assert failed.value.cause == "timeout"
        return time.monotonic() - started

    try:
        # the second call queues for the one connection while the first holds it
        first, queued = await asyncio.gather(timed_out_after(0), timed_out_after(1))
    finally:
        await client.aclose()
    # A queued call used to get a whole timeout of its own once it had the connection (here about
    # 2 + 3 = 5 s); now the wait is part of its deadline.
    assert first < timeout * 4 / 3 and queued < timeout * 4 / 3
    wait_until(lambda: upstream.stats()["in_flight"] == 0)


async def test_causes_are_logged_once_per_change_of_state(
    upstream: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = OpenMeteoClient(upstream.url)
    try:
        await fetch(client)
        upstream.configure(forced_status=503)
        for _ in range(3):
            with pytest.raises(UpstreamFailed):
                await fetch(client)
        upstream.configure(forced_status=None, corrupt="nulls")
        for _ in range(3):
            with pytest.raises(UpstreamFailed):
                await fetch(client)
        upstream.configure(corrupt=None)
        for _ in range(2):
            await fetch(client)
    finally:
        await client.aclose()
    first, second, healthy = upstream_records(caplog)
    assert first.levelno == logging.ERROR and "HTTP 503" in first.getMessage() and upstream.url in first.getMessage()
    assert all(hint in first.getMessage() for hint in OFFLINE_HINT)
    assert second.levelno == logging.ERROR and "malformed answer" in second.getMessage()
    assert "holds no values" in second.getMessage() and "was: HTTP 503" in second.getMessage()
    assert healthy.levelno == logging.WARNING and "healthy again" in healthy.getMessage()


# ---------------------------------------------------------------------------------------------
# A server in front of a misbehaving upstream


@pytest.fixture(scope="module")
def server(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(
        server_env(
            redis_url,
            simulator,
            upstream_timeout_seconds=TIMEOUT,
            # failures here are the point: the breaker would only hide the ones after the fifth
            upstream_breaker_failures=1_000_000,
        )
    )
    yield srv
    srv.stop()


def stored(redis_client: redis.Redis) -> list[bytes]:
    """Entries and their stale copies: anything an answer was written to."""
    return [key for pattern in ("weather:*", "forecast:*", "stale:*") for key in redis_client.keys(pattern)]


@pytest.mark.parametrize(
    ("kind", "query"),
    [
        ("dates", FORECAST),
        ("nulls", FORECAST),
        ("lengths", FORECAST),
        ("horizon", FORECAST),
        ("dates", CURRENT),
        ("nulls", CURRENT),
    ],
    ids=["dates", "nulls", "lengths", "horizon", "dates-current", "nulls-current"],
)
def test_a_wrong_answer_is_unavailable_and_nothing_is_cached(
    server: Server, upstream: Simulator, redis_client: redis.Redis, kind: str, query: str
) -> None:
    point = new_point()
    upstream.configure(corrupt=kind)
    assert code_of(graphql(server.url, query, point)) == "UPSTREAM_UNAVAILABLE"
    assert stored(redis_client) == []
    upstream.configure(corrupt=None)
    recovered = graphql(server.url, query, point).json()
    assert "errors" not in recovered, recovered
    [answer] = recovered["data"].values()
    assert answer["cached"] is False
    assert stored(redis_client) != []


def test_a_huge_body_is_unavailable_and_nothing_is_cached(
    server: Server, upstream: Simulator, redis_client: redis.Redis
) -> None:
    point = new_point()
    upstream.configure(body_padding_bytes=20_000_000)
    assert code_of(graphql(server.url, FORECAST, point)) == "UPSTREAM_UNAVAILABLE"
    assert stored(redis_client) == []
    upstream.configure(body_padding_bytes=0)
    assert graphql(server.url, FORECAST, point).json()["data"]["forecast"]["cached"] is False


def test_a_trickling_upstream_fails_within_the_timeout(server: Server, upstream: Simulator) -> None:
    upstream.configure(trickle_bytes_per_second=1)
    started = time.monotonic()
    # the test client's own timeout (10 s) is what a trickle used to run into
    assert code_of(graphql(server.url, CURRENT, new_point())) == "UPSTREAM_UNAVAILABLE"
    assert time.monotonic() - started < TIMEOUT * 2 + 2


def log_messages(server: Server, since: int = 0) -> list[str]:
    messages = []
    for line in server.logs()[since:].splitlines():
        try:
            messages.append(json.loads(line)["message"])
        except (ValueError, KeyError, TypeError):
            continue
    return messages


def test_the_log_names_the_cause_once_and_the_way_offline(server: Server, upstream: Simulator) -> None:
    assert "errors" not in graphql(server.url, CURRENT, new_point()).json()  # healthy to begin with
    since = len(server.logs())
    upstream.configure(forced_status=502)
    for _ in range(4):
        assert code_of(graphql(server.url, CURRENT, new_point())) == "UPSTREAM_UNAVAILABLE"
    upstream.configure(forced_status=None)
    for _ in range(2):
        assert "errors" not in graphql(server.url, CURRENT, new_point()).json()
    messages = [m for m in log_messages(server, since) if m.startswith("upstream ")]
    assert len(messages) == 2, messages
    failing, healthy = messages
    assert "HTTP 502" in failing and upstream.url in failing
    assert all(hint in failing for hint in OFFLINE_HINT)
    assert "healthy again" in healthy


def test_a_server_without_its_upstream_says_why(redis_url: str, simulator: Simulator) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    srv = Server({**server_env(redis_url, simulator), "WEATHERNOTE_UPSTREAM_URL": nowhere})
    try:
        for _ in range(3):
            assert code_of(graphql(srv.url, CURRENT, new_point())) == "UPSTREAM_UNAVAILABLE"
        [logged] = [m for m in log_messages(srv) if "failing" in m]
    finally:
        srv.stop()
    assert nowhere in logged and "connection refused" in logged
    assert all(hint in logged for hint in OFFLINE_HINT)
