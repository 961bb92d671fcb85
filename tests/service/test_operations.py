"""Operating it: metrics that move by exactly what happened, JSON logs, readiness, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, Simulator, free_port, graphql, server_env, wait_until
from tests.wsclient import GraphQLSocket
from weathernote.redis.embedded import EmbeddedRedis

CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_by_exactly_what_happened(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis
) -> None:
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=10))
    try:
        before = scrape(srv.url)
        client = {"x-client-id": "metrics-device"}
        for point in ({"lat": 1, "lon": 1}, {"lat": 2, "lon": 2}):  # two misses
            assert graphql(srv.url, CURRENT, point, headers=client).json()["data"]["current"]["cached"] is False
        for _ in range(3):  # three hits
            assert (
                graphql(srv.url, CURRENT, {"lat": 1, "lon": 1}, headers=client).json()["data"]["current"]["cached"]
                is True
            )
        assert (
            graphql(srv.url, "{ current(lat: 100, lon: 1) { cached } }", headers=client).status_code == 200
        )  # bad input

        async def subscribe_and_refresh() -> dict:
            async with GraphQLSocket(srv.url) as socket:
                await socket.init()
                await socket.subscribe("s", "subscription { weatherUpdates(lat: 2, lon: 2) { cached } }")
                await socket.data()
                during = scrape(srv.url)
                redis_client.delete("weather:lat:2.0:lon:2.0", "stale:weather:lat:2.0:lon:2.0")  # force a refetch
                graphql(srv.url, CURRENT, {"lat": 2, "lon": 2}, headers={"x-client-id": "other"})
                await socket.data()
                return during

        during = asyncio.run(subscribe_and_refresh())
        for _ in range(5):  # 4 left of 10 (2 + 3 + 1 + the refresh's own client), then refused
            graphql(srv.url, CURRENT, {"lat": 1, "lon": 1}, headers=client)
        wait_until(lambda: value(scrape(srv.url), "weathernote_websocket_connections") == 0, timeout=5)
        after = scrape(srv.url)

        def moved(metric: str, **labels: str) -> float:
            return value(after, metric, **labels) - value(before, metric, **labels)

        assert moved("weathernote_requests_total", transport="http", operation="current", outcome="ok") == 2 + 3 + 1 + 4
        assert moved("weathernote_requests_total", transport="http", operation="current", outcome="bad_request") == 1
        assert moved("weathernote_requests_total", transport="http", operation="current", outcome="rate_limited") == 1
        assert moved("weathernote_requests_total", transport="ws", operation="weatherUpdates", outcome="ok") == 1
        assert moved("weathernote_cache_misses_total", part="current") == 3
        assert moved("weathernote_cache_hits_total", part="current") == 3 + 1 + 4  # + the subscription's first read
        assert moved("weathernote_rate_limited_total", transport="http", scope="client") == 1
        assert moved("weathernote_upstream_calls_total", outcome="ok") == 3
        assert moved("weathernote_upstream_weight_total") == 3 * 1.0  # ten current variables weigh 1
        assert moved("weathernote_pubsub_messages_total") >= 1
        assert moved("weathernote_pubsub_deliveries_total") == 1
        assert value(during, "weathernote_websocket_connections") == 1
        assert value(during, "weathernote_subscriptions") == 1
        assert value(after, "weathernote_subscriptions") == 0
        assert value(after, "weathernote_breaker_state", name="redis") == 0
        assert moved("weathernote_request_duration_seconds_count", transport="http") == 2 + 3 + 1 + 1 + 5
        # shared figures, read from Redis at scrape time
        wait_until(lambda: value(scrape(srv.url), "weathernote_active_clients_today") >= 2, timeout=10)
        final = scrape(srv.url)
        assert value(final, "weathernote_redis_used_memory_bytes") > 0
        assert value(final, "weathernote_upstream_calls_per_million_requests") > 0
        assert value(final, "weathernote_top_cell_requests", cell="current|lat:1.0:lon:1.0") >= 3
    finally:
        srv.stop()


def test_logs_are_json_with_request_ids_and_no_raw_identities(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    srv = Server(server_env(redis_url, simulator, log_level="info"))
    try:
        response = graphql(
            srv.url,
            CURRENT,
            {"lat": 5, "lon": 5},
            headers={"x-client-id": "raw-device-id-1234", "x-request-id": "trace-42"},
        )
        assert response.headers["x-request-id"] == "trace-42"
        generated = graphql(srv.url, CURRENT, {"lat": 5, "lon": 5}).headers["x-request-id"]
        assert len(generated) == 32
        httpx.get(
            f"{srv.url}/api/v1/weather", params={"lat": 5, "lon": 5}, headers={"x-client-id": "raw-device-id-1234"}
        )
    finally:
        srv.stop()
    lines = [json.loads(line) for line in srv.logs().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "weathernote.access"]
    assert [line["request_id"] for line in access][:2] == ["trace-42", generated]
    first = access[0]
    assert first["operation"] == "current" and first["cell"] == "lat:5.0:lon:5.0" and first["cache"] == "miss"
    assert access[1]["cache"] == "hit" and access[2]["transport"] == "rest"
    assert all(isinstance(line["duration_ms"], float) for line in access)
    text = srv.logs()
    assert "raw-device-id-1234" not in text and "test-secret" not in text
    assert all("127.0.0.1" not in json.dumps(line) for line in access)


def test_ready_only_once_redis_is_up(tmp_path: Path, simulator: Simulator, clean: Simulator) -> None:
    port = free_port()
    own = EmbeddedRedis(tmp_path / "redis", port=port, persistent=False)
    srv = Server(server_env(f"redis://127.0.0.1:{port}/0", simulator), ready=False)
    try:
        assert httpx.get(f"{srv.url}/ready").status_code == 503
        assert httpx.get(f"{srv.url}/health").json()["status"] == "degraded"
        own.start()
        wait_until(lambda: httpx.get(f"{srv.url}/ready").status_code == 200, timeout=15)
    finally:
        srv.stop()
        own.stop()


def test_sigterm_lets_a_slow_request_finish_and_closes_sockets_with_1001(
    redis_url: str, simulator: Simulator, clean: Simulator
) -> None:
    srv = Server(server_env(redis_url, simulator, upstream_timeout_seconds=10))
    clean.configure(latency_ms=1500)
    result: dict = {}

    def slow_request() -> None:
        result["response"] = graphql(srv.url, CURRENT, {"lat": 7, "lon": 7})

    async def run() -> int:
        async with GraphQLSocket(srv.url) as socket:
            await socket.init()
            thread = threading.Thread(target=slow_request)
            thread.start()
            await asyncio.sleep(0.4)  # the request is now waiting on the upstream
            srv.process.send_signal(signal.SIGTERM)
            try:
                while True:
                    await socket.receive(timeout=10, skip_keepalive=False)
            except Exception as exc:
                code = exc.rcvd.code if getattr(exc, "rcvd", None) else -1  # type: ignore[attr-defined]
            thread.join(15)
            return code

    try:
        code = asyncio.run(run())
        assert code == 1001
        response = result["response"]
        assert response.status_code == 200 and response.json()["data"]["current"]["cached"] is False
        assert srv.process.wait(20) == 0
    finally:
        srv.stop()


def test_several_workers_report_one_set_of_metrics(redis_url: str, simulator: Simulator, clean: Simulator) -> None:
    srv = Server(server_env(redis_url, simulator, workers=2))
    try:
        for _ in range(12):
            assert (
                httpx.post(
                    f"{srv.url}/graphql", json={"query": "{ __typename }"}, headers={"connection": "close"}
                ).status_code
                == 200
            )
        totals = {
            value(scrape(srv.url), "weathernote_requests_total", transport="http", operation="other", outcome="ok")
            for _ in range(4)
        }
        assert totals == {12.0}, "every worker's /metrics shows the sum of all workers"
    finally:
        srv.stop()
