"""Abuse from the open internet: one server with its default fair-use settings against hostile clients.

Issue 24: whatever every user shares (Open-Meteo's free tier, Redis, the process's memory), no
single client may take. One `weathernote serve` with its DEFAULT limits and shares (only what the
environment needs is set: its own embedded Redis, the simulator, a strong client-id secret, no
pre-warmer, X-Forwarded-For believed from loopback so that each client has an address of its own,
as behind a proxy), in front of the Open-Meteo simulator enforcing the free tier (600 weighted
calls a minute, 5,000 an hour, 10,000 a day: a 429 there means the service overspent).

Three phases of `--phase-seconds`, the same load in each:
  - one abuser (one x-client-id, one address) sends, as fast as it is answered, requests of
    fifteen aliased 16-day forecasts (daily and hourly) of cold cells nobody else asks for;
  - `--polite` clients (each its own id and address): every 5 s each asks again for the current
    weather and the forecast of its latest cell ("warm" asks), and cold cells (current, then a
    forecast, of a cell nobody asked for) are handed round-robin to them at a pace that spends
    `--polite-share` of the upstream's minute budget (100 clients at 0.5: one cold cell every
    0.55 s, about one a minute each; no client over a cold cell every 10 s, so none meets its
    request limit of 60 reads a minute).
  1. Redis up.
  2. Redis paused: its process SIGSTOPped for the phase (SIGCONT after); the server is not
     restarted and must spend from its local allowance (the budget over the expected instances),
     counted in weathernote_upstream_local_weight_total.
  3. Redis killed: SIGKILL, started again on the same port (empty) after the phase.

Then four floods, each with the server's RSS before and after:
  a. APQ registrations of distinct ~10 KB documents from one client: only the admitted ones may
     be stored (apq:* keys in Redis);
  b. WebSocket connections from one address, half never sending connection_init: at most the
     per-address cap (256) open at once, the rest refused with HTTP 429;
  c. chunked uploads of 64 MB each, streamed until the server answers: 413 once past 256 KiB;
  d. distinct valid documents (~2 KB each, from 100 ids over 25 addresses, so that each is
     admitted and run): RSS bounded by the document cache's byte budget.

How to read it. Per phase: the polite clients' cold answers with data (current / forecast
non-null; target >= 99 %); the abuser's answers by kind; the abuser's upstream spending (the
simulator's weight minus what polite answers with `cached: false` fetched: 1 per current,
request_weight(1, [DAILY, HOURLY]) per forecast) against its shares (a tenth of the minute's
540 per started minute of the phase, a twentieth of the day's 9,000 for the run; the hour's share
is 225); the upstream's weight in any 60 s span (sampled every second; target <= 600, the free
tier; the budget is 540) and its 429s (target 0); with Redis unreadable, what was spent locally
(target <= 540 per started minute Redis was unreadable). The abuser's own max over any 60 s span
is also printed (attribution +/- one polite fetch): across a phase boundary it may exceed its
minute share, because a process's local allowance does not know what the shared windows held.
At the end: one markdown table, a row per phase and flood, and the server's ERROR log lines.

Usage: python bench/abuse.py [--phase-seconds 30] [--polite 100] [--polite-share 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets
from harness import Components, components, free_port
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from weathernote.model import Part
from weathernote.redis import EmbeddedRedis
from weathernote.settings import Settings
from weathernote.simulator import SimulatorProcess
from weathernote.upstream import request_weight

T = TypeVar("T")


def default(name: str) -> Any:
    """A setting's default, as the server runs it (nothing here is raised or lowered)."""
    return Settings.model_fields[name].default


BUDGET = {window: float(default(f"upstream_budget_per_{window}")) for window in ("minute", "hour", "day")}
FREE_TIER = {"minute": 600, "hour": 5000, "day": 10000}  # the simulator's knobs: Open-Meteo's free tier
SHARE_MINUTE = BUDGET["minute"] * default("upstream_client_share_per_minute")  # 54
SHARE_HOUR = BUDGET["hour"] * default("upstream_client_share_per_day")  # 225: the hour uses the day's share
SHARE_DAY = BUDGET["day"] * default("upstream_client_share_per_day")  # 450
WS_CAP = int(default("ws_max_connections_per_address"))  # 256
BODY_CAP = int(default("http_max_body_bytes"))  # 256 KiB
DOCUMENT_BUDGET = int(default("render_cache_bytes"))  # 64 MiB, each in-process cache
CURRENT_WEIGHT = request_weight(1, [Part.CURRENT])
FORECAST_WEIGHT = request_weight(1, [Part.DAILY, Part.HOURLY])  # every `days` shares the 16-day entry
SECRET = "3c9e1f7a5b2d8c4e6a0f9b1d3e5c7a2f4b6d8e0a1c3f5e7b9d2a4c6e8f0b1d3a"
REQUEST_TIMEOUT = 25.0  # a miss may wait 10 s for budget room, then 10 s for the upstream
WARM_EVERY = 5.0  # a polite client's warm asks (3 reads)
COLD_MIN_EVERY = 10.0  # at most one cold cell (3 reads) per polite client this often: 54 reads a minute < 60
LOCAL_WEIGHT = "weathernote_upstream_local_weight_total"
FLOOD_CELL = (48.85, 2.35)  # one warm cell every flood document reads (no upstream cost)

ABUSE = (
    "query Abuse("
    + ", ".join(f"$lat{i}: Float!, $lon{i}: Float!" for i in range(15))
    + ") { "
    + " ".join(
        f"f{i}: forecast(lat: $lat{i}, lon: $lon{i}, days: 16) "
        "{ daily { temperatureMax } hourly(hours: 384) { temperature } }"
        for i in range(15)
    )
    + " }"
)
CURRENT = "query Current($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"
FORECAST = (
    "query Forecast($lat: Float!, $lon: Float!) { forecast(lat: $lat, lon: $lon, days: 7) "
    "{ cached daily { temperatureMax } hourly(hours: 48) { temperature } } }"
)
POLITE_ASKS = (("current", CURRENT, CURRENT_WEIGHT), ("forecast", FORECAST, FORECAST_WEIGHT))


# ---------------------------------------------------------------- who asks, and where


@dataclass(frozen=True)
class Client:
    """A client as the server identifies it: an x-client-id, and the address a trusted proxy forwarded."""

    id: str
    address: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-client-id": self.id, "x-forwarded-for": self.address}


ABUSER = Client("abuser-7f3a", "203.0.113.66")


def polite_client(index: int) -> Client:
    return Client(f"polite-{index:04d}", f"10.1.{index // 250}.{index % 250 + 1}")


class Cells:
    """Cells nobody asked for yet: each call a new one (a 0.1° grid, rows of 3,400 from 80° S)."""

    def __init__(self) -> None:
        self.taken = 0

    def take(self) -> tuple[float, float]:
        index, self.taken = self.taken, self.taken + 1
        return round(-80 + (index // 3400) * 0.1, 1), round(-170 + (index % 3400) * 0.1, 1)


# ---------------------------------------------------------------- what the server and the upstream say


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def server_metrics(client: httpx.AsyncClient, base: str) -> dict[str, float]:
    """The server's /metrics, one value per `name{labels}`."""
    values = {}
    for line in (await client.get(f"{base}/metrics", timeout=15)).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class Upstream:
    """The simulator's counters sampled every second: (monotonic time, weight, 429s) since start."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = f"{url}/__simulator/stats"
        self.points: list[tuple[float, float, int]] = []
        self.last: dict[str, Any] = {}

    async def read(self) -> tuple[float, int]:
        """A sample now: (weight, 429s)."""
        stats = (await self.client.get(self.url, timeout=5)).json()
        self.last = stats
        point = (time.monotonic(), float(stats["weight"]), int(stats["statuses"].get("429", 0)))
        self.points.append(point)
        return point[1], point[2]

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                await self.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)

    def series(self, minus: Callable[[float], float] | None = None) -> list[tuple[float, float]]:
        points = sorted(self.points)
        return [(at, weight - (minus(at) if minus else 0.0)) for at, weight, _ in points]


def max_in_span(series: list[tuple[float, float]], start: float, end: float, span: float = 60.0) -> float:
    """The most a cumulative series grew within any `span` seconds ending between `start` and `end`."""
    best, first = 0.0, 0
    for at, value in series:
        while series[first][0] < at - span:
            first += 1
        if start <= at <= end:
            best = max(best, value - series[first][1])
    return best


class PoliteSpending:
    """What polite answers with `cached: false` fetched, by when they were asked."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float]] = []

    def add(self, at: float, weight: float) -> None:
        self.events.append((at, weight))

    def until(self, at: float) -> float:
        events = sorted(self.events)
        return sum(weight for _, weight in events[: bisect.bisect_right(events, (at, math.inf))])


def answer_kind(response: httpx.Response, fields: Iterable[str]) -> tuple[str, bool]:
    """("data" or what refused it, whether every field was `cached`)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}", False
    body = response.json()
    data = body.get("data") or {}
    values: list[dict[str, Any] | None] = [data.get(name) for name in fields]
    present = [value for value in values if value is not None]
    if values and len(present) == len(values):
        return "data", all(value.get("cached", False) for value in present)
    codes = sorted({(error.get("extensions") or {}).get("code", "?") for error in body.get("errors") or []})
    return ("/".join(codes) or "no data"), False


# ---------------------------------------------------------------- the load of a phase


@dataclass
class Phase:
    name: str
    seconds: float
    cold: Counter[str] = field(default_factory=Counter)
    cold_by_field: Counter[str] = field(default_factory=Counter)
    warm: Counter[str] = field(default_factory=Counter)
    abuser: Counter[str] = field(default_factory=Counter)
    polite_weight: float = 0.0
    upstream_weight: float = 0.0
    upstream_429: int = 0
    max_minute: float = 0.0
    abuser_max_minute: float = 0.0
    local_weight: float | None = None
    unreadable_seconds: float = 0.0

    @property
    def abuser_weight(self) -> float:
        return round(self.upstream_weight - self.polite_weight, 6) + 0.0  # no "-0.0"

    @property
    def polite_share(self) -> float:
        asked = sum(self.cold.values())
        return self.cold["data"] / asked if asked else 0.0

    @property
    def local_allowance(self) -> float:
        return BUDGET["minute"] * max(1, math.ceil(self.unreadable_seconds / 60))


@dataclass
class Load:
    """What every phase shares: the HTTP clients, the cells, the polite clients' latest cells."""

    base: str
    client: httpx.AsyncClient
    abuser_client: httpx.AsyncClient
    polite: list[Client]
    cold_every: float
    cells: Cells = field(default_factory=Cells)
    latest: dict[int, tuple[float, float]] = field(default_factory=dict)
    spending: PoliteSpending = field(default_factory=PoliteSpending)

    async def post(
        self, query: str, variables: dict[str, Any], who: Client, client: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        return await (client or self.client).post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables},
            headers=who.headers,
            timeout=REQUEST_TIMEOUT,
        )


async def abuse(load: Load, phase: Phase, until: float) -> None:
    """Fifteen aliased 16-day forecasts of cold cells a request, the next as soon as one is answered."""
    while time.monotonic() < until:
        variables: dict[str, float] = {}
        for index in range(15):
            variables[f"lat{index}"], variables[f"lon{index}"] = load.cells.take()
        try:
            response = await load.post(ABUSE, variables, ABUSER, load.abuser_client)
        except httpx.HTTPError as exc:
            phase.abuser[f"no answer ({type(exc).__name__})"] += 1
            await asyncio.sleep(0.05)
            continue
        kind, _ = answer_kind(response, [f"f{index}" for index in range(15)])
        phase.abuser[kind] += 1


async def ask(load: Load, phase: Phase, index: int, cell: tuple[float, float], tally: Counter[str]) -> None:
    """A polite client's current weather, then its forecast, of `cell`; a fetch counted as polite spending."""
    variables = {"lat": cell[0], "lon": cell[1]}
    for name, query, weight in POLITE_ASKS:
        asked_at = time.monotonic()
        try:
            kind, cached = answer_kind(await load.post(query, variables, load.polite[index]), [name])
        except httpx.HTTPError as exc:
            kind, cached = f"no answer ({type(exc).__name__})", False
        tally[kind] += 1
        if tally is phase.cold:
            phase.cold_by_field[f"{name} {'data' if kind == 'data' else 'refused'}"] += 1
        if kind == "data" and not cached:
            phase.polite_weight += weight
            load.spending.add(asked_at, weight)


async def ask_cold(load: Load, phase: Phase, index: int, cell: tuple[float, float]) -> None:
    """A cold cell; it becomes the client's latest (its warm asks') only once answered, so that a warm
    ask never shares the cold ask's fetch (its answer would say `cached: false` too, counted twice)."""
    await ask(load, phase, index, cell, phase.cold)
    load.latest[index] = cell


async def hand_out_cold_cells(load: Load, phase: Phase, until: float) -> None:
    """A cold cell every `cold_every` seconds, round-robin over the polite clients."""
    asks: set[asyncio.Task[None]] = set()
    turn = 0
    due = time.monotonic()
    while due < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        index = turn % len(load.polite)
        cell = load.cells.take()
        task = asyncio.create_task(ask_cold(load, phase, index, cell))
        asks.add(task)
        task.add_done_callback(asks.discard)
        turn += 1
        due += load.cold_every
    if asks:
        await asyncio.wait(asks, timeout=2 * REQUEST_TIMEOUT + 5)


async def ask_warm(load: Load, phase: Phase, index: int, until: float) -> None:
    """Every few seconds, the current weather and forecast of this client's latest cell, if it has one yet."""
    await asyncio.sleep(random.uniform(0, WARM_EVERY))
    while time.monotonic() < until:
        cell = load.latest.get(index)
        started = time.monotonic()
        if cell is not None:
            await ask(load, phase, index, cell, phase.warm)
        await asyncio.sleep(max(0.0, WARM_EVERY - (time.monotonic() - started)))


async def run_load(load: Load, phase: Phase) -> None:
    until = time.monotonic() + phase.seconds
    async with asyncio.timeout(phase.seconds + 3 * REQUEST_TIMEOUT):
        await asyncio.gather(
            abuse(load, phase, until),
            hand_out_cold_cells(load, phase, until),
            *(ask_warm(load, phase, index, until) for index in range(len(load.polite))),
        )


# ---------------------------------------------------------------- Redis faults


def redis_pid(redis: EmbeddedRedis) -> int:
    assert redis._process is not None, "the embedded Redis is not running"
    return redis._process.pid


async def break_redis(redis: EmbeddedRedis, how: str | None) -> None:
    if how == "paused":
        os.kill(redis_pid(redis), signal.SIGSTOP)
    elif how == "killed":
        await asyncio.to_thread(redis.kill)


async def mend_redis(redis: EmbeddedRedis, how: str | None) -> None:
    if how == "paused":
        os.kill(redis_pid(redis), signal.SIGCONT)
    elif how == "killed":
        await asyncio.to_thread(redis.start)  # the same port: EmbeddedRedis keeps it


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `check` until true; the seconds it took. RuntimeError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what}: not within {timeout:g} s")


async def redis_ok(load: Load) -> bool:
    health = (await load.client.get(f"{load.base}/health", timeout=5)).json()
    return bool(health["redis"] == "ok" and health["breaker"] == "closed")


# ---------------------------------------------------------------- phases


async def run_phase(load: Load, upstream: Upstream, redis: EmbeddedRedis, phase: Phase, how: str | None) -> Phase:
    """The load for the phase's length, Redis broken `how` (None, "paused", "killed") meanwhile, then mended."""
    local_before = (await server_metrics(load.client, load.base)).get(LOCAL_WEIGHT, 0.0)
    weight_before, refused_before = await upstream.read()
    started = time.monotonic()
    await break_redis(redis, how)
    try:
        await run_load(load, phase)
        weight_after, refused_after = await upstream.read()
        ended = time.monotonic()
    finally:
        await mend_redis(redis, how)
    await wait_until(lambda: redis_ok(load), 60, "the server sees Redis again")
    phase.unreadable_seconds = time.monotonic() - started if how else 0.0
    if how:
        phase.local_weight = (await server_metrics(load.client, load.base)).get(LOCAL_WEIGHT, 0.0) - local_before
    phase.upstream_weight = weight_after - weight_before
    phase.upstream_429 = refused_after - refused_before
    phase.max_minute = max_in_span(upstream.series(), started, ended)
    phase.abuser_max_minute = max_in_span(upstream.series(load.spending.until), started, ended)
    return phase


def print_phase(number: int, phase: Phase, abuser_so_far: float) -> None:
    cold = sum(phase.cold.values())
    by_field = ", ".join(f"{kind} {count}" for kind, count in sorted(phase.cold_by_field.items()))
    print(f"\n{number}. {phase.name} ({phase.seconds:g} s)")
    print(
        f"  polite cold cells: {phase.cold['data']}/{cold} answers with data ({phase.polite_share:.1%}; {by_field})"
        f"; refusals {dict(phase.cold - Counter(data=phase.cold['data'])) or 'none'}"
    )
    warm = sum(phase.warm.values())
    print(
        f"  polite warm asks: {phase.warm['data']}/{warm} with data; other {dict(phase.warm - Counter(data=phase.warm['data'])) or 'none'}"
    )
    print(f"  abuser: {sum(phase.abuser.values()):,} requests: {describe_abuser(phase)}")
    print(
        f"  abuser upstream spending: {phase.abuser_weight:.1f} weighted calls in the phase (its share: {SHARE_MINUTE:g} a"
        f" minute, {SHARE_HOUR:g} an hour, {SHARE_DAY:g} a day); at most {phase.abuser_max_minute:.1f} in any 60 s"
        f" span ending in the phase; {abuser_so_far:.1f} in the run so far"
    )
    print(
        f"  upstream: {phase.upstream_weight:.1f} weighted calls in the phase ({phase.polite_weight:.1f} polite);"
        f" at most {phase.max_minute:.1f} in any 60 s span ending in the phase (free tier {FREE_TIER['minute']},"
        f" budget {BUDGET['minute']:g}); 429s {phase.upstream_429}"
    )
    if phase.local_weight is not None:
        print(
            f"  local allowance: {phase.local_weight:.1f} weighted calls counted in {LOCAL_WEIGHT} of"
            f" {phase.upstream_weight:.1f} spent; allowed {phase.local_allowance:g}"
            f" ({BUDGET['minute']:g} a started minute, Redis unreadable {phase.unreadable_seconds:.0f} s)"
        )


def describe_abuser(phase: Phase) -> str:
    kinds = Counter(phase.abuser)
    parts = [
        f"{kinds.pop('data', 0):,} with data (200)",
        f"{kinds.pop('RATE_LIMITED', 0):,} RATE_LIMITED field errors",
        f"{kinds.pop('HTTP 429', 0):,} HTTP 429",
    ]
    parts += [f"{count:,} {kind}" for kind, count in kinds.most_common()]
    return ", ".join(parts)


def phase_row(phase: Phase) -> tuple[str, str, str, bool]:
    cold = sum(phase.cold.values())
    share_limit = SHARE_MINUTE * max(1, math.ceil(phase.seconds / 60))
    checks = [
        phase.polite_share >= 0.99,
        phase.abuser_weight <= share_limit + 1e-6,
        phase.upstream_429 == 0,
        phase.max_minute <= FREE_TIER["minute"],
    ]
    figures = (
        f"polite cold {phase.cold['data']}/{cold} ({phase.polite_share:.1%}); abuser {describe_abuser(phase)};"
        f" abuser spent {phase.abuser_weight:.1f}; upstream max 60 s {phase.max_minute:.1f}, 429s {phase.upstream_429}"
    )
    targets = f"polite ≥ 99 %; abuser ≤ {share_limit:g}; upstream ≤ {FREE_TIER['minute']}/60 s, 0 × 429"
    if phase.local_weight is not None:
        checks.append(phase.local_weight <= phase.local_allowance)
        figures += f"; local weight {phase.local_weight:.1f}"
        targets += f"; local ≤ {phase.local_allowance:g}"
    return phase.name, figures, targets, all(checks)


# ---------------------------------------------------------------- floods


@dataclass
class Flood:
    name: str
    figures: str
    targets: str
    met: bool


async def gather_bounded(jobs: Iterable[Awaitable[T]], concurrency: int) -> list[T]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


def apq_request(index: int) -> dict[str, Any]:
    text = f"query Apq{index} {{ current(lat: {FLOOD_CELL[0]}, lon: {FLOOD_CELL[1]}) {{ temperature }} }}\n# "
    text += "abuse-" * ((10_000 - len(text)) // 6)
    sha = hashlib.sha256(text.encode()).hexdigest()
    return {"query": text, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}}}


async def count_keys(redis_url: str, pattern: str) -> int:
    async with Redis.from_url(redis_url) as redis:
        return sum([1 async for _ in redis.scan_iter(match=pattern, count=1000)])


async def flood_apq(load: Load, pid: int, redis_url: str, count: int) -> Flood:
    registrar = Client("registrar-51c2", "203.0.113.77")
    before, stored_before = rss_mib(pid), await count_keys(redis_url, "apq:*")

    async def register(index: int) -> int:
        try:
            response = await load.client.post(
                f"{load.base}/graphql", json=apq_request(index), headers=registrar.headers, timeout=REQUEST_TIMEOUT
            )
        except httpx.HTTPError:
            return 0
        return response.status_code

    statuses = Counter(await gather_bounded((register(index) for index in range(count)), 16))
    stored = await count_keys(redis_url, "apq:*") - stored_before
    after = rss_mib(pid)
    figures = (
        f"{count:,} registrations of ~10 KB: statuses {dict(sorted(statuses.items()))}; apq:* keys stored {stored};"
        f" RSS {before:.1f} → {after:.1f} MiB"
    )
    return Flood("a. APQ registrations", figures, "stored ≤ admitted (200s)", stored <= statuses[200])


async def handshake(url: str, address: str) -> tuple[str, Any]:
    """One WebSocket handshake: ("accepted", the socket), or what refused it."""
    try:
        sock = await websockets.connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"x-forwarded-for": address},
            open_timeout=15,
            close_timeout=2,
        )
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}", None
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        return f"failed ({type(exc).__name__})", None
    return "accepted", sock


async def initialise(sock: Any) -> str:
    """connection_init on an open socket: the server's answer."""
    try:
        await sock.send(json.dumps({"type": "connection_init"}))
        reply = json.loads(await asyncio.wait_for(sock.recv(), 10))
        return f"init: {reply.get('type')}"
    except websockets.ConnectionClosed as closed:
        return f"init: closed {closed.rcvd.code if closed.rcvd else '?'}"
    except TimeoutError:
        return "init: no answer"


async def flood_websockets(load: Load, pid: int, count: int) -> Flood:
    """Every handshake first (no socket the server closes frees a place meanwhile, so the cap is exact),
    then connection_init on the even-numbered accepted ones; the odd ones never send it."""
    url = load.base.replace("http://", "ws://") + "/graphql"
    address = "198.51.100.99"
    before = rss_mib(pid)
    started = time.monotonic()
    handshakes = await gather_bounded((handshake(url, address) for _ in range(count)), 200)
    seconds = time.monotonic() - started
    outcomes = Counter(label for label, _ in handshakes)
    held = [sock for _, sock in handshakes if sock is not None]
    opened = (await server_metrics(load.client, load.base)).get("weathernote_websocket_connections", -1)
    initialising = [sock for index, (_, sock) in enumerate(handshakes) if sock is not None and index % 2 == 0]
    outcomes.update(await asyncio.gather(*(initialise(sock) for sock in initialising)))
    peak = rss_mib(pid)
    await asyncio.wait_for(asyncio.gather(*(sock.close() for sock in held), return_exceptions=True), 30)
    await asyncio.sleep(1)
    after = rss_mib(pid)
    figures = (
        f"{count:,} handshakes from one address in {seconds:.1f} s: {dict(sorted(outcomes.items()))}"
        f" ({len(held) - len(initialising)} accepted never initialised); open at the server then {opened:g};"
        f" RSS {before:.1f} → {peak:.1f} (held) → {after:.1f} MiB (closed)"
    )
    met = (
        outcomes["accepted"] <= WS_CAP and opened <= WS_CAP and outcomes["accepted"] + outcomes["refused 429"] == count
    )
    return Flood("b. WebSocket connections", figures, f"≤ {WS_CAP} accepted, the rest HTTP 429", met)


CHUNK = 65536
UPLOAD_HEAD = (
    b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def read_status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    return int(line.split(b" ", 2)[1]) if line.startswith(b"HTTP/1.1 ") else 0


async def chunked_upload(port: int, total: int) -> tuple[int, int]:
    """(status, bytes written before the answer) of a chunked body of `total` bytes, streamed until answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)  # what was sent, not what the kernel queued
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10)
    reader, writer = await asyncio.open_connection(sock=sock)
    answered = asyncio.create_task(read_status(reader))
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b" " * CHUNK)
    sent = 0
    try:
        writer.write(UPLOAD_HEAD)
        while sent < total and not answered.done():
            writer.write(chunk)
            sent += CHUNK
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answered}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
                break
            if drained.exception() is not None:
                break
        if not answered.done() and sent >= total:
            writer.write(b"0\r\n\r\n")
        status = await asyncio.wait_for(answered, 15)
    except (OSError, TimeoutError):
        status = answered.result() if answered.done() and not answered.exception() else 0
    finally:
        answered.cancel()
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)
    return status, sent


async def flood_uploads(load: Load, pid: int, port: int, count: int) -> Flood:
    before = rss_mib(pid)
    started = time.monotonic()
    results = await asyncio.gather(*(chunked_upload(port, 64 * 1024 * 1024) for _ in range(count)))
    seconds = time.monotonic() - started
    after = rss_mib(pid)
    statuses = Counter(status for status, _ in results)
    sent = sorted(written for _, written in results)
    figures = (
        f"{count} chunked uploads of 64 MB at once, answered in {seconds:.1f} s: statuses {dict(statuses)};"
        f" bytes written before the answer: median {sent[len(sent) // 2] / 1024:.0f} KiB, max {sent[-1] / 1024:.0f} KiB;"
        f" RSS {before:.1f} → {after:.1f} MiB"
    )
    met = statuses[413] == count and sent[-1] < 4 * 1024 * 1024
    return Flood("c. chunked uploads", figures, f"413 after {BODY_CAP // 1024} KiB, < 4 MiB written", met)


FIELDS = [
    "temperature",
    "apparentTemperature",
    "humidity",
    "precipitation",
    "weatherCode",
    "cloudCover",
    "pressure",
    "windSpeed",
    "windDirection",
    "windGusts",
]


def document(index: int) -> str:
    selections = " ".join(FIELDS[(index + step) % len(FIELDS)] for step in range(180))
    return f"query Doc{index} {{ current(lat: {FLOOD_CELL[0]}, lon: {FLOOD_CELL[1]}) {{ {selections} }} }}"


async def flood_documents(load: Load, pid: int, count: int) -> Flood:
    before = rss_mib(pid)

    async def send(index: int) -> str:
        who = Client(f"documents-{index % 100:03d}", f"192.0.2.{index % 100 // 4 + 1}")
        try:
            response = await load.client.post(
                f"{load.base}/graphql", json={"query": document(index)}, headers=who.headers, timeout=REQUEST_TIMEOUT
            )
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        return answer_kind(response, ["current"])[0]

    started = time.monotonic()
    kinds = Counter(await gather_bounded((send(index) for index in range(count)), 32))
    seconds = time.monotonic() - started
    after = rss_mib(pid)
    caches = {
        name.split('kind="')[1].split('"')[0]: value
        for name, value in (await server_metrics(load.client, load.base)).items()
        if name.startswith("weathernote_render_cache_bytes{")
    }
    held = ", ".join(f"{kind} {size / 2**20:.1f}" for kind, size in sorted(caches.items()))
    figures = (
        f"{count:,} distinct documents of ~{len(document(count)) / 1024:.1f} KB in {seconds:.1f} s: {dict(kinds)};"
        f" RSS {before:.1f} → {after:.1f} MiB (+{after - before:.1f}); caches (MiB): {held}"
    )
    met = caches.get("document", math.inf) <= DOCUMENT_BUDGET and (after - before) * 2**20 <= DOCUMENT_BUDGET
    return Flood(
        "d. distinct documents", figures, f"document cache and RSS growth ≤ {DOCUMENT_BUDGET / 2**20:g} MiB", met
    )


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    phases: list[Phase] = field(default_factory=list)
    floods: list[Flood] = field(default_factory=list)
    calibration: str = ""
    run_weight: float = 0.0
    run_429: int = 0
    by_day: dict[str, float] = field(default_factory=dict)
    abuser_run_max_minute: float = 0.0


async def calibrate(load: Load, upstream: Upstream) -> str:
    """One cold cell's current and forecast: does the simulator count what the attribution assumes?"""
    weights = []
    cell = load.cells.take()
    for name, query, _ in POLITE_ASKS:
        before, _ = await upstream.read()
        kind, cached = answer_kind(
            await load.post(query, {"lat": cell[0], "lon": cell[1]}, polite_client(9999)), [name]
        )
        after, _ = await upstream.read()
        weights.append(f"{name} {kind}{' (cached)' if cached else ''}, weight {after - before:.3f}")
    return "; ".join(weights) + f" (expected {CURRENT_WEIGHT:g} and {FORECAST_WEIGHT:.3f})"


async def run(
    args: argparse.Namespace, base: str, port: int, pid: int, running: Components, simulator_url: str
) -> Report:
    report = Report()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with (
        httpx.AsyncClient(limits=limits) as client,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as abuser_client,
    ):
        upstream = Upstream(client, simulator_url)
        sampler = asyncio.create_task(upstream.sample(stop))
        cold_every = max(
            COLD_MIN_EVERY / args.polite,
            60 * (CURRENT_WEIGHT + FORECAST_WEIGHT) / (args.polite_share * BUDGET["minute"]),
        )
        load = Load(base, client, abuser_client, [polite_client(index) for index in range(args.polite)], cold_every)
        try:
            report.calibration = await calibrate(load, upstream)
            print(f"calibration, one cold cell: {report.calibration}")
            print(
                f"polite load: {args.polite} clients, a cold cell every {cold_every:.2f} s, warm asks every {WARM_EVERY:g} s"
            )
            started = time.monotonic()
            abuser_so_far = 0.0
            for number, (name, how) in enumerate(
                (("Redis up", None), ("Redis paused", "paused"), ("Redis killed", "killed")), start=1
            ):
                phase = await run_phase(load, upstream, running.redis, Phase(name, args.phase_seconds), how)
                abuser_so_far += phase.abuser_weight
                print_phase(number, phase, abuser_so_far)
                report.phases.append(phase)
            report.abuser_run_max_minute = max_in_span(upstream.series(load.spending.until), started, time.monotonic())
            await load.post(CURRENT, {"lat": FLOOD_CELL[0], "lon": FLOOD_CELL[1]}, polite_client(9998))  # warm
            print("\n4. floods")
            for flood in (
                flood_apq(load, pid, running.redis_url, args.apq),
                flood_websockets(load, pid, args.websockets),
                flood_uploads(load, pid, port, args.uploads),
                flood_documents(load, pid, args.documents),
            ):
                async with asyncio.timeout(180):
                    result = await flood
                print(f"  {result.name}: {result.figures}")
                report.floods.append(result)
            report.run_weight, report.run_429 = await upstream.read()
            report.by_day = upstream.last.get("weight_by_day", {})
        finally:
            stop.set()
            await asyncio.wait_for(sampler, 10)
    return report


def print_summary(report: Report) -> None:
    print("\n| phase / flood | figures | target | met |")
    print("| --- | --- | --- | --- |")
    rows = [phase_row(phase) for phase in report.phases]
    rows += [(flood.name, flood.figures, flood.targets, flood.met) for flood in report.floods]
    abuser_total = sum(phase.abuser_weight for phase in report.phases)
    day = max(report.by_day.values(), default=0.0)
    rows.append(
        (
            "whole run",
            f"upstream {report.run_weight:.1f} weighted calls (the run is under an hour: its hour; the simulator's"
            f" busiest day {day:.1f}), 429s {report.run_429}; abuser {abuser_total:.1f} in all,"
            f" at most {report.abuser_run_max_minute:.1f} in any 60 s span",
            f"upstream ≤ {FREE_TIER['hour']}/h, ≤ {FREE_TIER['day']}/day, 0 × 429; abuser ≤ {SHARE_DAY:g} a day",
            report.run_weight <= FREE_TIER["hour"]
            and day <= FREE_TIER["day"]
            and report.run_429 == 0
            and abuser_total <= SHARE_DAY,
        )
    )
    for name, figures, targets, met in rows:
        print(f"| {name} | {figures} | {targets} | {'yes' if met else '**no**'} |")


def report_log(path: Path) -> None:
    """The server's ERROR lines (and anything on stderr that is not a JSON line)."""
    lines = path.read_text(errors="replace").splitlines()
    bad: list[str] = []
    warnings: Counter[str] = Counter()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if record.get("level") in ("ERROR", "CRITICAL") or "exc_info" in record:
            bad.append(line)
        elif record.get("level") == "WARNING":
            warnings[str(record.get("message"))[:100]] += 1
    print(f"\nserver stderr: {path} ({len(lines)} lines); {len(bad)} ERROR (or non-JSON) lines")
    for line in bad[:30]:
        print(f"  {line[:2000]}")
    for message, count in warnings.most_common(12):
        print(f"  WARNING x{count}: {message}")


def server_env(redis_url: str, upstream_url: str, port: int) -> dict[str, str]:
    """Defaults everywhere but what this machine needs."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WEATHERNOTE_")}
    env.update(
        {
            "WEATHERNOTE_REDIS_URL": redis_url,
            "WEATHERNOTE_UPSTREAM_URL": upstream_url,
            "WEATHERNOTE_CLIENT_ID_SECRET": SECRET,
            "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
            "WEATHERNOTE_TRUSTED_PROXIES": "127.0.0.1",
            "WEATHERNOTE_LOG_LEVEL": "warning",
            "WEATHERNOTE_PORT": str(port),
        }
    )
    return env


def start_server(running: Components, upstream_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "weathernote", "serve"],
            env=server_env(running.redis_url, upstream_url, port),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    running.processes.append(process)  # stopped by the harness
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within 30 s; see {log}")


def raise_open_files_limit() -> int:
    """The soft limit raised to the hard one (the server inherits it): 3,000 sockets need it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=None, help="each phase's length (30; --quick 7)")
    parser.add_argument("--polite", type=int, default=None, help="polite clients (100; --quick 20)")
    parser.add_argument(
        "--polite-share", type=float, default=0.5, help="the polite clients' cold cells spend this of the minute budget"
    )
    parser.add_argument("--quick", action="store_true", help="a short run: shorter phases, smaller floods")
    args = parser.parse_args()
    quick = args.quick
    args.phase_seconds = args.phase_seconds or (7.0 if quick else 30.0)
    args.polite = args.polite or (20 if quick else 100)
    args.apq, args.websockets, args.uploads, args.documents = (300, 600, 10, 500) if quick else (2000, 3000, 50, 5000)
    return args


def main() -> None:
    args = parse_args()
    open_files = raise_open_files_limit()
    log = Path(tempfile.mkstemp(prefix="abuse-server-", suffix=".log")[1])
    print(
        f"abuse: phases of {args.phase_seconds:g} s, {args.polite} polite clients; default fair use"
        f" (budget {BUDGET['minute']:g}/{BUDGET['hour']:g}/{BUDGET['day']:g} a minute/hour/day, a client's share"
        f" {SHARE_MINUTE:g}/{SHARE_HOUR:g}/{SHARE_DAY:g}); upstream free tier"
        f" {FREE_TIER['minute']}/{FREE_TIER['hour']}/{FREE_TIER['day']}; open files {open_files}",
        flush=True,
    )
    started = time.monotonic()
    free_tier = SimulatorProcess(
        rate_limit_per_minute=FREE_TIER["minute"],
        rate_limit_per_hour=FREE_TIER["hour"],
        rate_limit_per_day=FREE_TIER["day"],
    )
    with free_tier as simulator, components() as running:
        port = free_port("127.0.0.1")
        try:
            server = start_server(running, simulator.url, port, log)
            deadline = 3 * args.phase_seconds + 600
            report = asyncio.run(
                asyncio.wait_for(
                    run(args, f"http://127.0.0.1:{port}", port, server.pid, running, simulator.url), deadline
                )
            )
        finally:
            if running.redis.running:  # never leave it stopped: the teardown would wait on it
                os.kill(redis_pid(running.redis), signal.SIGCONT)
        print_summary(report)
    report_log(log)
    print(f"\n(run took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
