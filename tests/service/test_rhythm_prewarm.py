"""The daily rhythm: learned from requests, shared through Redis, ranking by the demand ahead.

The fit itself, in memory, is tested in tests/unit/test_rhythm.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env
from tests.unit.test_rhythm import counted_day
from weathernote.demand import rhythm

CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature stale } }"


def midnight() -> float:
    return (time.time() // 86400 + 1) * 86400


def prewarm_once(env: dict[str, str]) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "weathernote", "prewarm", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def base_env(redis_url: str, simulator: Simulator, **overrides: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    env.update(server_env(redis_url, simulator, **overrides))
    return env


def test_a_cell_whose_morning_starts_outranks_one_with_the_same_count_whose_night_begins(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    day = midnight()
    yesterday = datetime.fromtimestamp(day - 86400, UTC).strftime("%Y-%m-%d")
    redis_client.hset(f"rhythm:{yesterday}", mapping=counted_day({b: 100 for b in range(24)}))
    # at 08:00 UTC it is 08:00 at lon 0 (the day ahead) and 22:00 at lon -150 (the night ahead)
    redis_client.zadd("popular_cells", {"current|lat:10.0:lon:0.0": 50, "current|lat:10.0:lon:-150.0": 50})
    # four 6-hour periods a day, 6 weighted calls: this period's share keeps one cell
    env = base_env(redis_url, simulator, upstream_budget_per_day=6, prewarm_interval_seconds=21600)
    env["WEATHERNOTE_CLOCK_ANCHOR"] = f"{time.time()}:{day + 8 * 3600 + 1}"
    report = prewarm_once(env)
    assert report["rhythm_hours"] == 24
    kept = {m.decode() for m in redis_client.smembers("prewarm:kept")} - {""}
    assert kept == {"current|lat:10.0:lon:0.0"}


def test_without_a_rhythm_the_same_counts_rank_by_count_alone(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    redis_client.zadd("popular_cells", {"current|lat:10.0:lon:0.0": 40, "current|lat:10.0:lon:-150.0": 50})
    env = base_env(redis_url, simulator, upstream_budget_per_day=6, prewarm_interval_seconds=21600)
    env["WEATHERNOTE_CLOCK_ANCHOR"] = f"{time.time()}:{midnight() + 8 * 3600 + 1}"
    assert prewarm_once(env)["rhythm_hours"] == 0
    kept = {m.decode() for m in redis_client.smembers("prewarm:kept")} - {""}
    assert kept == {"current|lat:10.0:lon:-150.0"}


def test_the_rhythm_is_counted_in_redis_and_a_new_instance_fits_it_after_a_restart(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    # 1800x: a simulated hour every two real seconds; the pre-warmer marks each hour it watched
    day = midnight()
    anchor = f"{time.time()}:{day + 3 * 3600}"
    overrides = {"clock_speed": 1800, "clock_anchor": anchor, "prewarm_interval_seconds": 900}
    srv = Server(server_env(redis_url, simulator, **overrides))
    points = [{"lat": 10, "lon": lon} for lon in (-60, 0, 30, 90, 120)]
    try:
        deadline = time.monotonic() + 8  # four simulated hours
        while time.monotonic() < deadline:
            for point in points:
                assert graphql(srv.url, CURRENT, point).json()["data"]["current"]["temperature"] is not None
    finally:
        srv.stop()  # its last counts are flushed on the way out
    today = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
    fields = {k.decode(): float(v) for k, v in redis_client.hgetall(f"rhythm:{today}").items()}
    counted_bands = {int(k.split(":")[0]) for k in fields if not k.startswith("seen:")}
    assert counted_bands == {rhythm.band(p["lon"]) for p in points}
    assert sum(v for k, v in fields.items() if k.startswith("seen:")) >= 2
    # a new process, nothing in memory: it ranks by what the first one learned
    env = base_env(redis_url, simulator, **overrides)
    assert prewarm_once(env)["rhythm_hours"] > 0


def test_a_rhythm_key_of_another_type_is_repaired_and_requests_are_still_answered(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    day = midnight()
    today = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
    redis_client.set(f"rhythm:{today}", "not a hash")
    env = base_env(redis_url, simulator, prewarm_interval_seconds=21600)
    env["WEATHERNOTE_CLOCK_ANCHOR"] = f"{time.time()}:{day + 3600}"
    first = prewarm_once(env)
    assert first["stopped_by"] in (None, "allowance") and first["refreshed"] > 0
    assert redis_client.type(f"rhythm:{today}") in (b"none", b"hash")
    prewarm_once(env)
    assert redis_client.type(f"rhythm:{today}") == b"hash", "the next cycle counts again"


@pytest.mark.topologies
def test_two_instances_share_a_small_budget_and_misses_get_what_the_prewarmer_left(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    # 60 a day, started at 01:00: two 12-hour periods are left, so the first cycle takes at most half and
    # misses the rest (after noon the one period left would take the whole day: the clock is pinned)
    overrides = {
        "upstream_budget_per_day": 60,
        "upstream_budget_per_hour": 60,
        "prewarm_interval_seconds": 43200,
        "clock_anchor": f"{time.time()}:{midnight() + 3600}",
    }
    first = Server(server_env(redis_url, simulator, **overrides))
    second = Server(server_env(redis_url, simulator, **overrides))
    try:

        async def load() -> list[dict]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            f"{(first, second)[i % 2].url}/graphql",
                            json={"query": CURRENT, "variables": {"lat": -30 - i / 10, "lon": 20}},
                        )
                        for i in range(80)
                    )
                )
            return [r.json() for r in responses]

        served = asyncio.run(load())
        assert clean.stats()["weight"] <= 60, "the budget is shared, never exceeded"
        assert clean.stats()["statuses"].get("429", 0) == 0
        answered = [r for r in served if r.get("data")]
        assert len(answered) >= 30 - 1  # what the cycle left, but for a misses' spend in flight
    finally:
        first.stop()
        second.stop()


@pytest.mark.topologies
def test_every_read_is_counted_in_the_shared_popularity_in_one_flush(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis, topology: str
) -> None:
    """An instance's read counts reach the shared sorted set the pre-warmer ranks by, each (part, cell)
    with its own count (one script call a flush); a set of another type is left alone and costs nothing."""
    srv = Server(server_env(redis_url, simulator, prewarm_interval_seconds=0))
    points = {(10, lon): 1 + index % 3 for index, lon in enumerate(range(-150, 150, 10))}  # 30 cells, 1..3 reads
    try:
        for (lat, lon), reads in points.items():
            for _ in range(reads):
                assert graphql(srv.url, CURRENT, {"lat": lat, "lon": lon}).json()["data"]["current"] is not None
    finally:
        srv.stop()  # its last counts are flushed on the way out
    counted = {member.decode(): score for member, score in redis_client.zrange("popular_cells", 0, -1, withscores=True)}
    assert counted == {f"current|lat:{lat:.1f}:lon:{lon:.1f}": reads for (lat, lon), reads in points.items()}

    redis_client.delete("popular_cells")
    redis_client.set("popular_cells", "not a sorted set")
    srv = Server(server_env(redis_url, simulator, prewarm_interval_seconds=0))
    try:
        assert graphql(srv.url, CURRENT, {"lat": 10, "lon": 0}).json()["data"]["current"] is not None
    finally:
        assert srv.stop() == 0
    assert redis_client.get("popular_cells") == b"not a sorted set", "a foreign key is not ours to change"
