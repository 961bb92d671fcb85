"""The GraphQL Yoga (Node) peer in bench/peers/yoga: its packages, its command, what it runs on."""

from __future__ import annotations

import json
import shutil
import subprocess

from harness import ROOT

YOGA_DIR = ROOT / "bench" / "peers" / "yoga"


def yoga_ready() -> str | None:
    """Install bench/peers/yoga's packages if needed; None when the peer can run, else why not.

    `npm ci --omit=dev` (printed) when node_modules is missing or older than package-lock.json.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not both on PATH"
    installed = YOGA_DIR / "node_modules" / ".package-lock.json"  # written by npm ci
    lock = YOGA_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        command = [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"]
        print(f"graphql-yoga: node_modules missing or older than package-lock.json; in {YOGA_DIR.relative_to(ROOT)}:")
        print(f"  {' '.join(['npm', *command[1:]])}", flush=True)
        subprocess.run(command, cwd=YOGA_DIR, check=True)
    return None


def yoga_cmd(port: int, redis_url: str) -> list[str]:
    """The peer's command line. Run it with NODE_ENV=production (yoga_env), as it is deployed."""
    return ["node", str(YOGA_DIR / "server.mjs"), "--port", str(port), "--redis-url", redis_url]


def yoga_env(env: dict[str, str]) -> dict[str, str]:
    # graphql-js skips its development-only checks under NODE_ENV=production
    return {**env, "NODE_ENV": "production"}


def yoga_versions() -> str:
    """One line: node and the packages the peer runs on."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    packages = ", ".join(
        f"{name} {json.loads((YOGA_DIR / 'node_modules' / name / 'package.json').read_text())['version']}"
        for name in ("graphql-yoga", "graphql", "graphql-ws", "ioredis")
    )
    return f"node {node}, {packages}, one process, NODE_ENV=production"


def response_cache_version() -> str:
    """The version of @graphql-yoga/plugin-response-cache the peer's --response-cache runs."""
    package = YOGA_DIR / "node_modules" / "@graphql-yoga" / "plugin-response-cache" / "package.json"
    return str(json.loads(package.read_text())["version"])
