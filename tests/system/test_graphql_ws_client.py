"""A third-party client on the live feed: the graphql-ws package (tests/node/subscribe.mjs, Node.js)
subscribes to a real server and hears a refresh; its Redis subscription is gone when it leaves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import redis

from tests.conftest import Server, Simulator, wait_until
from tests.service.test_subscriptions import PARIS, PARIS_CHANNEL, WEATHER, numsub, refresh


def test_third_party_graphql_ws_client(server: Server, clean: Simulator, redis_client: redis.Redis) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required for the third-party client tests"
    clients = Path(__file__).resolve().parents[1] / "node"
    process = subprocess.Popen(
        [
            node,
            str(clients / "subscribe.mjs"),
            server.url.replace("http", "ws") + "/graphql",
            WEATHER,
            json.dumps(PARIS),
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=clients,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        refresh(server, redis_client)
        second = json.loads(process.stdout.readline())
        assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert second["data"]["weatherUpdates"]["fetchedAt"] > first["data"]["weatherUpdates"]["fetchedAt"]
    wait_until(lambda: numsub(redis_client, PARIS_CHANNEL) == 0, timeout=5)
