"""The Python client's SSE transport (`WeatherNoteClient(transport="sse")`, graphql-sse distinct connections)
against real servers: each refresh once, back after a dropped link, Retry-After honoured, the command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator

import pytest
import redis
from weathernote_client import CurrentWeather, Forecast, WeatherNoteClient

from tests.conftest import Server, Simulator, eventually, server_env
from tests.service.test_subscriptions import PARIS_CHANNEL, numsub
from tests.system.test_python_client import (
    CLIENT_ENV,
    FAST_RECONNECT,
    MANIFEST,
    PARIS,
    PARIS_CELL,
    assert_nothing_repeated,
    interruptible,
    metric,
    refresh_current,
    refresh_forecast,
    watching,
    within,
)
from tests.tcp_proxy import TcpProxy


async def test_sse_watch_yields_each_refresh(server: Server, clean: Simulator, redis_client: redis.Redis) -> None:
    async with WeatherNoteClient(server.url, transport="sse") as client:
        async with watching(client.watch_current(*PARIS)) as updates:
            first = await within(10, updates.get())
            refresh_current(server, redis_client)
            second = await within(10, updates.get())
        assert isinstance(second, CurrentWeather) and second.fetched_at > first.fetched_at
        async with watching(client.watch_forecast(*PARIS, days=2, hours=6)) as forecasts:
            first_forecast = await within(10, forecasts.get())
            refresh_forecast(server, redis_client)
            second_forecast = await within(10, forecasts.get())
    assert isinstance(first_forecast, Forecast) and len(first_forecast.hourly) == 6
    assert second_forecast.fetched_at > first_forecast.fetched_at
    # the watches ended with their iteration: their streams closed, the hub let go of the cell
    await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)


async def test_sse_watch_comes_back_after_the_link_drops(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        client = WeatherNoteClient(f"http://127.0.0.1:{proxy.port}", retry=FAST_RECONNECT, transport="sse")
        async with client, watching(client.watch_current(*PARIS)) as updates:
            first = await within(10, updates.get())
            proxy.cut()  # the connection just dies
            await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=10)
            proxy.restore()
            await eventually(lambda: numsub(redis_client, PARIS_CHANNEL) == 1, timeout=10)
            assert_nothing_repeated(updates, first)  # the value sent again on a new stream is not delivered twice
            refresh_current(server, redis_client)
            second = await within(10, updates.get())
        assert second.fetched_at > first.fetched_at
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def limited(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """Two requests per client per 2 s, in safelist mode: every call is one request, by hash."""
    srv = Server(
        server_env(
            redis_url, simulator, rate_limit_per_minute=2, rate_limit_period_seconds=2, graphql_safelist=MANIFEST
        )
    )
    yield srv
    srv.stop()


async def test_an_sse_watch_refused_as_rate_limited_waits_retry_after(limited: Server, clean: Simulator) -> None:
    refusals = metric(limited, "weathernote_rate_limited_total")
    client = WeatherNoteClient(limited.url, client_id="device-sse-limited", retry=FAST_RECONNECT, transport="sse")
    async with client:
        await client.current(*PARIS)
        await client.current(*PARIS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        updates = client.watch_current(*PARIS)
        try:
            first = await within(10, anext(updates))
        finally:
            await updates.aclose()
        waited = loop.time() - started
    assert first.cell == PARIS_CELL
    assert waited >= 1.0, "the stream was refused with 429 and opened again after Retry-After"
    assert metric(limited, "weathernote_rate_limited_total") == refusals + 1


async def test_cli_watch_over_sse(server: Server, clean: Simulator) -> None:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "weathernote_client", "--url", server.url, "--json", "--transport", "sse"),
        *("watch", "--lat", "48.8566", "--lon", "2.3522"),
        env=CLIENT_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = json.loads(await within(15, process.stdout.readline()))
        assert first["cell"] == {"lat": 48.9, "lon": 2.4}
        process.send_signal(signal.SIGINT)
        returncode = await within(10, process.wait())
        errors = (await process.stderr.read()).decode()
        assert returncode in (0, 130) and "Traceback" not in errors, errors
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
