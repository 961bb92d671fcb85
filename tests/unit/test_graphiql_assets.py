"""The offline GraphiQL page loads nothing from outside the server.

weathernote/static/graphiql/ is served with a real Starlette StaticFiles mount
at /graphiql (wrapped, as the app wraps it, in the Content-Security-Policy of
weathernote/http/csp.py) under uvicorn on a free loopback port, and the page
is read the way a browser would: every src/href of index.html must be a
same-server path that answers 200 with a plausible content type and body, the
vendored files must match their SRI hashes and VERSIONS.txt and be production
builds, every response must carry the strict policy, and the page must point
GraphiQL at /graphql over HTTP and at a ws:/wss: URL of the same host for
subscriptions. A missing asset, a development build or a CDN URL creeping back
fails here. (tests/system/test_graphiql_browser.py runs the page in Chromium.)
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from weathernote.http import csp

GRAPHIQL_DIR = Path(__file__).resolve().parents[2] / "weathernote" / "static" / "graphiql"

# The files the page must load, and the vendored ones among them (pinned by
# SRI in index.html and by sha256 in VERSIONS.txt).
REQUIRED_ASSETS = {
    "/graphiql/react.production.min.js",
    "/graphiql/react-dom.production.min.js",
    "/graphiql/graphiql.min.js",
    "/graphiql/graphiql.min.css",
    "/graphiql/explorer.js",
}
VENDORED = {
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql.min.css",
}

# Any absolute URL: a scheme followed by //, or a protocol-relative //host in
# an attribute value, a JS string or a CSS url().
ABSOLUTE_URL = re.compile(r"""[a-z][a-z0-9+.-]*://|["'(=]\s*//[^/\s]""", re.IGNORECASE)
# Well-known CDN hosts, looked for in the vendored bundles too (they hold
# plenty of documentation URLs in strings, but no CDN host is ever fetched).
CDN_URL = re.compile(
    r"//(?:[\w-]+\.)*(?:unpkg\.com|jsdelivr\.net|cdnjs\.cloudflare\.com|esm\.sh|"
    r"skypack\.dev|googleapis\.com|gstatic\.com|jspm\.io|bootcdn\.net|staticfile\.org)",
    re.IGNORECASE,
)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, dict[str, str | None]]] = []  # (tag, url, attrs)
        self.csp: str | None = None
        self.graphiql_attrs: dict[str, str | None] | None = None
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "srcset", "action", "poster", "data", "formaction"):
            if a.get(name) is not None:
                self.refs.append((tag, a[name] or "", a))
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp = a.get("content")
        if a.get("id") == "graphiql":
            self.graphiql_attrs = a
        self._in_script = tag == "script" and a.get("src") is None
        if self._in_script:
            self.inline_scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts[-1] += data


def _free_loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(
        routes=[Mount("/graphiql", csp.WithPolicy(StaticFiles(directory=GRAPHIQL_DIR, html=True)), name="graphiql")]
    )
    sock = _free_loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 15 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    # trust_env=False: never route through a proxy from the environment.
    with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def page(client: httpx.Client) -> tuple[str, _PageParser]:
    r = client.get("/graphiql/index.html")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    parser = _PageParser()
    parser.feed(r.text)
    parser.close()
    return r.text, parser


def _sri(body: bytes, integrity: str) -> bool:
    for token in integrity.split():
        algo, _, digest = token.partition("-")
        if algo in ("sha256", "sha384", "sha512"):
            actual = base64.b64encode(hashlib.new(algo, body).digest()).decode()
            if actual == digest:
                return True
    return False


def test_directory_is_served_at_graphiql_with_index(client: httpx.Client) -> None:
    # html=True: the bare directory URL serves index.html too.
    r = client.get("/graphiql/")
    assert r.status_code == 200
    assert 'id="graphiql"' in r.text


def test_page_references_only_same_server_paths(page: tuple[str, _PageParser]) -> None:
    html, parser = page
    assert parser.refs, "index.html references no assets"
    for tag, url, _ in parser.refs:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "data":  # inline (the empty favicon), nothing is fetched
            continue
        assert scheme == "", f"<{tag}> {url!r} has a scheme: only server paths are allowed"
        assert not url.startswith("//"), f"<{tag}> {url!r} is protocol-relative (another host)"
        assert url.startswith("/graphiql/"), f"<{tag}> {url!r} is not under /graphiql/"
    # Nothing absolute anywhere in the page text either (inline JS, comments,
    # the CSP): the page must not name any other origin.
    found = ABSOLUTE_URL.findall(html)
    assert not found, f"absolute URL in index.html: {found}"
    assert not parser.inline_scripts, "no inline <script>: CSP is script-src 'self'"
    paths = {url for _, url, _ in parser.refs if not url.startswith("data:")}
    missing = REQUIRED_ASSETS - paths
    assert not missing, f"index.html does not load {sorted(missing)}"


def test_every_asset_is_served(client: httpx.Client, page: tuple[str, _PageParser]) -> None:
    _, parser = page
    page_url = str(client.base_url.join("/graphiql/index.html"))
    for tag, url, attrs in parser.refs:
        if url.startswith("data:"):
            continue
        target = urljoin(page_url, url)
        assert urlsplit(target).netloc == urlsplit(str(client.base_url)).netloc
        r = client.get(target)
        assert r.status_code == 200, f"{url} answered {r.status_code}"
        ctype = r.headers.get("content-type", "")
        body = r.content
        if url.endswith(".js"):
            assert tag == "script", f"{url} should be a <script>"
            assert re.match(r"(text|application)/(x-)?javascript", ctype), f"{url}: {ctype}"
            minimum = 1_000
        elif url.endswith(".css"):
            assert tag == "link" and "stylesheet" in (attrs.get("rel") or ""), url
            assert ctype.startswith("text/css"), f"{url}: {ctype}"
            minimum = 100
        else:
            pytest.fail(f"unexpected asset type {url}")
        name = url.rsplit("/", 1)[-1]
        if name in VENDORED:
            minimum = 10_000
            integrity = attrs.get("integrity")
            assert integrity, f"vendored {url} has no integrity attribute"
            assert _sri(body, integrity), f"{url} does not match its integrity attribute"
        assert len(body) >= minimum, f"{url} is only {len(body)} bytes"
        assert not CDN_URL.search(r.text), f"{url} names a CDN: {CDN_URL.search(r.text)}"
        if name not in VENDORED:
            found = ABSOLUTE_URL.findall(r.text)
            assert not found, f"absolute URL in {url}: {found}"


def _directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


# The policy, directive by directive: this server only, no inline script, no eval.
STRICT = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "connect-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "data:"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
}


def _check_policy(policy: str, nonce: str | None = None) -> None:
    directives = _directives(policy)
    expected = {**STRICT, "style-src": ["'self'", f"'nonce-{nonce}'"]} if nonce else STRICT
    assert directives == expected, policy
    for name, sources in directives.items():
        for source in sources:
            assert source.startswith("'") or source == "data:", (
                f"CSP {name} allows {source!r}: only keywords, nonces and data: are allowed"
            )
            assert source not in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'"), (name, source)


def test_csp_allows_only_this_server(client: httpx.Client, page: tuple[str, _PageParser]) -> None:
    _, parser = page
    # The policy is a header (only a header can say frame-ancestors); a <meta> policy would be
    # a second policy, enforced too, that could not carry the page's per-response nonce.
    assert parser.csp is None, "index.html has a Content-Security-Policy meta: the server sends the policy"
    _check_policy(csp.policy())
    nonce = csp.new_nonce()
    _check_policy(csp.policy(nonce), nonce)
    assert csp.new_nonce() != nonce and len(nonce) >= 22  # 128 random bits, base64url
    # Every response of the mount carries it: the page, the directory URL and each asset.
    urls = ["/graphiql/", "/graphiql/index.html", "/graphiql/missing.js"]
    urls += [url for _, url, _ in parser.refs if not url.startswith("data:")]
    for url in urls:
        assert client.get(url).headers.get("content-security-policy") == csp.policy(), url


def test_ide_page_gets_a_fresh_nonce() -> None:
    html = (GRAPHIQL_DIR / "index.html").read_bytes()
    assert html.count(csp.NONCE_PLACEHOLDER) == 1
    first, headers = csp.ide_page(html)
    second, _ = csp.ide_page(html)
    nonce = re.search(r"'nonce-([^']+)'", headers[csp.HEADER])
    assert nonce and headers[csp.HEADER] == csp.policy(nonce.group(1))
    assert f'data-style-nonce="{nonce.group(1)}"'.encode() in first
    assert csp.NONCE_PLACEHOLDER not in first and first != second


def test_page_wires_graphql_over_http_and_websocket(client: httpx.Client, page: tuple[str, _PageParser]) -> None:
    _, parser = page
    attrs = parser.graphiql_attrs
    assert attrs is not None, 'no element with id="graphiql"'
    assert attrs.get("data-graphql-path") == "/graphql"
    assert attrs.get("data-subscription-path") == "/graphql"
    js = client.get("/graphiql/explorer.js").text
    assert 'getAttribute("data-graphql-path")' in js
    assert 'getAttribute("data-subscription-path")' in js
    assert "GraphiQL.createFetcher(" in js
    assert re.search(r"\burl:\s*httpUrl\b", js)
    assert re.search(r"\bsubscriptionUrl:\s*wsUrl\b", js)
    # ws: on http pages, wss: on https pages, host taken from the page.
    assert re.search(
        r"""wsUrl\.protocol\s*=\s*window\.location\.protocol\s*===\s*"https:"\s*\?\s*"wss:"\s*:\s*"ws:\"""",
        js,
    )
    assert "window.location" in js
    assert "isHeadersEditorEnabled: true" in js
    # The style nonce of the page goes to GraphiQL's <style> elements (react-style-singleton
    # reads the global __webpack_nonce__), the placeholder of a page served as a file never.
    assert attrs.get("data-style-nonce") == csp.NONCE_PLACEHOLDER.decode()
    assert 'getAttribute("data-style-nonce")' in js
    assert re.search(r"window\.__webpack_nonce__\s*=\s*styleNonce", js)
    assert f'styleNonce !== "{csp.NONCE_PLACEHOLDER.decode()}"' in js
    assert "shouldPersistHeaders: true" in js
    # The bundle carries its own graphql-ws client, which createFetcher uses
    # for subscriptionUrl (no extra script needed).
    bundle = client.get("/graphiql/graphiql.min.js").text
    assert "graphql-transport-ws" in bundle and "subscriptionUrl" in bundle


def test_versions_file_matches_vendored_files() -> None:
    text = (GRAPHIQL_DIR / "VERSIONS.txt").read_text()
    for pkg in ("react@18.3.1", "react-dom@18.3.1", "graphiql@3.9.0"):
        assert pkg in text
    for lic in ("react.LICENSE", "react-dom.LICENSE", "graphiql.LICENSE"):
        path = GRAPHIQL_DIR / "licenses" / lic
        assert path.is_file() and "MIT License" in path.read_text(), lic
    listed = dict(re.findall(r"^(\S+\.(?:js|css))\s+([0-9a-f]{64})$", text, re.MULTILINE))
    assert set(listed) == VENDORED, f"VERSIONS.txt sha256 list: {sorted(listed)}"
    for name, digest in listed.items():
        actual = hashlib.sha256((GRAPHIQL_DIR / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} differs from the sha256 in VERSIONS.txt"


def test_vendored_scripts_are_production_builds() -> None:
    # graphiql <= 3.8.3 shipped a 3.5 MB webpack development build as graphiql.min.js
    # (96,000 lines); 3.9.0's is Vite's minified UMD build (under 1 MB, a few dozen lines).
    bundle = (GRAPHIQL_DIR / "graphiql.min.js").read_bytes()
    assert b"webpackBootstrap" not in bundle
    assert len(bundle) < 1_500_000, f"graphiql.min.js is {len(bundle)} bytes: a development build?"
    assert bundle.count(b"\n") < 1_000, "graphiql.min.js is not minified"
    for name in ("react.production.min.js", "react-dom.production.min.js"):
        body = (GRAPHIQL_DIR / name).read_bytes()
        assert body.startswith(b"/**\n * @license React") and b".production.min.js" in body[:200], name
        assert body.count(b"\n") < 1_000, f"{name} is not minified"
    # The UMD bundle uses neither eval nor new Function (script-src 'self' forbids both) and
    # starts no workers (default-src 'none' would refuse them).
    for forbidden in (b"eval(", b"new Function(", b"new Worker(", b"importScripts("):
        assert forbidden not in bundle, forbidden
