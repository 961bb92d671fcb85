"""GraphQL over HTTP as a third-party client sees it: the graphql-http audit suite (tests/node/audit.mjs,
Node.js) against a real server, every MUST and SHOULD passing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.conftest import Server

CLIENTS = Path(__file__).resolve().parents[1] / "node"


def test_graphql_http_audit_passes_every_must_and_should(server: Server) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required for the third-party client tests"
    run = subprocess.run(
        [node, str(CLIENTS / "audit.mjs"), f"{server.url}/graphql"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CLIENTS,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert len(results) >= 61
    failing = [r for r in results if r["status"] in ("error", "warn")]
    assert failing == [], failing
