"""One client cannot spend what every user shares: the upstream budget, Redis, memory.

Each test is a defect found on a server with its default settings (issue 24), checked against
a real server, Redis and the upstream simulator: it failed before its fix.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, server_env, wait_until
from weathernote.redis import EmbeddedRedis

FORECASTS = (
    "{ "
    + " ".join(
        f"f{i}: forecast(lat: {-40 - i * 0.3:.1f}, lon: {120 + i * 0.3:.1f}, days: 16) "
        "{ daily { temperatureMax } hourly(hours: 384) { temperature } }"
        for i in range(15)
    )
    + " }"
)
CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached stale } }"
SHARES = {
    "upstream_client_share_per_minute": 0.1,
    "upstream_client_share_per_day": 0.05,
    "upstream_address_share_per_minute": 1,
    "upstream_address_share_per_day": 1,
}


def forecasts_far_from(offset: float) -> str:
    """Fifteen aliased 16-day forecasts (daily and hourly) of cold cells, shifted by `offset` degrees."""
    return FORECASTS.replace("lon: 12", f"lon: {int(12 + offset)}")


@pytest.mark.topologies
def test_one_client_within_its_limits_cannot_spend_the_budget_every_user_shares(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    """Requests of fifteen aliased 16-day forecasts of cold cells spent 918 weighted calls in 36 s
    and left the next client UPSTREAM_UNAVAILABLE. Now the client gets its share of the minute (a
    tenth: 10 of 100), RATE_LIMITED with retryAfter past it, and the next client is answered."""
    env = server_env(
        redis_url,
        simulator,
        upstream_budget_per_minute=100,
        upstream_budget_per_hour=1000,
        upstream_budget_per_day=2000,
        upstream_budget_wait_seconds=0,
        **SHARES,
    )
    srv = Server(env)
    try:
        refused = []
        for offset in range(4):
            answer = graphql(srv.url, forecasts_far_from(offset), headers={"x-client-id": "abuser"}).json()
            refused += [e for e in answer.get("errors", []) if e["extensions"]["code"] == "RATE_LIMITED"]
        spent = clean.stats()["weight"]
        assert 0 < spent <= 10, f"the abuser spent {spent} weighted calls, its share of the minute is 10"
        # a refused field nulls the whole answer (its type is non-null): one error per request past the share
        assert len(refused) >= 3 and all(e["extensions"]["retryAfter"] >= 1 for e in refused)
        assert {e["path"][0] for e in refused} <= {f"f{i}" for i in range(15)}, "a field's error, with its path"
        polite = graphql(srv.url, CURRENT, {"lat": 10.0, "lon": 10.0}, headers={"x-client-id": "polite"}).json()
        assert polite["data"]["current"]["cached"] is False, "another client's cold cell is answered with data"
    finally:
        srv.stop()


@pytest.mark.topologies
def test_rotating_client_ids_from_one_address_meets_the_address_share(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    env = server_env(
        redis_url,
        simulator,
        upstream_budget_per_minute=100,
        upstream_budget_per_day=2000,
        upstream_budget_wait_seconds=0,
        **{**SHARES, "upstream_address_share_per_minute": 0.2},
    )
    srv = Server(env)
    try:
        for index in range(60):
            graphql(srv.url, CURRENT, {"lat": -30.0, "lon": index * 0.5}, headers={"x-client-id": f"id-{index}"})
        assert clean.stats()["weight"] <= 20, "the address's share of the minute: a fifth of 100"
    finally:
        srv.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own, to pause."""
    server = EmbeddedRedis(tmp_path, persistent=False)
    server.start()
    yield server
    assert server._process is not None
    os.kill(server._process.pid, signal.SIGCONT)
    server.stop()


def test_with_redis_paused_spending_comes_from_a_counted_local_allowance(
    own_redis: EmbeddedRedis, simulator: Simulator, clean: Simulator
) -> None:
    """Redis paused (SIGSTOP): 450-670 more weighted calls in 20-30 s went uncounted. Now a process
    spends its share of each window (the budget over the expected instances), counts it, and adds
    it to the shared windows when Redis answers again."""
    env = server_env(
        own_redis.url,
        simulator,
        upstream_budget_per_minute=60,
        upstream_budget_per_day=5000,
        expected_instances=2,
        upstream_budget_wait_seconds=0,
        redis_timeout_seconds=0.2,
    )
    srv = Server(env)
    assert own_redis._process is not None
    try:
        assert graphql(srv.url, CURRENT, {"lat": 1.0, "lon": 1.0}).json()["data"]["current"]["cached"] is False
        before = clean.stats()["weight"]
        os.kill(own_redis._process.pid, signal.SIGSTOP)
        answered = 0
        with httpx.Client(timeout=10) as client:
            for index in range(120):
                body = client.post(
                    f"{srv.url}/graphql",
                    json={"query": CURRENT, "variables": {"lat": 20.0, "lon": index * 0.5}},
                    headers={"x-client-id": f"device-{index}"},
                ).json()
                answered += body.get("data", {}) is not None and (body["data"] or {}).get("current") is not None
        spent = clean.stats()["weight"] - before
        assert 0 < spent <= 30, f"{spent} spent while Redis was paused: the local minute allowance is 60 / 2"
        assert answered == spent, "what was spent answered a client"
        local = counted(srv, "weathernote_upstream_local_weight_total")
        assert local == spent
        os.kill(own_redis._process.pid, signal.SIGCONT)
        # once the breaker probes again, a miss reports what was spent meanwhile
        time.sleep(5.5)
        wait_until(lambda: httpx.get(f"{srv.url}/health").json()["redis"] == "ok", timeout=20)
        graphql(srv.url, CURRENT, {"lat": 2.0, "lon": 2.0})
        with redis.Redis.from_url(own_redis.url) as direct:
            minute = sum(float(value) for value in direct.hgetall("{upstream_budget}:minute").values())
        assert minute >= spent + 1, f"the shared minute holds {minute}: what was spent locally was added"
    finally:
        srv.stop()


def test_a_client_past_its_share_gets_no_fresh_share_when_redis_stops_answering(
    own_redis: EmbeddedRedis, simulator: Simulator, clean: Simulator
) -> None:
    """The local allowance started empty at an outage: a client that had just spent its minute share
    through Redis got a whole share more from the local allowance. Shared spends are now mirrored
    locally, so the allowance knows what the client spent of the last minute."""
    env = server_env(
        own_redis.url,
        simulator,
        upstream_budget_per_minute=60,
        upstream_client_share_per_minute=0.1,  # 6 weighted calls a minute per client
        upstream_budget_wait_seconds=0,
        redis_timeout_seconds=0.2,
    )
    srv = Server(env)
    assert own_redis._process is not None
    abuser = {"x-client-id": "device-abuser"}

    def current(lon: float, headers: dict[str, str]) -> dict[str, Any]:
        return graphql(srv.url, CURRENT, {"lat": 30.0, "lon": lon}, headers=headers).json()

    try:
        fetched = [current(index * 0.5, abuser)["data"]["current"]["cached"] for index in range(6)]
        assert fetched == [False] * 6, "its share, spent through Redis"
        refused = current(10.0, abuser)
        assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED", refused
        os.kill(own_redis._process.pid, signal.SIGSTOP)
        before = clean.stats()["weight"]
        during = [current(20.0 + index * 0.5, abuser) for index in range(6)]
        assert all(body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" for body in during), during
        assert clean.stats()["weight"] == before, "nothing more spent for the client with Redis paused"
        polite = current(40.0, {"x-client-id": "device-polite"})
        assert polite["data"]["current"]["cached"] is False, "another client still has its share"
    finally:
        os.kill(own_redis._process.pid, signal.SIGCONT)
        srv.stop()


def counted(server: Server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def apq(query: str) -> dict[str, Any]:
    sha = hashlib.sha256(query.encode()).hexdigest()
    return {"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}}}


@pytest.mark.topologies
def test_persisted_queries_are_stored_only_once_admitted_and_valid(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    """295 registrations refused with 429 still left 300 keys of ~200 KB in Redis."""
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=3))
    try:
        statuses = [
            httpx.post(
                f"{srv.url}/graphql",
                json=apq(f"{{ current(lat: 1, lon: {index}) {{ temperature }} }}  # {'x' * 2000}"),
                headers={"x-client-id": "registrar"},
            ).status_code
            for index in range(10)
        ]
        assert statuses == [200] * 3 + [429] * 7
        too_complex = apq("{ " + " ".join(f"a{i}: current(lat: 1, lon: 1) {{ temperature }}" for i in range(20)) + " }")
        refused = httpx.post(f"{srv.url}/graphql", json=too_complex, headers={"x-client-id": "other"}).json()
        assert refused["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        stored = list(redis_client.scan_iter(match="apq:*", count=1000))
        assert len(stored) == 3, f"only the admitted, valid texts are stored: {len(stored)}"
    finally:
        srv.stop()


def test_the_server_refuses_a_missing_short_or_placeholder_secret_with_an_external_redis(
    redis_url: str, simulator: Simulator
) -> None:
    """Without one shared strong key each worker drew its own: limits multiplied by workers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")}
    for secret in ("", "short", "REPLACE-ME-with-openssl-rand-hex-32"):
        env = {**base, **server_env(redis_url, simulator), "WEATHERNOTE_CLIENT_ID_SECRET": secret}
        run = subprocess.run(
            [sys.executable, "-m", "weathernote", "serve"], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode != 0
        assert "WEATHERNOTE_CLIENT_ID_SECRET" in run.stderr and "openssl rand -hex 32" in run.stderr
        assert "Traceback" not in run.stderr
