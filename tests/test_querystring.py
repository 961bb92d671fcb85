"""Query strings: the C-speed decoder agrees with the standard library on any bytes, and serves requests."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Server
from weathernote.http.querystring import parse

# pieces that make escapes (good and malformed), separators, UTF-8 and not
_PIECES = st.sampled_from(
    [
        b"a",
        b"b",
        b"=",
        b"&",
        b"%",
        b"+",
        b"4",
        b"1",
        b"f",
        b"C3",
        b"A9",
        b"\\",
        b"\xc3",
        b"x",
        b"%e2%82%ac",
        b"%zz",
        b"%FF",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=30).map(b"".join) | st.binary(max_size=40))
def test_any_query_string_decodes_as_parse_qsl_decodes_it(raw: bytes) -> None:
    assert parse(raw) == dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def test_an_apq_get_url_decodes_to_its_json() -> None:
    variables = {"lat": 40.7128, "lon": -74.006, "name": "São Paulo €"}
    raw = f"variables={quote(json.dumps(variables))}&operationName=Current&extensions=".encode()
    assert parse(raw) == {"variables": json.dumps(variables), "operationName": "Current", "extensions": ""}


def test_a_get_query_with_plus_for_space_and_a_bad_escape_is_answered_precisely(server: Server) -> None:
    query = "{+current(lat:+52.52,+lon:+13.40)+{+temperature+}+}"
    answer = httpx.get(f"{server.url}/graphql?query={query}")
    assert answer.status_code == 200 and answer.json()["data"]["current"]["temperature"] is not None
    refused = httpx.get(f"{server.url}/graphql?query={query}&variables=%zz")
    assert refused.status_code == 400 and "`variables` is not valid JSON" in refused.text
    rest = httpx.get(f"{server.url}/api/v1/weather?lat=52%2E52&lon=13.40&lat=nope")
    assert rest.status_code == 400 and "'nope'" in rest.text, "the last of a repeated name, as Starlette takes it"
