"""The clients in a reconnect storm: a server that paces connection starts (2 a second after a
burst of 1) closes the rest with 4429 and a retry hint; each client waits what it was told (plus
jitter) and comes back, instead of giving up (4429 for a second `connection_init` stays fatal)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ROOT, Server, Simulator, server_env

CLIENT_DIR = ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))  # the client is its own distribution; the tests use its source tree

from weathernote_client import RetryPolicy, WeatherNoteClient  # noqa: E402

WATCHES = 5
CELLS = [(45.04 + i * 0.3, 6.04) for i in range(WATCHES)]


@pytest.fixture(scope="module")
def paced(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(server_env(redis_url, simulator, connection_start_rate_per_second=2, connection_start_burst=1))
    yield srv
    srv.stop()


def paced_starts(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    found = re.search(r'^weathernote_rate_limited_total\{scope="starts",transport="ws"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_python_watches_refused_in_a_storm_come_back_when_told(paced: Server, clean: Simulator) -> None:
    before = paced_starts(paced)
    # a backoff far longer than the test: only the server's hint can bring a refused watch back in time
    patient = RetryPolicy(base_delay=60, max_delay=60)

    async def first(lat: float, lon: float) -> object:
        async with WeatherNoteClient(paced.url, client_id=f"storm-{lat}", retry=patient) as client:
            updates = client.watch_current(lat, lon)
            try:
                async with asyncio.timeout(30):
                    return await anext(updates)
            finally:
                await updates.aclose()

    values = await asyncio.gather(*(first(lat, lon) for lat, lon in CELLS))
    assert len(values) == WATCHES and all(value is not None for value in values)
    assert paced_starts(paced) - before >= WATCHES - 2, "the storm was paced: some starts were refused first"
