"""The ACL user of the deploy files: the app runs with only the commands it uses, and nothing else.

The rules are read from deploy/compose.yaml (and held equal to deploy/k8s/valkey.yaml's), given to the
session's Redis (every node of the Cluster), and a server signed in as that user serves queries,
subscriptions, persisted queries, limits, metrics and a pre-warm cycle without one refused command
(Valkey's ACL LOG stays empty), while FLUSHALL is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.conftest import Server, Simulator, graphql, server_env
from tests.wsclient import GraphQLSocket

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "acl-test-password-4f2b9c"


def user_rules(args: list[str], name: str) -> list[str]:
    """ACL user `name`'s rules among valkey-server's `--user name rule ...` arguments, password left out."""
    start = next(index for index, arg in enumerate(args) if arg == "--user" and args[index + 1] == name)
    rules = []
    for rule in args[start + 2 :]:
        if rule.startswith("--"):
            break
        if not rule.startswith(">"):
            rules.append(rule)
    return rules


def compose_rules() -> list[str]:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return user_rules(compose["services"]["valkey"]["command"], "weathernote")


def test_compose_and_kubernetes_give_the_app_the_same_commands() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "valkey.yaml").read_text()))
    [statefulset] = [d for d in documents if d and d["kind"] == "StatefulSet"]
    [valkey] = statefulset["spec"]["template"]["spec"]["containers"]
    rules = compose_rules()
    assert user_rules(valkey["args"], "weathernote") == rules
    assert "-@all" in rules and not [rule for rule in rules if rule.startswith("+@")], "commands named one by one"
    for compose_or_k8s in (
        yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["valkey"]["command"],
        valkey["args"],
    ):
        assert user_rules(compose_or_k8s, "default") == ["off"], "no default user"


@pytest.fixture
def acl_url(redis_url: str, topology: str, request: pytest.FixtureRequest) -> Any:
    """The topology's Redis with the deploy files' `weathernote` user, and the URL signing in as it."""
    urls = (
        [node.url for node in request.getfixturevalue("redis_cluster").nodes] if topology == "cluster" else [redis_url]
    )
    for url in urls:
        with redis.Redis.from_url(url) as admin:
            admin.execute_command("ACL", "SETUSER", "weathernote", "reset", "on", f">{PASSWORD}", *compose_rules())
            admin.execute_command("ACL", "LOG", "RESET")
    yield redis_url.replace("redis://", f"redis://weathernote:{PASSWORD}@"), urls
    for url in urls:
        with redis.Redis.from_url(url) as admin:
            admin.execute_command("ACL", "DELUSER", "weathernote")


def denied(urls: list[str]) -> list[Any]:
    entries = []
    for url in urls:
        with redis.Redis.from_url(url) as admin:
            entries += admin.execute_command("ACL", "LOG")
    return entries


@pytest.mark.topologies
def test_the_app_runs_as_its_acl_user_and_needs_nothing_more(
    acl_url: tuple[str, list[str]], simulator: Simulator, clean: Simulator
) -> None:
    url, urls = acl_url
    env = server_env(url, simulator, rate_limit_per_minute=1000, prewarm_interval_seconds=0)
    srv = Server(env)
    try:
        current = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"
        assert graphql(srv.url, current, {"lat": 12.3, "lon": 45.6}).json()["data"]["current"]["cached"] is False
        assert graphql(srv.url, current, {"lat": 12.3, "lon": 45.6}).json()["data"]["current"]["cached"] is True
        forecast = "{ forecast(lat: 12.3, lon: 45.6, days: 3) { daily { temperatureMax } hourly(hours: 5) { time } } }"
        assert graphql(srv.url, forecast).json()["data"]["forecast"]["daily"]
        assert httpx.get(f"{srv.url}/api/v1/weather", params={"lat": 1.5, "lon": 2.5}).status_code == 200
        text = "{ current(lat: 3.3, lon: 4.4) { temperature } }"
        sha = hashlib.sha256(text.encode()).hexdigest()
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha}}
        assert httpx.post(f"{srv.url}/graphql", json={"query": text, "extensions": apq}).status_code == 200
        assert httpx.post(f"{srv.url}/graphql", json={"extensions": apq}).json()["data"]["current"]

        async def subscribe() -> None:
            async with GraphQLSocket(srv.url) as sock:
                await sock.init()
                await sock.subscribe("w", "subscription { weatherUpdates(lat: 7.7, lon: 8.8) { temperature } }")
                assert (await sock.data())["data"]["weatherUpdates"]

        asyncio.run(subscribe())
        assert "weathernote_requests_total" in httpx.get(f"{srv.url}/metrics").text
        run = subprocess.run(
            [sys.executable, "-m", "weathernote", "prewarm", "--once"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")},
                **env,
                "WEATHERNOTE_UPSTREAM_BUDGET_PER_DAY": "400",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "NOPERM" not in srv.logs() and "NOPERM" not in run.stderr
        assert not denied(urls), f"commands the ACL user was refused: {denied(urls)}"
        client: Any = redis.RedisCluster.from_url(url) if len(urls) > 1 else redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        client.close()
    finally:
        srv.stop()
