"""GraphiQL in a real browser: Debian's Chromium, driven by Playwright, against a real server.

A `weathernote serve` process (Redis, the upstream simulator) serves the explorer at GET
/graphql. The browser runs a query and a subscription over graphql-transport-ws, sees a
refresh of the cell arrive live, and must do so under the page's Content-Security-Policy
without a single violation, console error or request to another origin. Screenshots of the
query result and of the live update are saved (the paths are printed): under
$TEST_ARTIFACTS_DIR when it is set, else in pytest's temporary directory.

Needs Chromium at /usr/bin/chromium (Debian's package: `apt-get install -y chromium`; or
$CHROMIUM) and the `playwright` package from PyPI (the test extra), which drives it through
its bundled driver: Playwright's own browser download is never used. Like the other tests
that need a tool, this one fails, never skips, when the tool is missing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import Server, Simulator, graphql, wait_until
from weathernote.http import csp

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# As the machine notes ask: no background traffic (the network is closed), a fresh profile
# (Playwright makes one per launch), headless (Playwright's default).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# `{ current(lat: 48.85, lon: 2.35) { temperature cached } }` and
# `subscription { weatherUpdates(lat: 48.85, lon: 2.35) { temperature fetchedAt } }`, laid out
# as a person would type them (and so that the screenshots show them whole).
QUERY = """{
  current(lat: 48.85, lon: 2.35) {
    temperature
    cached
  }
}"""
SUBSCRIPTION = """subscription {
  weatherUpdates(lat: 48.85, lon: 2.35) {
    temperature
    fetchedAt
  }
}"""
# The cell of (48.85, 2.35): 48.85 is 48.8499999… as a double, so it rounds to 48.8, not 48.9.
CELL = {"lat": 48.8, "lon": 2.4}
CELL_KEY = "weather:lat:48.8:lon:2.4"

# Collects the page's CSP violations from the first moment of every document (an init
# script runs through the DevTools protocol: the page's policy does not apply to it).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push({
    directive: event.violatedDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    sample: event.sample,
  });
});
"""
EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE = ".graphiql-response .CodeMirror"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("TEST_ARTIFACTS_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a setup error, said plainly
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


def _policy_nonce(header: str) -> str:
    match = re.search(r"style-src 'self' 'nonce-([A-Za-z0-9_-]{22,})'", header)
    assert match, f"no style nonce in {header!r}"
    return match.group(1)


def test_ide_page_is_served_under_a_strict_policy(server: Server) -> None:
    pages = [httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"}, timeout=10) for _ in range(2)]
    nonces = []
    for page in pages:
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        header = page.headers["content-security-policy"]
        nonce = _policy_nonce(header)
        assert header == csp.policy(nonce)
        assert f'data-style-nonce="{nonce}"' in page.text
        assert "__CSP_NONCE__" not in page.text
        assert page.headers["cache-control"] == "no-store"  # a nonce is good for one response
        nonces.append(nonce)
    assert nonces[0] != nonces[1], "the nonce must be new in every response"
    # The API on the same path is not the page.
    api = httpx.get(f"{server.url}/graphql", params={"query": "{ __typename }"}, timeout=10)
    assert "content-security-policy" not in api.headers


def _editor_value(page: Any, selector: str) -> str:
    return str(page.evaluate("s => document.querySelector(s).CodeMirror.getValue()", selector))


def _run(page: Any, document: str) -> None:
    """Puts the document in GraphiQL's query editor and presses the run button."""
    page.evaluate("([s, text]) => document.querySelector(s).CodeMirror.setValue(text)", [EDITOR, document])
    assert _editor_value(page, EDITOR) == document
    # GraphiQL parses the editor's text a moment after a change (debounced, as a person types)
    # and runs the operation it parsed: wait for it, or a subscription would go as a query.
    page.wait_for_function(
        "([s, text]) => document.querySelector(s).CodeMirror.documentAST?.loc?.source?.body === text",
        arg=[EDITOR, document],
        timeout=5_000,
    )
    page.click(".graphiql-execute-button")


def _shown(page: Any, field: str, accept: Any, timeout: float = 15) -> dict[str, Any]:
    """The result pane's `data.<field>` once it parses and `accept` takes it."""
    deadline = time.monotonic() + timeout
    while True:
        text = _editor_value(page, RESPONSE)
        try:
            value = json.loads(text)["data"][field]
        except (ValueError, KeyError, TypeError):
            value = None
        if value is not None and accept(value):
            return dict(value)
        if time.monotonic() > deadline:
            raise AssertionError(f"the result pane never showed the expected {field}: {text!r}")
        page.wait_for_timeout(50)


def _until(page: Any, predicate: Any, what: str, timeout: float = 10) -> None:
    """Waits in Playwright's own loop (time.sleep would hold back its events) until `predicate`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        page.wait_for_timeout(50)


def _subscribers(redis_client: redis.Redis, channel: str) -> int:
    return int(dict(redis_client.pubsub_numsub(channel)).get(channel.encode(), 0))


def test_graphiql_runs_a_query_and_a_live_subscription(
    server: Server,
    clean: Simulator,
    redis_client: redis.Redis,
    browser: Any,
    artifacts: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    origin = server.url
    ws_origin = origin.replace("http://", "ws://", 1)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    console: list[tuple[str, str]] = []
    page_errors: list[str] = []
    requests: list[str] = []
    sockets: list[Any] = []
    frames_sent: list[str] = []
    frames_received: list[str] = []
    page.on("console", lambda message: console.append((message.type, message.text)))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))

    def on_websocket(socket: Any) -> None:
        sockets.append(socket)
        socket.on("framesent", lambda payload: frames_sent.append(str(payload)))
        socket.on("framereceived", lambda payload: frames_received.append(str(payload)))

    page.on("websocket", on_websocket)
    try:
        response = page.goto(f"{origin}/graphql", wait_until="load")
        assert response is not None and response.status == 200
        assert "content-security-policy" in response.headers
        page.wait_for_selector(".graphiql-execute-button", timeout=15_000)

        # A query over HTTP: the cell is fetched (Redis was flushed), its temperature shown.
        _run(page, QUERY)
        current = _shown(page, "current", lambda value: "temperature" in value)
        assert isinstance(current["temperature"], float | int)
        assert current["cached"] is False
        query_shot = artifacts / "graphiql-query.png"
        page.screenshot(path=str(query_shot))

        # A subscription over graphql-transport-ws: the cell's value at once ...
        _run(page, SUBSCRIPTION)
        first = _shown(page, "weatherUpdates", lambda value: "fetchedAt" in value)
        first_shot = artifacts / "graphiql-subscription-first.png"
        page.screenshot(path=str(first_shot))
        wait_until(lambda: _subscribers(redis_client, f"updates:{CELL_KEY}") >= 1, timeout=10)
        # ... then every refresh: drop the entry and its stale copy, ask for the cell over
        # HTTP (a miss refetches and announces the new value), and watch the page.
        redis_client.delete(CELL_KEY, f"stale:{CELL_KEY}")
        body = graphql(origin, "{ current(lat: 48.85, lon: 2.35) { cached cell { lat lon } } }").json()
        assert body["data"]["current"] == {"cached": False, "cell": CELL}, body
        update = _shown(page, "weatherUpdates", lambda value: value.get("fetchedAt") != first["fetchedAt"])
        assert update["fetchedAt"] > first["fetchedAt"]
        assert isinstance(update["temperature"], float | int)
        live_shot = artifacts / "graphiql-subscription-update.png"
        page.screenshot(path=str(live_shot))

        # Stop the subscription from the page (the run button is a stop button meanwhile).
        page.click(".graphiql-execute-button")
        _until(page, lambda: any('"complete"' in frame for frame in frames_sent), "no `complete` sent")

        # A dialog: GraphiQL locks the page's scroll with a <style> element of its own, which
        # the policy lets in only because it carries the response's nonce.
        page.click("button[aria-label='Open settings dialog']")
        page.wait_for_selector("[role=dialog]", state="visible", timeout=5_000)
        assert page.evaluate("getComputedStyle(document.body).overflow") == "hidden"
        page.keyboard.press("Escape")
        page.wait_for_selector("[role=dialog]", state="detached", timeout=5_000)

        violations = page.evaluate("window.__cspViolations")
    except BaseException:
        failure_shot = artifacts / "graphiql-failure.png"
        page.screenshot(path=str(failure_shot))
        with capsys.disabled():
            print(f"\nGraphiQL at the failure: {failure_shot}; console: {console}; errors: {page_errors}")
        raise
    finally:
        context.close()

    with capsys.disabled():
        print(f"\nGraphiQL screenshots: {query_shot} {first_shot} {live_shot}")

    # The subscription went over one WebSocket to this server, speaking graphql-transport-ws
    # (`subscribe`/`next`; the legacy protocol says `start`/`data`).
    assert [socket.url for socket in sockets] == [f"{ws_origin}/graphql"]
    sent = [json.loads(frame) for frame in frames_sent]
    assert sent[0]["type"] == "connection_init"
    assert any(message["type"] == "subscribe" for message in sent), sent
    received = [json.loads(frame)["type"] for frame in frames_received]
    assert received[0] == "connection_ack" and received.count("next") >= 2, received
    # Everything the page loaded came from this server (data: URLs are inline, not fetched).
    foreign = [url for url in requests if not url.startswith((f"{origin}/", "data:"))]
    assert not foreign, f"requests to other origins: {foreign}"
    assert f"{origin}/graphiql/graphiql.min.js" in requests
    # No CSP violation, no console error, no uncaught exception.
    assert violations == [], f"CSP violations: {violations}"
    assert not [text for _, text in console if "Content Security Policy" in text], console
    errors = [(kind, text) for kind, text in console if kind in ("error", "warning")]
    assert errors == [], f"console errors and warnings: {errors}"
    assert page_errors == [], f"uncaught errors: {page_errors}"
    for shot in (query_shot, first_shot, live_shot):
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
