"""Thousands of hostile inputs against one real server: never a 5xx, never a crashed worker.

Hypothesis drives every input; `hypothesis-graphql` generates valid-shaped
(and, in negative mode, almost-valid) queries from `schema.graphql`. One
`weathernote serve` process of its own, with rate limits out of the way, takes
all of them over HTTP and WebSocket; at the end it must still be running, still
answering, and its log must hold no traceback. Runs are derandomized so CI sees
the same inputs every time.

The precise answers to known bad inputs live in test_bad_input.py; here only
the invariants are checked: status < 500, a GraphQL-shaped JSON body, error
codes from the public contract, no Python internals in any message, WebSocket
closes with protocol codes only.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.conftest import DEFAULT_KNOBS, ROOT, Server, Simulator, server_env

SCHEMA = (ROOT / "schema.graphql").read_text()

ALLOWED_CODES = {
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "OPERATION_RESOLUTION_FAILURE",
    "BAD_REQUEST",
    "BAD_USER_INPUT",
    "RATE_LIMITED",
    "UPSTREAM_UNAVAILABLE",
    "QUERY_TOO_COMPLEX",
    "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_NOT_IN_LIST",
}
# What leaks when an exception escapes: a traceback, a repr, a source line, or the
# masked message of an unexpected exception in a resolver.
CRASH = re.compile(
    r"Traceback|Internal server error|Exception in ASGI|<[\w.]+ object at 0x"
    r"|\b[A-Z]\w*(?:Error|Exception)\((?:'|\")|File \"[^\"]+\", line \d+"
)
GRAPHQL_MEDIA = ("application/json", "application/graphql-response+json")
MAX_BODY = 256 * 1024
WS_MAX_MESSAGE = 64 * 1024


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,  # nothing written into the repository
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------------------
# the server and its checks


@pytest.fixture(scope="module")
def fuzz_server(redis_url: str, simulator: Simulator) -> Iterator[Server]:
    """A server of this module only, with limits that never get in the way."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    simulator.configure(**DEFAULT_KNOBS)
    simulator.reset()
    srv = Server(server_env(redis_url, simulator, rate_limit_per_minute=100_000_000))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(fuzz_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:
        yield client


def describe(response: httpx.Response) -> str:
    request = response.request
    content = request.content[:400] if request.content else b""
    return (
        f"{request.method} {str(request.url)[:400]} content-type={request.headers.get('content-type')!r}"
        f" accept={request.headers.get('accept')!r} body={content!r}\n"
        f"-> {response.status_code} {response.headers.get('content-type')!r} {response.text[:600]!r}"
    )


def check_errors(errors: Any, context: str) -> None:
    assert isinstance(errors, list) and errors, context
    for error in errors:
        assert isinstance(error, dict) and isinstance(error.get("message"), str), context
        assert not CRASH.search(error["message"]), context
        extensions = error.get("extensions")
        if isinstance(extensions, dict) and "code" in extensions:
            assert extensions["code"] in ALLOWED_CODES, context
        assert "stacktrace" not in json.dumps(extensions or {}).lower(), context


def check_result(result: Any, context: str) -> None:
    """One GraphQL response: an object with `data` or `errors`, errors from the contract."""
    assert isinstance(result, dict), context
    assert "data" in result or "errors" in result, context
    if "errors" in result:
        check_errors(result["errors"], context)


def check_graphql(response: httpx.Response, html_allowed: bool = False) -> None:
    context = describe(response)
    assert response.status_code < 500, context
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if html_allowed and media == "text/html":
        return
    assert media in GRAPHQL_MEDIA, context
    body = response.json()
    for result in body if isinstance(body, list) else [body]:
        check_result(result, context)


# ---------------------------------------------------------------------------
# strategies

VALID_QUERIES = [
    "{ __typename }",
    "{ current(lat: 48.85, lon: 2.35) { temperature cached stale condition { code description } cell { lat lon } } }",
    "{ forecast(lat: 40.7, lon: -74.0, days: 2) { days timezone fetchedAt daily { date sunrise } hourly(hours: 48) { time temperature } } }",
    "query Q { current(lat: 0, lon: 0) { units } } query R { __typename }",
    "fragment F on CurrentWeather { temperature } { current(lat: 1, lon: 1) { ...F } }",
    "{ __schema { queryType { name } types { name } } }",
    "subscription { weatherUpdates(lat: 1, lon: 1) { temperature } }",
    "mutation { __typename }",
    "{ a: current(lat: 1, lon: 1) { temperature } b: current(lat: 1, lon: 1) { humidity } }",
]
VARIABLE_QUERIES = [
    "query($lat: Float!, $lon: Float!, $units: Units) { current(lat: $lat, lon: $lon, units: $units) { temperature units cached cell { lat lon } } }",
    "query($lat: Float!, $lon: Float!, $days: Int, $hours: Int, $units: Units) { forecast(lat: $lat, lon: $lon, days: $days, units: $units) { days daily { date temperatureMax } hourly(hours: $hours) { time } } }",
    "query Q($lat: Float!, $lon: Float!) { a: current(lat: $lat, lon: $lon) { temperature } b: forecast(lat: $lat, lon: $lon) { days } }",
    "query($lat: Float = 1.0, $lon: Float = 2.0, $days: Int = 3) { forecast(lat: $lat, lon: $lon, days: $days) { daily { date } } }",
    "query($lat: Float!) { current(lat: $lat, lon: $lat) { temperature } }",
    "query($lat: Float!, $lon: Float!, $skip: Boolean!) { current(lat: $lat, lon: $lon) { temperature @skip(if: $skip) cached } }",
    "query($lat: Float!, $lon: Float!, $skip: Boolean!) { forecast(lat: $lat, lon: $lon) { daily @include(if: $skip) { date } hourly { time } } }",
    "query($lat: Float, $lon: Float) { current(lat: $lat, lon: $lon) { temperature } }",
]
SUBSCRIPTIONS = [
    "subscription($lat: Float!, $lon: Float!, $units: Units) { weatherUpdates(lat: $lat, lon: $lon, units: $units) { temperature cached cell { lat lon } } }",
    "subscription($lat: Float!, $lon: Float!, $days: Int, $hours: Int) { forecastUpdates(lat: $lat, lon: $lon, days: $days) { days daily { date } hourly(hours: $hours) { time } } }",
    "subscription($lat: Float!, $lon: Float!) { forecastUpdates(lat: $lat, lon: $lon) { days } }",
    "subscription S($lat: Float!) { weatherUpdates(lat: $lat, lon: $lat) { temperature } }",
    "subscription { weatherUpdates(lat: 1e999, lon: 0) { temperature } }",
    "subscription { forecastUpdates(lat: 1, lon: 1, days: 0) { days } }",
    "subscription { a: weatherUpdates(lat: 1, lon: 1) { temperature } b: weatherUpdates(lat: 2, lon: 2) { temperature } }",
    "subscription { weatherUpdates(lat: 1, lon: 1) { ... on CurrentWeather { temperature } } }",
]
ALL_DOCUMENTS = VALID_QUERIES + VARIABLE_QUERIES + SUBSCRIPTIONS
# graphql-ish tokens, so that random text gets past the lexer into the parser and validator
TOKENS = [
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    "!",
    "=",
    "$x",
    "$lat",
    "...",
    "@skip(if: true)",
    "@include(if: $x)",
    "query",
    "subscription",
    "mutation",
    "fragment",
    "F",
    "on",
    "Query",
    "CurrentWeather",
    "current",
    "forecast",
    "hourly",
    "lat",
    "lon",
    "days",
    "hours",
    "units",
    "METRIC",
    "IMPERIAL",
    "temperature",
    "daily",
    "date",
    "cell",
    "__typename",
    "__schema",
    '__type(name: "Query")',
    "1",
    "-1",
    "1e999",
    "0.5",
    "90",
    "2147483648",
    '"s"',
    '"""block"""',
    "null",
    "true",
    "Float",
    "Int",
    "#comment\n",
    ",",
]

INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xc0\xaf"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
hostile_numbers = st.one_of(
    st.floats(),  # NaN and infinities too: json.dumps writes them, the server must refuse them
    st.floats(min_value=-200, max_value=200),
    st.sampled_from(
        [
            90,
            -90,
            180,
            -180,
            90.0000001,
            -180.0000001,
            179.95,
            179.9499999,
            -179.95,
            89.95,
            -0.0,
            5e-324,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            2**31,
            2**31 - 1,
            -(2**31),
            -(2**31) - 1,
            2**53 + 1,
            2**63,
            2**64,
            10**30,
            10**400,
            0,
            1,
            16,
            17,
            384,
            385,
            True,
            False,
        ]
    ),
    st.integers(),
)
hostile_values = st.one_of(hostile_numbers, json_values, st.sampled_from(["1", "NaN", "METRIC", "metric", "", "1e999"]))
hostile_variables = st.fixed_dictionaries(
    {},
    optional={
        "lat": hostile_values,
        "lon": hostile_values,
        "days": hostile_values,
        "hours": hostile_values,
        "units": st.one_of(st.sampled_from(["METRIC", "IMPERIAL", "KELVIN", "metric"]), hostile_values),
        "skip": st.one_of(st.booleans(), hostile_values),
        "extra": json_values,
    },
)
raw_query_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join),
    st.sampled_from(ALL_DOCUMENTS).flatmap(
        lambda doc: st.integers(0, len(doc)).map(lambda cut: doc[:cut])  # truncated documents
    ),
)
any_query = st.one_of(raw_query_text, st.sampled_from(ALL_DOCUMENTS), from_schema(SCHEMA), json_values)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


persisted_query = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.one_of(st.just(1), json_values),
            "sha256Hash": st.one_of(
                st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64),
                st.sampled_from(ALL_DOCUMENTS).map(_sha),
                st.sampled_from(ALL_DOCUMENTS).map(lambda doc: _sha(doc).upper()),
                json_values,
            ),
        },
    ),
)
any_extensions = st.one_of(
    json_values, st.fixed_dictionaries({"persistedQuery": persisted_query}, optional={"x": json_values})
)


@st.composite
def apq_operation(draw: st.DrawFn) -> dict[str, Any]:
    """Automatic persisted queries: text and hash that match, hash alone, or a mismatch."""
    doc = draw(st.sampled_from(ALL_DOCUMENTS))
    sha = draw(st.sampled_from([_sha(doc), _sha(doc).upper(), _sha(doc + " ")]))
    operation: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha}}}
    if draw(st.booleans()):
        operation["query"] = doc
    if draw(st.booleans()):
        operation["variables"] = draw(hostile_variables)
    return operation


graphql_operation = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "query": any_query,
            "variables": st.one_of(hostile_variables, json_values),
            "operationName": st.one_of(st.sampled_from(["Q", "R", "S", "nope", ""]), json_values),
            "extensions": any_extensions,
            "other": json_values,
        },
    ),
    apq_operation(),
)
json_bodies = st.one_of(
    graphql_operation,
    st.lists(graphql_operation, max_size=12),  # batches, including empty and over the limit
    json_values,
)
accept_headers = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "*/*",
            "application/json",
            "application/graphql-response+json",
            "application/graphql-response+json;q=0.5, application/json;q=0.9",
            "application/json;q=0",
            "application/json;q=abc",
            "application/json;q=nan",
            "application/json;q=inf, application/graphql-response+json;q=-1",
            "text/html",
            "text/html,application/json",
            "image/png",
            ";;;,,,",
            "",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON ; charset=latin-1",
            "application/json; charset=utf-16",
            "application/graphql",
            "application/graphql-response+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip),
)
# legal field values (visible ASCII, inner blanks, obs-text): what an HTTP parser lets through to the app
header_bytes = st.binary(max_size=150).map(
    lambda b: bytes(c for c in b if c in (0x09, 0x20) or 0x21 <= c <= 0x7E or c >= 0x80).strip(b" \t")
)
client_ids = st.one_of(st.none(), header_bytes, st.just(b"x" * 129), st.just("\u00e9t\u00e9".encode("latin-1")))


def headers_for(accept: str | None, content_type: str | None, client_id: bytes | None) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if accept is not None:
        headers["accept"] = accept
    if content_type is not None:
        headers["content-type"] = content_type
    if client_id is not None:
        headers["x-client-id"] = client_id
    return headers


def encode_json(value: Any, ascii_only: bool) -> bytes:
    # allow_nan: NaN and Infinity go out as bare words; lone surrogates become invalid UTF-8
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------
# 1. schema-aware queries


@fuzz(500)
@given(
    query=from_schema(SCHEMA),
    method=st.sampled_from(["POST", "POST", "GET"]),
    accept=st.sampled_from([None, "application/graphql-response+json"]),
)
def test_schema_generated_queries(http: httpx.Client, query: str, method: str, accept: str | None) -> None:
    headers = {"accept": accept} if accept else {}
    if method == "GET":
        response = http.get("/graphql", params={"query": query}, headers=headers)
    else:
        response = http.post("/graphql", json={"query": query}, headers=headers)
    check_graphql(response)


@fuzz(300)
@given(query=from_schema(SCHEMA, mode=Mode.NEGATIVE))
def test_schema_generated_queries_with_one_violation(http: httpx.Client, query: str) -> None:
    response = http.post("/graphql", json={"query": query})
    check_graphql(response)
    assert response.json().get("errors"), describe(response)


@fuzz(400)
@given(
    query=st.sampled_from(VARIABLE_QUERIES),
    variables=hostile_variables,
    operation_name=st.sampled_from([None, None, "Q", "nope"]),
    method=st.sampled_from(["POST", "POST", "GET"]),
)
def test_hostile_variables(
    http: httpx.Client, query: str, variables: dict[str, Any], operation_name: str | None, method: str
) -> None:
    if method == "GET":
        params = {"query": query, "variables": json.dumps(variables, allow_nan=True)}
        if operation_name is not None:
            params["operationName"] = operation_name
        response = http.get("/graphql", params=params)
    else:
        body = encode_json({"query": query, "variables": variables, "operationName": operation_name}, True)
        response = http.post("/graphql", content=body, headers={"content-type": "application/json"})
    check_graphql(response)


# ---------------------------------------------------------------------------
# 2. raw hostile HTTP


@fuzz(450)
@given(
    body=json_bodies,
    ascii_only=st.booleans(),
    accept=accept_headers,
    content_type=st.one_of(st.just("application/json"), st.just("application/json"), content_types),
    client_id=client_ids,
)
def test_arbitrary_json_bodies(
    http: httpx.Client, body: Any, ascii_only: bool, accept: str | None, content_type: str, client_id: bytes | None
) -> None:
    response = http.post(
        "/graphql", content=encode_json(body, ascii_only), headers=headers_for(accept, content_type, client_id)
    )
    check_graphql(response)


@fuzz(300)
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.tuples(st.text(max_size=40), st.sampled_from(INVALID_UTF8), st.text(max_size=40)).map(
            lambda t: b'{"query": "' + t[0].encode() + t[1] + t[2].encode() + b'"}'
        ),
        st.tuples(st.sampled_from(INVALID_UTF8), st.sampled_from(["query", "variables", "operationName"])).map(
            lambda t: b'{"' + t[1].encode() + b'": {"' + t[0] + b'": 1}}'
        ),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b"{}",
                b"NaN",
                b"1e999",
                b"-Infinity",
                b'"{ __typename }"',
                b"\xef\xbb\xbf{}",
                b'{"query": "{ __typename }"}\x00',
                b'{"query": "{ __typename }", "query": 1}',
                b"\x00" * 100,
            ]
        ),
    ),
    accept=accept_headers,
    content_type=content_types,
    client_id=client_ids,
)
def test_arbitrary_bytes(
    http: httpx.Client, body: bytes, accept: str | None, content_type: str, client_id: bytes | None
) -> None:
    response = http.post("/graphql", content=body, headers=headers_for(accept, content_type, client_id))
    check_graphql(response)


@fuzz(300)
@given(query=raw_query_text, wrapped=st.booleans())
def test_arbitrary_query_text(http: httpx.Client, query: str, wrapped: bool) -> None:
    body = {"query": query} if not wrapped else [{"query": query}, {"query": "{ __typename }"}]
    response = http.post("/graphql", content=encode_json(body, True), headers={"content-type": "application/json"})
    check_graphql(response)


@fuzz(120)
@given(
    depth=st.one_of(st.integers(1, 300), st.integers(300, 100_000), st.sampled_from([199, 200, 1023, 1024, 1025])),
    shape=st.sampled_from(
        [
            "json-array",
            "json-object",
            "variables",
            "extensions",
            "selection",
            "list-literal",
            "object-literal",
            "fragments",
            "parens",
        ]
    ),
)
def test_deeply_nested_input(http: httpx.Client, depth: int, shape: str) -> None:
    query = "{ __typename }"
    if shape == "json-array":
        body = b"[" * depth + b"]" * depth
    elif shape == "json-object":
        body = b'{"a":' * depth + b"1" + b"}" * depth
    elif shape in ("variables", "extensions"):
        nested = '{"a":' * depth + "1" + "}" * depth
        query = VARIABLE_QUERIES[0]
        body = f'{{"query": {json.dumps(query)}, "{shape}": {{"lat": {nested}, "lon": 1}}}}'.encode()
    else:
        depth = min(depth, 20_000)  # the document limit is 16 KiB anyway; this keeps it over it
        if shape == "selection":
            query = "{ current(lat: 1, lon: 1) { " + "cell { " * depth + "lat" + " }" * depth + " } }"
        elif shape == "list-literal":
            query = "{ current(lat: " + "[" * depth + "1" + "]" * depth + ", lon: 1) { temperature } }"
        elif shape == "object-literal":
            query = "{ current(lat: " + "{a: " * depth + "1" + "}" * depth + ", lon: 1) { temperature } }"
        elif shape == "fragments":
            fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(min(depth, 800)))
            query = "{ ...F0 } " + fragments + f" fragment F{min(depth, 800)} on Query {{ ...F0 }}"
        else:
            query = "{ current" + "(" * depth + " lat: 1, lon: 1" + ")" * depth + " { temperature } }"
        body = json.dumps({"query": query}).encode()
    response = http.post("/graphql", content=body, headers={"content-type": "application/json"})
    check_graphql(response)
    if len(body) > MAX_BODY:
        assert response.status_code == 413, describe(response)


@fuzz(40)
@given(
    size=st.sampled_from([16 * 1024 - 20, 16 * 1024 + 1, 100_000, MAX_BODY - 40, MAX_BODY + 1, 300_000]),
    char=st.sampled_from(["a", " ", "{", "é", "\u2603", "\\", "\x00", "#"]),
    where=st.sampled_from(["query", "variable", "operationName", "extensions-key", "get-query"]),
)
def test_huge_strings(http: httpx.Client, size: int, char: str, where: str) -> None:
    big = char * (size // len(char.encode()))
    if where == "get-query":
        response = http.get("/graphql", params={"query": big[:6000]})
        assert response.status_code < 500, describe(response)
        if response.status_code != 414 and response.status_code != 431:
            check_graphql(response)
        return
    body: dict[str, Any] = {"query": VARIABLE_QUERIES[0], "variables": {"lat": 1, "lon": 1}}
    if where == "query":
        body["query"] = big
    elif where == "variable":
        body["variables"]["lat"] = big
    elif where == "operationName":
        body["operationName"] = big
    else:
        body["extensions"] = {big: 1}
    response = http.post("/graphql", content=encode_json(body, False), headers={"content-type": "application/json"})
    check_graphql(response)


get_params = st.dictionaries(
    st.one_of(st.sampled_from(["query", "variables", "operationName", "extensions"]), st.text(max_size=8)),
    st.one_of(
        st.text(max_size=100),
        st.sampled_from(ALL_DOCUMENTS),
        json_values.map(json.dumps),
        hostile_variables.map(lambda v: json.dumps(v, allow_nan=True)),
        any_extensions.map(json.dumps),
    ),
    max_size=5,
)
raw_query_strings = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "query=",
                "variables=",
                "extensions=",
                "operationName=",
                "&",
                "=",
                "%",
                "%ff",
                "%c3%28",
                "%ed%a0%80",
                "%00",
                "+",
                ";",
                "query=%7B__typename%7D",
                "%7B",
                "a[]=1",
                "query",
            ]
        ),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.~{}:[]\"'", max_size=10),
    ),
    max_size=12,
).map("".join)


@fuzz(350)
@given(
    params=st.one_of(get_params, raw_query_strings),
    accept=accept_headers,
    client_id=client_ids,
)
def test_get_with_random_params(
    http: httpx.Client, fuzz_server: Server, params: dict[str, str] | str, accept: str | None, client_id: bytes | None
) -> None:
    headers = headers_for(accept, None, client_id)
    if isinstance(params, str):
        response = http.get(httpx.URL(f"{fuzz_server.url}/graphql?{params}"), headers=headers)
    else:
        response = http.get("/graphql", params=params, headers=headers)
    check_graphql(response, html_allowed="text/html" in (accept or "").lower())


@fuzz(60)
@given(method=st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]), body=st.binary(max_size=50))
def test_other_methods(http: httpx.Client, method: str, body: bytes) -> None:
    response = http.request(method, "/graphql", content=body or None)
    assert response.status_code < 500, describe(response)


@fuzz(150)
@given(
    path=st.sampled_from(["/api/v1/weather", "/api/v1/forecast"]),
    params=st.dictionaries(
        st.sampled_from(["lat", "lon", "days", "units", "x"]),
        st.one_of(st.text(max_size=20), hostile_numbers.map(str)),
        max_size=5,
    ),
)
def test_rest_random_params(http: httpx.Client, path: str, params: dict[str, str]) -> None:
    response = http.get(path, params=params)
    assert response.status_code < 500, describe(response)
    assert response.headers.get("content-type", "").startswith("application/json"), describe(response)
    response.json()


def test_http_still_serves(http: httpx.Client, fuzz_server: Server) -> None:
    assert fuzz_server.process.poll() is None
    assert http.get("/health").status_code == 200
    assert http.post("/graphql", json={"query": "{ __typename }"}).json() == {"data": {"__typename": "Query"}}


# ---------------------------------------------------------------------------
# 3. WebSocket frames

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
TRANSPORT_TYPES = {"connection_ack", "next", "error", "complete", "ping", "pong"}
LEGACY_TYPES = {"connection_ack", "ka", "data", "error", "complete"}
# 1000 normal, 1009 too big, 1007 invalid UTF-8 in a text frame (only when we sent one), 4xxx the protocols'
CLOSE_OK = {1000, 1009}

message_types = st.one_of(
    st.sampled_from(
        [
            "connection_init",
            "ping",
            "pong",
            "subscribe",
            "complete",
            "start",
            "stop",
            "connection_terminate",
            "next",
            "data",
            "error",
            "ka",
            "connection_ack",
            "CONNECTION_INIT",
            "",
        ]
    ),
    st.text(max_size=10),
)
operation_ids = st.one_of(st.sampled_from(["1", "2", "a", "1", ""]), st.text(max_size=6), json_values)
subscribe_payloads = st.one_of(
    st.fixed_dictionaries(
        {"query": st.sampled_from(SUBSCRIPTIONS + VARIABLE_QUERIES + VALID_QUERIES)},
        optional={
            "variables": st.one_of(hostile_variables, json_values),
            "operationName": st.one_of(st.sampled_from(["S", "Q", "nope"]), json_values),
            "extensions": any_extensions,
        },
    ),
    graphql_operation,
    json_values,
)
ws_messages = st.fixed_dictionaries(
    {"type": st.one_of(message_types, message_types, json_values)},
    optional={"id": operation_ids, "payload": st.one_of(subscribe_payloads, json_values)},
)
ws_frames = st.one_of(
    ws_messages.map(lambda m: ("json", m)),
    st.text(max_size=80).map(lambda t: ("text", t)),
    st.binary(max_size=80).map(lambda b: ("binary", b)),
    st.sampled_from(INVALID_UTF8).map(lambda b: ("raw", b'{"type": "' + b + b'"}')),
    st.sampled_from([WS_MAX_MESSAGE + 1, 200_000]).map(lambda n: ("text", "x" * n)),
    st.sampled_from(["[]", "null", "1", '{"type": 1}', '{"type": null}', "{}", '"connection_init"']).map(
        lambda t: ("text", t)
    ),
)


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


class Exchange:
    """One fuzzed connection: what was sent, what came back, and how it ended."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.sent_ids: set[str] = set()
        self.pending: set[str] = set()
        self.init_sent = False
        self.sent_invalid_utf8 = False
        self.close: Any = None

    @property
    def legacy(self) -> bool:
        return self.protocol == LEGACY

    def context(self) -> str:
        def short(item: Any) -> str:
            text = repr(item)
            return text if len(text) < 300 else text[:300] + f"...({len(text)} chars)"

        return (
            f"protocol={self.protocol!r}\nsent={[short(s) for s in self.sent]}\n"
            f"received={[short(r) for r in self.received]}\nclose={self.close!r}"
        )

    def send(self, ws: ClientConnection, kind: str, value: Any) -> None:
        self.sent.append((kind, value))
        if kind == "json":
            ws.send(json.dumps(value, allow_nan=True))
            self._track(value)
        elif kind == "text":
            ws.send(value)
        elif kind == "binary":
            ws.send(value, text=False)
        else:  # raw bytes as a text frame, invalid UTF-8 included
            self.sent_invalid_utf8 = True
            ws.send(value, text=True)

    def _track(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind, operation_id = message.get("type"), message.get("id")
        if kind == "connection_init":
            self.init_sent = True
        if not isinstance(operation_id, str):
            return
        if (
            kind == ("start" if self.legacy else "subscribe")
            and operation_id
            and isinstance(message.get("payload"), dict)
        ):
            self.sent_ids.add(operation_id)
            self.pending.add(operation_id)
        elif kind == ("stop" if self.legacy else "complete"):
            self.pending.discard(operation_id)

    def check(self, text: str | bytes) -> dict[str, Any]:
        context = self.context()
        assert isinstance(text, str), f"binary frame from the server\n{context}"
        message = json.loads(text)
        self.received.append(message)
        context = self.context()
        assert isinstance(message, dict), context
        assert message.get("type") in (LEGACY_TYPES if self.legacy else TRANSPORT_TYPES), context
        kind = message["type"]
        if kind in ("next", "data", "error", "complete"):
            assert message.get("id") in self.sent_ids, context
            self.pending.discard(message["id"])
        if kind in ("next", "data"):
            check_result(message.get("payload"), context)
        elif kind == "error":
            payload = message.get("payload")
            if self.legacy:
                assert isinstance(payload, dict), context
                check_errors(payload.get("errors", [payload]), context)
            else:
                check_errors(payload, context)
        return message

    def check_close(self, exc: ConnectionClosed) -> None:
        self.close = exc.rcvd
        context = self.context()
        if exc.rcvd is None and self.sent and self.sent[-1][0] == "text" and len(self.sent[-1][1]) > WS_MAX_MESSAGE:
            return  # refused while we were still writing it: the close frame may be lost to the reset
        assert exc.rcvd is not None, f"the server dropped the connection without a close frame\n{context}"
        code = exc.rcvd.code
        allowed = code in CLOSE_OK or 4000 <= code <= 4999 or (code == 1007 and self.sent_invalid_utf8)
        assert allowed, f"close code {code} {exc.rcvd.reason!r}\n{context}"


def is_frame_violation(kind: str, value: Any) -> bool:
    """Frames the WebSocket layer itself refuses (1007, 1009): the connection ends there."""
    return kind == "raw" or (kind == "text" and len(value.encode()) > WS_MAX_MESSAGE)


def run_exchange(server: Server, subprotocols: list[str], frames: list[tuple[str, Any]]) -> Exchange:
    """Send the frames, then a sentinel operation; read until it and every operation answered.

    A frame the WebSocket layer refuses ends the list: the server fails the
    connection at once, and whatever we wrote after it could only race its close.
    """
    for index, (kind, value) in enumerate(frames):
        if is_frame_violation(kind, value):
            frames = frames[: index + 1]
            break
    with connect(
        ws_url(server), subprotocols=subprotocols or None, open_timeout=10, close_timeout=5, max_size=None
    ) as ws:
        exchange = Exchange(ws.subprotocol)
        try:
            for kind, value in frames:
                exchange.send(ws, kind, value)
            if exchange.protocol is None or (frames and is_frame_violation(*frames[-1])):
                while True:  # the server must close
                    exchange.check(ws.recv(timeout=10))
            if not exchange.init_sent:
                exchange.send(ws, "json", {"type": "connection_init", "payload": {}})
            sentinel = f"sentinel-{uuid.uuid4()}"
            exchange.send(
                ws,
                "json",
                {
                    "type": "start" if exchange.legacy else "subscribe",
                    "id": sentinel,
                    "payload": {"query": "{ __typename }"},
                },
            )
            deadline = time.monotonic() + 10
            while exchange.pending:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"operations never answered: {exchange.pending}\n{exchange.context()}"
                exchange.check(ws.recv(timeout=remaining))
        except ConnectionClosed as exc:
            exchange.check_close(exc)
        except TimeoutError:
            raise AssertionError(f"no answer within 10 s\n{exchange.context()}") from None
    return exchange


def assert_websocket_works(server: Server) -> None:
    for protocol in (TRANSPORT, LEGACY):
        with connect(ws_url(server), subprotocols=[protocol], open_timeout=10) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            ws.send(
                json.dumps(
                    {
                        "type": "start" if protocol == LEGACY else "subscribe",
                        "id": "1",
                        "payload": {"query": "{ __typename }"},
                    }
                )
            )
            messages = []
            while not messages or messages[-1]["type"] != "complete":
                message = json.loads(ws.recv(timeout=10))
                if message["type"] not in ("ka", "ping", "pong"):
                    messages.append(message)
            assert messages == [
                {
                    "id": "1",
                    "type": "data" if protocol == LEGACY else "next",
                    "payload": {"data": {"__typename": "Query"}},
                },
                {"type": "complete", "id": "1"},
            ], messages


subprotocol_lists = st.sampled_from(
    [[TRANSPORT], [LEGACY], [TRANSPORT], [LEGACY], [TRANSPORT, LEGACY], [LEGACY, TRANSPORT], [], ["nope"]]
)


def test_websocket_random_frames(fuzz_server: Server) -> None:
    @fuzz(250)
    @given(subprotocols=subprotocol_lists, init_first=st.booleans(), frames=st.lists(ws_frames, max_size=6))
    def run(subprotocols: list[str], init_first: bool, frames: list[tuple[str, Any]]) -> None:
        if init_first:
            frames = [("json", {"type": "connection_init", "payload": {}}), *frames]
        run_exchange(fuzz_server, subprotocols, frames)

    run()
    assert_websocket_works(fuzz_server)


def test_websocket_subscribe_payloads(fuzz_server: Server) -> None:
    @fuzz(250)
    @given(
        protocol=st.sampled_from([TRANSPORT, LEGACY]),
        init_payload=st.one_of(st.just({}), st.none(), json_values),
        operations=st.lists(
            st.tuples(st.sampled_from(["1", "2", "3", "x" * 300, "é"]), subscribe_payloads, st.booleans()),
            min_size=1,
            max_size=4,
        ),
    )
    def run(protocol: str, init_payload: Any, operations: list[tuple[str, Any, bool]]) -> None:
        legacy = protocol == LEGACY
        frames: list[tuple[str, Any]] = [("json", {"type": "connection_init", "payload": init_payload})]
        for operation_id, payload, stop in operations:
            frames.append(
                ("json", {"type": "start" if legacy else "subscribe", "id": operation_id, "payload": payload})
            )
            if stop:
                frames.append(("json", {"type": "stop" if legacy else "complete", "id": operation_id}))
        run_exchange(fuzz_server, [protocol], frames)

    run()
    assert_websocket_works(fuzz_server)


# ---------------------------------------------------------------------------
# the smallest inputs behind what the fuzzing above found (kept as regressions)

INIT = ("json", {"type": "connection_init", "payload": {}})


@pytest.mark.parametrize(
    ("protocol", "frames"),
    [
        # "unexpected message type '…'" is over the 123 bytes a close reason may hold
        (TRANSPORT, [INIT, ("json", {"type": "x" * 200})]),
        (LEGACY, [INIT, ("json", {"type": "\u00e9" * 70})]),
        # "subscriber for … already exists", with a long id
        (
            TRANSPORT,
            [
                INIT,
                *[
                    (
                        "json",
                        {
                            "type": "subscribe",
                            "id": "x" * 300,
                            "payload": {"query": SUBSCRIPTIONS[0], "variables": {"lat": 1, "lon": 1}},
                        },
                    )
                ]
                * 2,
            ],
        ),
    ],
    ids=["long-type", "long-non-ascii-type", "duplicate-long-id"],
)
def test_websocket_long_close_reason_still_closes_cleanly(
    fuzz_server: Server, protocol: str, frames: list[tuple[str, Any]]
) -> None:
    exchange = run_exchange(fuzz_server, [protocol], frames)
    assert exchange.close is not None and 4400 <= exchange.close.code <= 4499, exchange.context()


def asgi_exceptions(logs: str) -> int:
    return logs.count("Exception in ASGI application")


def frames_in_one_write(server: Server, protocol: str, texts: list[bytes]) -> tuple[list[Any], Any]:
    """Text frames (raw bytes, invalid UTF-8 allowed) written in one segment, so that the
    server parses them all before its app runs; the messages received and the close."""
    uri = parse_uri(ws_url(server))
    client = ClientProtocol(uri, subprotocols=[Subprotocol(protocol)], max_size=None)
    with socket.create_connection((uri.host, uri.port), timeout=10) as sock:
        client.send_request(client.connect())
        sock.sendall(b"".join(client.data_to_send()))
        while client.state is State.CONNECTING:
            client.receive_data(sock.recv(65536))
        assert client.handshake_exc is None, client.handshake_exc
        for text in texts:
            client.send_text(text)
        sock.sendall(b"".join(client.data_to_send()))
        received: list[Any] = []
        while client.state is not State.CLOSED and not client.close_rcvd:
            data = sock.recv(65536)
            if not data:
                client.receive_eof()
                break
            client.receive_data(data)
            received += [e.data.decode() for e in client.events_received() if getattr(e, "opcode", None) is Opcode.TEXT]
        return received, client.close_rcvd


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
def test_websocket_reply_after_a_protocol_close_is_not_an_asgi_exception(fuzz_server: Server, protocol: str) -> None:
    """connection_init, then a text frame of invalid UTF-8 in the same write: the WebSocket
    layer closes with 1007 before the app sends its connection_ack, which must not raise."""
    before = asgi_exceptions(fuzz_server.logs())
    received, close = frames_in_one_write(fuzz_server, protocol, [b'{"type": "connection_init"}', b'{"type": "\xff"}'])
    assert close is not None and close.code == 1007, (received, close)
    time.sleep(0.3)
    assert asgi_exceptions(fuzz_server.logs()) == before, summarize_tracebacks(fuzz_server.logs())


@pytest.mark.parametrize(
    "body",
    [
        {"query": "{ current(lat: 91, lon: 0) { temperature } }"},
        {"query": "{ forecast(lat: 1, lon: 1, days: 0) { days } }"},
        {"query": "query($lat: Float!) { current(lat: $lat, lon: 0) { temperature } }", "variables": {"lat": "north"}},
    ],
    ids=["bad-coordinate", "bad-days", "bad-variable"],
)
def test_client_errors_do_not_log_tracebacks(fuzz_server: Server, http: httpx.Client, body: dict[str, Any]) -> None:
    before = len(fuzz_server.logs())
    check_graphql(http.post("/graphql", json=body))
    time.sleep(0.2)
    new = fuzz_server.logs()[before:]
    assert "Traceback" not in new, new[:3000]


# ---------------------------------------------------------------------------
# 4. the server survived it all


def log_records(logs: str) -> Iterator[tuple[str, str]]:
    """(what logged it, the text that followed) for each record: JSON lines, or plain text."""
    plain: list[str] = []
    for line in logs.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                message = str(record.get("message", "")).strip().splitlines() or [""]
                yield f"{record.get('logger')}: {message[0]}", f"{record.get('message')}\n{record.get('exc_info', '')}"
                continue
        plain.append(line)
    header, block = "?", []
    for line in plain:  # plain text: a record starts at a line with a level
        match = re.match(r"^(?:\S+ \S+ )?(ERROR|WARNING|CRITICAL|INFO)\b:?\s*(.*)", line)
        if match:
            if block:
                yield header, "\n".join(block)
            header, block = match.group(2), []
        else:
            block.append(line)
    if block:
        yield header, "\n".join(block)


def summarize_tracebacks(logs: str) -> str:
    """Each kind of traceback in the log once, with how often: the record that logged it
    and the exception it ended with, one example each."""
    kinds: dict[tuple[str, str], list[Any]] = {}
    for header, block in log_records(logs):
        if "Traceback" not in block:
            continue
        lines = [line for line in block.splitlines() if line.strip()]
        ending = next(
            (
                line
                for line in reversed(lines)
                if not line.startswith((" ", "Traceback", "The above", "During handling"))
            ),
            "?",
        )
        key = (header.split(":")[0][:60], ending.split(":")[0])
        kinds.setdefault(key, [0, header, ending])[0] += 1
    ranked = sorted(kinds.values(), key=lambda kind: -kind[0])
    return "\n".join(f"{count:5d} x {header[:90]}\n        -> {ending[:160]}" for count, header, ending in ranked)


def test_server_process_survived(fuzz_server: Server, http: httpx.Client) -> None:
    assert fuzz_server.process.poll() is None, fuzz_server.logs()[-3000:]
    assert http.get("/health").status_code == 200
    assert http.get("/ready").status_code == 200
    assert http.post("/graphql", json={"query": "{ __typename }"}).json() == {"data": {"__typename": "Query"}}
    assert_websocket_works(fuzz_server)


def test_log_has_no_exception_in_asgi_application(fuzz_server: Server) -> None:
    logs = fuzz_server.logs()
    assert "Exception in ASGI application" not in logs, summarize_tracebacks(logs)


def test_log_has_no_traceback(fuzz_server: Server) -> None:
    logs = fuzz_server.logs()
    assert "Traceback" not in logs, summarize_tracebacks(logs)
