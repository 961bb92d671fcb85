"""Upstream economy: one call per cell across instances, the pre-warmer, the budget, the pace."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, Simulator, eventually, graphql, server_env, wait_until
from weathernote.model.cells import Grid
from weathernote.model.entries import Entry, Part
from weathernote.ops import metrics
from weathernote.prewarm import Prewarmer
from weathernote.services import Services
from weathernote.settings import Settings

CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached stale } }"


def counted(server: Server, counter: str) -> float:
    """A counter's total over its labels, as the server exposes it."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        if family.name == counter:
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def prewarm_cycles(server: Server) -> float:
    return counted(server, "weathernote_prewarm_cycles")


@pytest.mark.topologies
def test_five_hundred_cold_requests_on_two_instances_cost_one_upstream_call(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    first, second = Server(server_env(redis_url, simulator)), Server(server_env(redis_url, simulator))
    try:
        clean.configure(latency_ms=400)

        async def burst() -> list[httpx.Response]:
            body = {"query": CURRENT, "variables": {"lat": -33.9249, "lon": 18.4241}}
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=500), timeout=30) as client:
                return await asyncio.gather(
                    *(client.post(f"{(first, second)[i % 2].url}/graphql", json=body) for i in range(500))
                )

        responses = asyncio.run(burst())
        assert {r.status_code for r in responses} == {200}
        assert len({json.dumps(r.json()["data"]["current"]["temperature"]) for r in responses}) == 1
        assert clean.stats()["served"] == 1
    finally:
        first.stop()
        second.stop()


def test_an_expired_entry_that_cannot_have_changed_is_renewed_without_an_upstream_call(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    srv = Server(server_env(redis_url, simulator, weather_ttl_seconds=1))
    try:
        assert graphql(srv.url, CURRENT, {"lat": 3, "lon": 3}).json()["data"]["current"]["cached"] is False
        time.sleep(1.2)  # past the 1 s TTL, still within the upstream's 15-minute step
        again = graphql(srv.url, CURRENT, {"lat": 3, "lon": 3}).json()["data"]["current"]
        assert again == {**again, "cached": True, "stale": False}
        assert clean.stats()["served"] == 1
    finally:
        srv.stop()


def test_prewarm_once_warms_the_hundred_cities_in_at_most_four_requests(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    # a paid-tier budget: the cycle's pacing allowance then covers all 100 cities at any hour
    env.update(server_env(redis_url, simulator, upstream_budget_per_day=1_000_000, upstream_budget_per_hour=100_000))
    run = subprocess.run(
        [sys.executable, "-m", "weathernote", "prewarm", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    stats = clean.stats()
    assert report["requests"] == stats["served"] <= 4
    assert report["refreshed"] == 100 and report["stopped_by"] is None
    assert stats["locations"] == 100  # the cities' current weather, in one multi-location request
    assert redis_client.exists("weather:lat:35.7:lon:139.7") == 1  # Tokyo
    assert redis_client.exists("weather:lat:-23.6:lon:-46.6") == 1  # São Paulo
    # nothing is refetched that cannot have changed
    rerun = subprocess.run(
        [sys.executable, "-m", "weathernote", "prewarm", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["requests"] == 0
    assert clean.stats()["served"] == stats["served"]


def test_with_the_hour_target_a_cell_refreshed_this_hour_is_not_refetched_when_its_entry_lapses(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    env.update(
        server_env(
            redis_url,
            simulator,
            upstream_budget_per_day=1_000_000,
            upstream_budget_per_hour=100_000,
            freshness_target_seconds=3600,
        )
    )
    started = time.time()
    assert prewarm_once(env)["refreshed"] == 100  # the cities, all kept
    # each entry lapses at its step's end, its last good copy stays: what Redis holds an hour later
    lapsed = list(redis_client.scan_iter("weather:*"))
    assert len(lapsed) == 100 and redis_client.delete(*lapsed) == 100
    again = prewarm_once(env)
    if time.time() // 900 == started // 900:
        assert again["refreshed"] == 0, "the same step's values, an hour from the target"
    else:  # a step flipped meanwhile: the oldest quarter goes early, so refreshes spread over the hour
        assert again["refreshed"] == 25
    assert clean.stats()["locations"] == 100 + again["refreshed"]


@pytest.mark.topologies
def test_one_leader_runs_the_cycles_and_another_takes_over_when_it_dies(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    started = time.monotonic()
    servers = [Server(server_env(redis_url, simulator, prewarm_interval_seconds=2)) for _ in range(2)]
    try:
        time.sleep(5)
        cycles = [prewarm_cycles(s) for s in servers]
        # one at start-up, then one per 2 s period boundary passed (however slow the start)
        most = 2 + (time.monotonic() - started) / 2
        assert sorted(cycles)[0] == 0 and 2 <= sorted(cycles)[1] <= most, cycles
        # after the one at start-up, cycles start just after the period's boundaries
        # (0.2 s after, for a 2 s period): not at whatever moment the last one ended
        assert 200 <= int(redis_client.get("prewarm:last_cycle")) % 2000 < 1200
        leader = servers[cycles.index(max(cycles))]
        follower = servers[1 - servers.index(leader)]
        leader.process.send_signal(signal.SIGKILL)  # dies holding the lease
        leader.process.wait(10)
        wait_until(lambda: prewarm_cycles(follower) >= 1, timeout=3 + 2 + 3)  # lease + interval + slack
    finally:
        for srv in servers:
            srv.stop()


def test_the_prewarmer_backs_off_on_429(redis_url: str, simulator: Simulator, clean: Simulator) -> None:
    clean.configure(forced_status=429)
    srv = Server(server_env(redis_url, simulator, prewarm_interval_seconds=600))
    try:
        wait_until(lambda: clean.stats()["requests"] >= 1, timeout=10)
        time.sleep(0.5)
        assert clean.stats()["requests"] == 1, "no hot retry"
        wait_until(lambda: clean.stats()["requests"] >= 3, timeout=20)
        time.sleep(1)
        assert clean.stats()["requests"] == 3, "gives up after three attempts until the next cycle"
    finally:
        srv.stop()


@pytest.mark.topologies
def test_a_small_budget_is_never_exceeded_and_misses_come_first(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    # two cycles a day and a small hour: the pre-warmer may spend half of that hour
    srv = Server(
        server_env(
            redis_url,
            simulator,
            upstream_budget_per_day=60,
            upstream_budget_per_hour=60,
            prewarm_budget_share=0.5,
            prewarm_interval_seconds=43200,
            upstream_budget_wait_seconds=0,
        )
    )
    try:
        wait_until(lambda: clean.stats()["requests"] >= 1, timeout=10)
        time.sleep(1)
        assert 0 < clean.stats()["weight"] <= 30, "the pre-warmer keeps to its share"

        async def load() -> list[dict]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            f"{srv.url}/graphql", json={"query": CURRENT, "variables": {"lat": 60 + i / 10, "lon": 60}}
                        )
                        for i in range(80)
                    )
                )
            return [r.json() for r in responses]

        served = asyncio.run(load())
        answered = [r for r in served if r.get("data")]
        refused = [r for r in served if not r.get("data")]
        assert len(answered) >= 27, "the pre-warmer left the misses their half"
        assert refused and all(r["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE" for r in refused)
        assert clean.stats()["weight"] <= 60, "the budget is never exceeded"
    finally:
        srv.stop()


def test_a_failing_upstream_serves_stale_and_opens_its_breaker(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    # its clock runs 300x: cached entries are due for a refresh within seconds
    srv = Server(server_env(redis_url, simulator, clock_speed=300, upstream_breaker_failures=2))
    try:
        points = [{"lat": 30 + i, "lon": 31} for i in range(3)]
        for point in points:
            assert graphql(srv.url, CURRENT, point).json()["data"]["current"]["cached"] is False
        time.sleep(3.5)
        clean.reset()
        clean.configure(error_rate=1.0)
        for _ in range(3):
            for point in points:
                body = graphql(srv.url, CURRENT, point).json()
                assert "errors" not in body and body["data"]["current"]["stale"] is True
        requests_when_open = clean.stats()["requests"]
        assert requests_when_open == 2, "after two failures the breaker stops hammering a failing upstream"
        text = httpx.get(f"{srv.url}/metrics").text
        assert 'weathernote_breaker_state{name="upstream"} 2.0' in text
        assert 'weathernote_stale_served_total{cause="breaker",part="current"}' in text
    finally:
        srv.stop()


def test_misses_keep_to_the_days_pace_when_recent_data_can_stand_in(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    # the server's day starts two simulated hours ago: an even pace allows (2/24 + 10%) of it by now
    real = time.time()
    day = (real // 86400 + 1) * 86400
    env = server_env(
        redis_url, simulator, upstream_budget_per_day=100, clock_anchor=f"{real}:{day + 7200}", clock_speed=100
    )
    srv = Server(env)
    budget_key = f"{{upstream_budget}}:day:{int(day)}"
    try:
        assert graphql(srv.url, CURRENT, {"lat": 44, "lon": 44}).json()["data"]["current"]["cached"] is False
        time.sleep(0.8)  # 80 simulated seconds: the upstream may have newer data now
        redis_client.set(budget_key, 30)  # ahead of pace: 30 > about 18.5
        redis_client.delete("weather:lat:44.0:lon:44.0")  # due again; its stale copy is recent
        served = graphql(srv.url, CURRENT, {"lat": 44, "lon": 44}).json()["data"]["current"]
        assert served["stale"] is True and clean.stats()["served"] == 1, "recent data stood in"
        assert graphql(srv.url, CURRENT, {"lat": 45, "lon": 45}).json()["data"]["current"]["cached"] is False
        assert clean.stats()["served"] == 2, "a cell without data is always fetched"
        assert 'weathernote_stale_served_total{cause="pace",part="current"} 1.0' in httpx.get(f"{srv.url}/metrics").text
    finally:
        srv.stop()
    # behind pace (an instance that never saw more spent: one that did keeps the day from going back)
    redis_client.set(budget_key, 5)
    srv = Server(env)
    try:
        time.sleep(0.8)
        redis_client.delete("weather:lat:44.0:lon:44.0")
        assert graphql(srv.url, CURRENT, {"lat": 44, "lon": 44}).json()["data"]["current"]["cached"] is False
    finally:
        srv.stop()


def test_a_miss_spends_only_on_cells_popular_enough_when_older_data_can_stand_in(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    # The server's clock runs a day ahead of the upstream's, and 50x: every entry fetched is
    # due for newer data a simulated minute later (1.2 s), whatever the wall clock says. It
    # starts at a step's start, so that no step flips (18 s later) while a choice stands.
    real = time.time()
    step_start = (real + 86400) // 900 * 900 + 1
    srv = Server(server_env(redis_url, simulator, clock_speed=50, clock_anchor=f"{real}:{step_start}"))
    try:
        for lat in (46, 47):
            assert graphql(srv.url, CURRENT, {"lat": lat, "lon": 46}).json()["data"]["current"]["cached"] is False
        # what the pre-warmer publishes: the budget keeps the first cell fresh, not the second
        redis_client.sadd("prewarm:kept", "", "current|lat:46.0:lon:46.0")
        time.sleep(2.4)  # 120 simulated seconds: both are due for newer data
        redis_client.delete("weather:lat:46.0:lon:46.0", "weather:lat:47.0:lon:46.0")
        popular = graphql(srv.url, CURRENT, {"lat": 46, "lon": 46}).json()["data"]["current"]
        assert popular["cached"] is False and clean.stats()["served"] == 3
        tail = graphql(srv.url, CURRENT, {"lat": 47, "lon": 46}).json()["data"]["current"]
        assert tail["stale"] is True and clean.stats()["served"] == 3, "older data stands in for the tail"
        assert (
            'weathernote_stale_served_total{cause="value",part="current"} 1.0' in httpx.get(f"{srv.url}/metrics").text
        )
        # the decision stands for a while: the next reads do not ask Redis about the cell again
        judged = redis_client.info("commandstats").get("cmdstat_sismember", {}).get("calls", 0)
        for _ in range(5):
            assert graphql(srv.url, CURRENT, {"lat": 47, "lon": 46}).json()["data"]["current"]["stale"] is True
        assert redis_client.info("commandstats")["cmdstat_sismember"]["calls"] == judged
        assert (
            'weathernote_stale_served_total{cause="value",part="current"} 6.0' in httpx.get(f"{srv.url}/metrics").text
        )
        redis_client.delete("prewarm:kept")
    finally:
        srv.stop()


def prewarm_once(env: dict[str, str]) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "weathernote", "prewarm", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_cycle_spends_what_is_left_of_the_day_evenly_over_the_periods_left(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    day = (time.time() // 86400 + 1) * 86400
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    base.update(server_env(redis_url, simulator, upstream_budget_per_day=200, prewarm_interval_seconds=21600))

    def at(hour: int) -> dict[str, str]:  # the pre-warmer's clock at that hour of a day
        return {**base, "WEATHERNOTE_CLOCK_ANCHOR": f"{time.time()}:{day + hour * 3600 + 1}"}

    # A city's current weather weighs 1. At midnight four 6-hour periods are left:
    # (200 - 0.5% kept for misses) / 4 = 49.75, or 49 cities.
    morning = prewarm_once(at(0))
    assert (morning["refreshed"], morning["stopped_by"]) == (49, "allowance")
    kept = {m.decode() for m in redis_client.smembers("prewarm:kept")} - {""}
    assert len(kept) == 49 and "current|lat:35.7:lon:139.7" in kept, "the most valuable first: Tokyo"
    redis_client.flushdb()
    # at 18:00 the last period may spend what is left after what misses spent today: 79
    redis_client.set(f"{{upstream_budget}}:day:{int(day)}", 120)
    evening = prewarm_once(at(18))
    assert (evening["refreshed"], evening["stopped_by"]) == (79, "allowance")
    assert clean.stats()["locations"] == 49 + 79


@pytest.mark.topologies
async def test_a_cycle_ranks_ahead_of_its_slot_and_fetches_at_it(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis, spell: Any
) -> None:
    """A cycle fetches a second after its period's boundary (when the upstream's step has surely
    flipped); it ranks and reads ahead of that, so a cycle started 0.5 s before 18:00:01 is the
    18:00 period's: its allowance (the day's last: all of it), its hour, and fetches at 18:00:01."""
    day = (time.time() // 86400 + 1) * 86400
    slot = day + 18 * 3600 + 1
    overrides = {"prewarm_interval_seconds": 21600, "clock_anchor": f"{time.time()}:{slot - 0.5}"}
    settings = Settings(**{**settings_overrides(redis_url, simulator), **overrides})
    services = Services(settings, prewarm_in_background=False)
    await services.start()
    try:
        report = await services.prewarmer.cycle()
    finally:
        await services.stop()
    # the last period of the day spends what is left of it (200 - 0.5 % for misses): every city
    assert (report.refreshed, report.stopped_by) == (100, None)
    tokyo = Entry.decode(Part.CURRENT, Grid().cell(35.7, 139.7), redis_client.get(spell("weather:lat:35.7:lon:139.7")))
    assert tokyo.fetched_at_ms >= slot * 1000
    watched = redis_client.hgetall(f"rhythm:{datetime.fromtimestamp(day, UTC):%Y-%m-%d}")
    assert b"seen:18" in watched and b"seen:17" not in watched


def cycles_run() -> float:
    """Pre-warm cycles this process ran, whatever their outcome."""
    [family] = metrics.PREWARM_CYCLES.collect()
    return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))


@pytest.mark.topologies
async def test_a_cycle_that_outlasts_its_lease_keeps_it_and_the_period_runs_once(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    """Two instances with a 1 s lease, an upstream answering in 3 s: the leader renews its
    lease while its cycle waits, so the other does not run the period again (with a second
    share of the day, spent on the cells the first left out)."""
    clean.configure(latency_ms=3000)
    day = (time.time() // 86400 + 1) * 86400
    # the first of four 6-hour periods: a share of 49 cities
    overrides = {"upstream_timeout_seconds": 10, "clock_anchor": f"{time.time()}:{day + 10}"}
    settings = Settings(**{**settings_overrides(redis_url, simulator), **overrides})
    instances = [Services(settings, prewarm_in_background=False) for _ in range(2)]
    prewarmers: list[Prewarmer] = []
    before = cycles_run()
    try:
        for services in instances:
            await services.start()
            prewarmers.append(
                Prewarmer(
                    redis=services.redis,
                    store=services.store,
                    memo=services.memo,
                    refresher=services.refresher,
                    budget=services.budget,
                    freshness=services.refresher.freshness,
                    demand=services.demand,
                    grid=services.grid,
                    clock=services.clock,
                    interval_seconds=21600,
                    lease_seconds=1,
                )
            )
        for prewarmer in prewarmers:
            await prewarmer.start()
        await eventually(lambda: any(p.lease.held for p in prewarmers), timeout=5)
        [leader] = [p for p in prewarmers if p.lease.held]
        await asyncio.sleep(2)  # twice the lease, the cycle still waiting for the upstream
        assert redis_client.get("prewarm:leader") == leader.lease.token.encode()
        await eventually(lambda: redis_client.get("prewarm:last_cycle") is not None, timeout=10)
        assert cycles_run() - before == 1
        assert clean.stats()["locations"] == 49
    finally:
        for prewarmer in prewarmers:
            await prewarmer.stop()
        for services in instances:
            await services.stop()


def settings_overrides(redis_url: str, simulator: Simulator) -> dict[str, str]:
    """server_env's settings with a budget of 200 a day, as Settings takes them."""
    env = server_env(redis_url, simulator, upstream_budget_per_day=200)
    return {name.removeprefix("WEATHERNOTE_").lower(): value for name, value in env.items()}


@pytest.mark.topologies
def test_misses_wait_for_the_prewarmers_batch_instead_of_paying_again(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    clean.configure(latency_ms=1500)
    srv = Server(server_env(redis_url, simulator, prewarm_interval_seconds=900))
    try:
        wait_until(lambda: clean.stats()["requests"] >= 1, timeout=10)  # the cities' batch is in flight
        tokyo = graphql(srv.url, CURRENT, {"lat": 35.69, "lon": 139.69}).json()["data"]["current"]
        assert tokyo["temperature"] is not None and tokyo["stale"] is False
        assert clean.stats()["requests"] == 1, "the miss took the batch's data, not a call of its own"
    finally:
        srv.stop()


def test_misses_with_nothing_to_serve_wait_for_the_next_minute_of_budget(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    # 30x: a simulated minute is two real seconds; it has room for two cells
    srv = Server(
        server_env(redis_url, simulator, clock_speed=30, upstream_budget_per_minute=2, upstream_budget_wait_seconds=300)
    )
    try:

        async def five_cold_cells() -> list[dict]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            f"{srv.url}/graphql", json={"query": CURRENT, "variables": {"lat": 50 + i, "lon": 50}}
                        )
                        for i in range(5)
                    )
                )
            return [r.json() for r in responses]

        served = asyncio.run(five_cold_cells())
        assert all(r["data"]["current"]["temperature"] is not None for r in served), served
        assert clean.stats()["served"] == 5
        assert counted(srv, "weathernote_budget_waits") >= 1, "two a minute: some waited for the next"
    finally:
        srv.stop()
