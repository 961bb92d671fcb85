"""The Python client (clients/python) against real servers: typed results, APQ on the wire, Retry-After,
live updates through a dropped link and a server restart, and the `weathernote-client` command."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import LOG_DIR, ROOT, Server, Simulator, free_port, graphql, server_env, wait_until
from tests.tcp_proxy import TcpProxy

CLIENT_DIR = ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))  # the client is its own distribution; the tests use its source tree

from weathernote_client import (  # noqa: E402
    BadInput,
    Cell,
    Condition,
    ConnectionFailed,
    CurrentWeather,
    DailyForecast,
    Forecast,
    HourlyForecast,
    RateLimited,
    RetryPolicy,
    Units,
    WeatherNoteClient,
)
from weathernote_client.operations import CURRENT_WEATHER  # noqa: E402

PARIS = (48.8566, 2.3522)
PARIS_CELL = Cell(48.9, 2.4)
PARIS_WEATHER_KEY = "weather:lat:48.9:lon:2.4"
PARIS_FORECAST_KEYS = ("forecast:lat:48.9:lon:2.4:days:16", "forecast:lat:48.9:lon:2.4:days:16:hourly")
MANIFEST = ROOT / "clients" / "operations" / "persisted-query-manifest.json"
FAST_RECONNECT = RetryPolicy(base_delay=0.1, max_delay=0.5)
PATIENT = RetryPolicy(attempts=40, base_delay=0.1, max_delay=0.5)  # about 15 s of retries, 0.5 s apart at most
CLIENT_ENV = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}


def refresh_current(server: Server, redis_client: redis.Redis) -> None:
    """A new version of Paris's current weather: drop the entry and its stale copy, then ask (a miss refetches).

    Within seconds of the entry's expiry a hit may have started an early refresh in the background
    (XFetch), whose write can land between the delete and the ask: then the ask is a hit, so drop it again.
    """
    for _ in range(3):
        redis_client.delete(PARIS_WEATHER_KEY, f"stale:{PARIS_WEATHER_KEY}")
        body = graphql(server.url, "{ current(lat: 48.8566, lon: 2.3522) { cached } }").json()
        if body["data"]["current"]["cached"] is False:
            return
    raise AssertionError(f"a deleted entry kept answering from the cache: {body}")


def assert_nothing_repeated(updates: asyncio.Queue[Any], latest: Any) -> None:
    """Every update still queued is newer than `latest`: none came twice. (A newer one may have come
    from an early refresh of an entry near its expiry.)"""
    while not updates.empty():
        update = updates.get_nowait()
        assert update.fetched_at > latest.fetched_at, f"an update came again: {update}"
        latest = update


def refresh_forecast(server: Server, redis_client: redis.Redis) -> None:
    redis_client.delete(*PARIS_FORECAST_KEYS, *(f"stale:{key}" for key in PARIS_FORECAST_KEYS))
    body = graphql(server.url, "{ forecast(lat: 48.8566, lon: 2.3522) { cached daily { date } hourly { time } } }")
    assert body.json()["data"]["forecast"]["cached"] is False, body.json()


def metric(server: Server, name: str) -> float:
    """The sum of a metric's samples on a server's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(float(value) for value in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE))


def interruptible() -> None:
    """In the child before it runs: Ctrl-C (SIGINT) back to its default. A shell starts a background
    job with SIGINT ignored, and a child inherits that, so a CI run in the background would send
    the CLI a Ctrl-C it never sees."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def within(seconds: float, awaitable: Any) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


# -- queries -------------------------------------------------------------------------------------------


async def test_current_and_forecast_are_typed(server: Server, clean: Simulator) -> None:
    async with WeatherNoteClient(server.url, client_id="device-typed") as client:
        now = await client.current(*PARIS)
        forecast = await client.forecast(*PARIS, days=3, hours=30, units=Units.IMPERIAL)
    assert isinstance(now, CurrentWeather) and now.cell == PARIS_CELL and now.units is Units.METRIC
    assert isinstance(now.temperature, float) and isinstance(now.condition, Condition) and now.condition.description
    assert isinstance(now.time, dt.datetime) and now.time.tzinfo is not None
    assert now.cached is False and now.stale is False and now.fetched_at.tzinfo is not None
    assert isinstance(forecast, Forecast) and forecast.units is Units.IMPERIAL and forecast.days == 3
    assert len(forecast.daily) == 3 and all(isinstance(day, DailyForecast) for day in forecast.daily)
    assert all(type(day.date) is dt.date for day in forecast.daily)
    assert len(forecast.hourly) == 30 and all(isinstance(hour, HourlyForecast) for hour in forecast.hourly)
    assert forecast.fetched_at is not None and forecast.timezone


async def test_values_out_of_range_raise_bad_input(server: Server, clean: Simulator) -> None:
    async with WeatherNoteClient(server.url) as client:
        with pytest.raises(BadInput) as latitude:
            await client.current(91, 0)
        with pytest.raises(BadInput):
            await client.forecast(*PARIS, days=17)
    assert latitude.value.code == "BAD_USER_INPUT"


async def test_no_server_is_connection_failed_after_the_bounded_attempts() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)
    async with WeatherNoteClient(f"http://127.0.0.1:{free_port()}", retry=policy) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionFailed):
            await client.current(*PARIS)
    assert asyncio.get_running_loop().time() - started < 2


class RecordingProxy:
    """A loopback TCP hop that keeps every byte a client sends: what went on the wire, not what a client says."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def requests(self, since: int = 0) -> list[bytes]:
        """The HTTP requests sent after byte `since`, each from its request line to the next."""
        data = bytes(self.sent[since:])
        starts = [match.start() for match in re.finditer(rb"(?m)^(GET|POST) /graphql", data)]
        return [data[start:end] for start, end in zip(starts, [*starts[1:], len(data)], strict=True)]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, upstream_writer, record=True), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    self.sent.extend(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def test_a_query_goes_by_hash_and_its_text_only_when_the_server_asks(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    text = b"query CurrentWeather("
    sha = CURRENT_WEATHER.sha256.encode()
    server = await asyncio.to_thread(Server, server_env(redis_url, simulator))  # knows no hash yet
    try:
        await recorded_apq_exchanges(server, redis_client, text, sha)
    finally:
        server.stop()


async def recorded_apq_exchanges(server: Server, redis_client: redis.Redis, text: bytes, sha: bytes) -> None:
    async with RecordingProxy(server.port) as proxy:
        async with WeatherNoteClient(proxy.url) as client:
            await client.current(*PARIS)
            [by_hash, by_text] = proxy.requests()
            assert by_hash.startswith(b"GET ") and sha in by_hash and text not in by_hash
            assert by_text.startswith(b"POST ") and sha in by_text and text in by_text
            assert redis_client.get(f"apq:{CURRENT_WEATHER.sha256}") is not None, "the server kept the text"
            mark = len(proxy.sent)
            second = await client.current(*PARIS)
            [only] = proxy.requests(mark)
            assert only.startswith(b"GET ") and sha in only and text not in only
            assert second.cached is True
        mark = len(proxy.sent)
        async with WeatherNoteClient(proxy.url) as another:  # a new client: the server knows the hash already
            await another.current(*PARIS)
        [only] = proxy.requests(mark)
        assert only.startswith(b"GET ") and text not in only


# -- rate limits -----------------------------------------------------------------------------------------


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


async def test_retry_after_is_honoured(limited: Server, clean: Simulator) -> None:
    refusals = metric(limited, "weathernote_rate_limited_total")
    async with WeatherNoteClient(limited.url, client_id="device-retry-after") as client:
        await client.current(*PARIS)
        await client.current(*PARIS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        third = await client.current(*PARIS)
        waited = loop.time() - started
    assert third.cell == PARIS_CELL
    assert waited >= 1.0, "the third call waited for the window (Retry-After: 2)"
    assert metric(limited, "weathernote_rate_limited_total") == refusals + 1, "one refusal: it did not retry sooner"
    impatient = RetryPolicy(max_retry_after=0.5)
    async with WeatherNoteClient(limited.url, client_id="device-impatient", retry=impatient) as client:
        await client.current(*PARIS)
        await client.current(*PARIS)
        with pytest.raises(RateLimited) as refused:
            await client.current(*PARIS)
    assert refused.value.retry_after >= 1


async def test_a_watch_refused_as_rate_limited_waits_retry_after(limited: Server, clean: Simulator) -> None:
    refusals = metric(limited, "weathernote_rate_limited_total")
    async with WeatherNoteClient(limited.url, client_id="device-watch-limited", retry=FAST_RECONNECT) as client:
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
    assert waited >= 1.0, "the subscription was refused with RATE_LIMITED and retried after retryAfter"
    assert metric(limited, "weathernote_rate_limited_total") == refusals + 1


# -- live updates ----------------------------------------------------------------------------------------


async def collect(updates: AsyncIterator[Any], into: asyncio.Queue[Any]) -> None:
    async for update in updates:
        await into.put(update)


@contextlib.asynccontextmanager
async def watching(updates: AsyncIterator[Any]) -> AsyncIterator[asyncio.Queue[Any]]:
    """Every update of a watch, in a queue, while the block runs."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(collect(updates, queue))
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # raises what the watch raised, if it ended on its own


async def test_watch_yields_each_refresh(server: Server, clean: Simulator, redis_client: redis.Redis) -> None:
    async with WeatherNoteClient(server.url) as client:
        async with watching(client.watch_current(*PARIS)) as updates:
            first = await within(10, updates.get())
            refresh_current(server, redis_client)
            second = await within(10, updates.get())
        assert isinstance(second, CurrentWeather) and second.fetched_at > first.fetched_at
        async with watching(client.watch_forecast(*PARIS, days=2, hours=6)) as forecasts:
            first_forecast = await within(10, forecasts.get())
            refresh_forecast(server, redis_client)
            second_forecast = await within(10, forecasts.get())
    assert isinstance(first_forecast, Forecast) and len(first_forecast.daily) == 2 and len(first_forecast.hourly) == 6
    assert second_forecast.fetched_at > first_forecast.fetched_at


async def test_watch_comes_back_after_the_link_drops(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        client = WeatherNoteClient(f"http://127.0.0.1:{proxy.port}", retry=FAST_RECONNECT)
        async with client, watching(client.watch_current(*PARIS)) as updates:
            first = await within(10, updates.get())
            proxy.cut()  # no close frame: the socket just dies
            await wait_for_subscriptions(server, 0)
            proxy.restore()
            await wait_for_subscriptions(server, 1)
            assert_nothing_repeated(updates, first)  # the value sent again on resubscribing is not delivered twice
            refresh_current(server, redis_client)
            second = await within(10, updates.get())
            await asyncio.sleep(0.3)
            assert_nothing_repeated(updates, second)
        assert second.fetched_at > first.fetched_at
    finally:
        proxy.close()


async def wait_for_subscriptions(server: Server, count: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout), httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(f"{server.url}/metrics")).text
                if re.search(rf"^weathernote_subscriptions {count}\.0$", text, re.MULTILINE):
                    return
            await asyncio.sleep(0.05)


class ServerOnPort(Server):
    """A `weathernote serve` process on a given port (conftest's Server picks a free one): an instance
    restarted where the last one was, as behind a fixed address."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the process's life, as in conftest
            prefix="server-", suffix=".log", dir=LOG_DIR, delete=False
        )
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
        full_env.update(env)
        full_env["WEATHERNOTE_PORT"] = str(port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weathernote", "serve"], env=full_env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        try:
            wait_until(self._ready, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"server did not become ready:\n{self.logs()}") from None


async def test_watch_resubscribes_to_a_restarted_server_and_repeats_nothing(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    env = server_env(redis_url, simulator)
    port = free_port()
    first_server = await asyncio.to_thread(ServerOnPort, env, port)
    second_server: Server | None = None
    try:
        client = WeatherNoteClient(first_server.url, retry=PATIENT)
        async with client, watching(client.watch_current(*PARIS)) as updates:
            initial = await within(10, updates.get())
            refresh_current(first_server, redis_client)
            last = await within(10, updates.get())
            assert last.fetched_at > initial.fetched_at
            await asyncio.to_thread(first_server.stop)  # SIGTERM: the server closes its sockets with 1001
            query = asyncio.create_task(client.current(*PARIS))  # refused connections, retried meanwhile
            second_server = await asyncio.to_thread(ServerOnPort, env, port)
            assert (await within(10, query)).cell == PARIS_CELL
            await wait_for_subscriptions(second_server, 1)
            assert_nothing_repeated(updates, last)
            refresh_current(second_server, redis_client)
            after_restart = await within(10, updates.get())
            await asyncio.sleep(0.3)
            assert_nothing_repeated(updates, after_restart)
        assert after_restart.fetched_at > last.fetched_at
    finally:
        first_server.stop()
        if second_server is not None:
            second_server.stop()


# -- the command -----------------------------------------------------------------------------------------


def command(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weathernote_client", *arguments],
        env={**CLIENT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_current_and_forecast(server: Server, clean: Simulator) -> None:
    current = command("current", "--lat", "48.8566", "--lon", "2.3522", env={"WEATHERNOTE_URL": server.url})
    assert current.returncode == 0, current.stderr
    [line] = current.stdout.splitlines()
    assert line.startswith("48.9,2.4 ") and "°C" in line
    as_json = command(
        "--url", server.url, "--json", "current", "--lat", "48.8566", "--lon", "2.3522", "--units", "imperial"
    )
    weather = json.loads(as_json.stdout)
    assert weather["cell"] == {"lat": 48.9, "lon": 2.4} and weather["units"] == "IMPERIAL" and weather["cached"] is True
    forecast = command("--url", server.url, "forecast", "--lat", "48.8566", "--lon", "2.3522", "--days", "3")
    assert forecast.returncode == 0, forecast.stderr
    assert len(forecast.stdout.splitlines()) == 1 + 3  # a heading, then a line per day


def test_cli_says_what_went_wrong_without_a_traceback(server: Server, clean: Simulator) -> None:
    refused = command("--url", server.url, "current", "--lat", "91", "--lon", "0")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("weathernote-client: ") and "Traceback" not in refused.stderr


async def test_cli_watch_prints_a_line_per_update_and_exits_cleanly_on_ctrl_c(
    server: Server, clean: Simulator, redis_client: redis.Redis
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weathernote_client",
        "--url",
        server.url,
        "--json",
        "watch",
        "--lat",
        "48.8566",
        "--lon",
        "2.3522",
        env=CLIENT_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = await within(15, process.stdout.readline())
        refresh_current(server, redis_client)
        second = await within(10, process.stdout.readline())
        first_update, second_update = json.loads(first), json.loads(second)
        assert first_update["cell"] == second_update["cell"] == {"lat": 48.9, "lon": 2.4}
        assert dt.datetime.fromisoformat(second_update["fetched_at"]) > dt.datetime.fromisoformat(
            first_update["fetched_at"]
        )
        process.send_signal(signal.SIGINT)
        returncode = await within(10, process.wait())
        errors = (await process.stderr.read()).decode()
        assert returncode in (0, 130) and "Traceback" not in errors, errors
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
