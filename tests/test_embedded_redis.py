"""With no Redis URL, `weathernote serve` runs its own Redis and keeps the cache across restarts."""

from __future__ import annotations

from pathlib import Path

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
