"""The TypeScript client (clients/typescript) against real servers: its own Node tests, run from here.

`npm test` in clients/typescript checks that the generated types are current, builds the
client and runs `node --test` against the servers this test starts (WEATHERNOTE_URL, and
WEATHERNOTE_LIMITED_URL with a limit of 2 requests a minute, WEATHERNOTE_PACED_URL pacing
connection starts at 2 a second). What a client cannot do, the
Node tests ask of a small HTTP hook here (WEATHERNOTE_CONTROL_URL): make Paris's cell refresh
(drop its entries and stale copies, then ask for it: the miss refetches and announces), and
replace the server (SIGTERM: its sockets close with 1001; another starts on the same port).
Needs `npm ci` in clients/typescript first; nothing is downloaded here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from tests import conftest
from tests.conftest import ROOT, Server, Simulator, free_port, graphql, server_env, spell_key

CLIENT = ROOT / "clients" / "typescript"
PARIS = {"lat": 48.8566, "lon": 2.3522}
PARIS_CELL = "lat:48.9:lon:2.4"
CURRENT = "query($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { cached fetchedAt } }"
FORECAST = "query($lat: Float!, $lon: Float!) { forecast(lat: $lat, lon: $lon) { cached fetchedAt daily { date } hourly(hours: 1) { time } } }"


class Harness:
    """The server the Node tests talk to, on a fixed port, and what the hook does to it."""

    def __init__(self, env: dict[str, str], redis_client: redis.Redis, topology: str) -> None:
        self.env = env
        self.redis = redis_client
        self.topology = topology
        self.port = free_port()
        self.server = self._start()
        self.actions: list[str] = []
        self.failures: list[str] = []

    def _start(self) -> Server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(conftest, "free_port", lambda: self.port)  # Server takes its port from here
            return Server(self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refresh(self, part: str) -> dict[str, Any]:
        entries = (
            [f"weather:{PARIS_CELL}"]
            if part == "current"
            else [f"forecast:{PARIS_CELL}:days:16", f"forecast:{PARIS_CELL}:days:16:hourly"]
        )
        keys = [spell_key(key, self.topology) for key in entries]
        self.redis.delete(*keys, *(f"stale:{key}" for key in keys))  # a stale copy would be renewed, not refetched
        body = graphql(self.url, CURRENT if part == "current" else FORECAST, PARIS).json()
        answer = body["data"]["current" if part == "current" else "forecast"]
        assert answer["cached"] is False, body
        return {"fetchedAt": answer["fetchedAt"]}

    def restart(self) -> dict[str, Any]:
        code = self.server.stop()
        assert code == 0, f"the server exited with {code}:\n{self.server.logs()}"
        self.server = self._start()
        return {"port": self.port}

    def stop(self) -> None:
        self.server.stop()


def serve_hook(harness: Harness) -> ThreadingHTTPServer:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            action = self.path.strip("/")
            try:
                if action == "refresh":
                    answer = harness.refresh(request["part"])
                    harness.actions.append(f"refresh {request['part']}")
                elif action == "restart":
                    answer = harness.restart()
                    harness.actions.append("restart")
                else:
                    self.send_error(404)
                    return
                status, body = 200, json.dumps(answer).encode()
            except Exception as exc:  # reported to the Node test, and failed here too
                harness.failures.append(f"{action}: {exc!r}")
                status, body = 500, repr(exc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    return hook


@pytest.fixture
def harness(
    redis_url: str, simulator: Simulator, clean: Simulator, redis_client: redis.Redis, topology: str
) -> Iterator[Harness]:
    harness = Harness(server_env(redis_url, simulator), redis_client, topology)
    yield harness
    harness.stop()


@pytest.fixture
def limited(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=2))
    yield srv
    srv.stop()


@pytest.fixture
def paced(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """Connection starts paced: 2 a second after a burst of 1 (a reconnect storm in miniature)."""
    srv = Server(server_env(redis_url, simulator, connection_start_rate_per_second=2, connection_start_burst=1))
    yield srv
    srv.stop()


def test_typescript_client_against_live_servers(
    harness: Harness, limited: Server, paced: Server, simulator: Simulator
) -> None:
    npm = shutil.which("npm")
    assert npm, "Node.js and npm are required for the TypeScript client's tests"
    assert (CLIENT / "node_modules").is_dir(), "run `npm ci` in clients/typescript first (make test does)"
    hook = serve_hook(harness)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEATHERNOTE_")},
        "WEATHERNOTE_URL": f"{harness.url}/graphql",
        "WEATHERNOTE_LIMITED_URL": f"{limited.url}/graphql",
        "WEATHERNOTE_PACED_URL": f"{paced.url}/graphql",
        "WEATHERNOTE_SIMULATOR_URL": simulator.url,
        "WEATHERNOTE_CONTROL_URL": f"http://127.0.0.1:{hook.server_address[1]}",
        "npm_config_offline": "true",  # nothing to download at test time
    }
    try:
        run = subprocess.run([npm, "test"], cwd=CLIENT, env=env, capture_output=True, text=True, timeout=150)
    finally:
        hook.shutdown()
        hook.server_close()
    print(run.stdout)
    print(run.stderr)
    assert run.returncode == 0, (
        f"npm test failed ({run.returncode}); hook failures: {harness.failures}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    )
    assert harness.failures == []
    skipped = re.search(r"^(?:# |ℹ )skipped (\d+)$", run.stdout, re.MULTILINE)
    assert skipped is None or skipped.group(1) == "0", "every Node test must run here"
    assert (
        "restart" in harness.actions and "refresh current" in harness.actions and "refresh forecast" in harness.actions
    )
