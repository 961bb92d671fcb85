"""With no Redis URL, `weathernote serve` runs its own Redis and keeps the cache across restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, Simulator, graphql

QUERY = "{ current(lat: 40.7128, lon: -74.0060) { cached cell { lat lon } } }"


def test_embedded_redis_starts_persists_and_stops(tmp_path: Path, clean: Simulator) -> None:
    env = {
        "WEATHERNOTE_UPSTREAM_URL": clean.url,
        "WEATHERNOTE_DATA_DIR": str(tmp_path),
        "WEATHERNOTE_LOG_LEVEL": "info",
        "WEATHERNOTE_PREWARM_INTERVAL_SECONDS": "0",
    }
    first = Server(env)
    try:
        assert graphql(first.url, QUERY).json()["data"]["current"]["cached"] is False
        port_file = tmp_path / "redis.port"
        assert port_file.exists()
        port, pid = port_file.read_text().split()
        assert f"embedded Redis at redis://127.0.0.1:{port}" in first.logs()
    finally:
        assert first.stop() == 0
    assert not port_file.exists(), "the embedded Redis must be stopped with the server"
    assert not Path(f"/proc/{pid}").exists()

    second = Server(env)
    try:
        again = graphql(second.url, QUERY).json()["data"]["current"]
        assert again == {"cached": True, "cell": {"lat": 40.7, "lon": -74.0}}
        assert clean.stats()["served"] == 1
    finally:
        second.stop()


@pytest.mark.topologies
def test_redis_cli_reaches_the_configured_redis_single_or_cluster(redis_url: str, clean: Any, spell: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    env["WEATHERNOTE_REDIS_URL"] = redis_url
    key = spell("weather:lat:1.0:lon:1.0")
    command = [sys.executable, "-m", "weathernote", "redis-cli"]
    subprocess.run([*command, "SET", key, "x"], env=env, check=True, capture_output=True, timeout=10)
    got = subprocess.run([*command, "GET", key], env=env, check=True, capture_output=True, text=True, timeout=10)
    assert got.stdout.strip() == "x"  # on a Cluster the key's node answers, whichever node the URL names


def test_redis_cli_says_how_to_find_a_server_when_none_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    env["WEATHERNOTE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "weathernote", "redis-cli", "PING"], env=env, capture_output=True, text=True, timeout=10
    )
    assert done.returncode != 0
    assert str(tmp_path) in done.stderr and "WEATHERNOTE_REDIS_URL" in done.stderr
