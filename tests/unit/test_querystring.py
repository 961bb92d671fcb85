"""Query strings: the C-speed decoder agrees with the standard library on any bytes.

That it serves requests is tested against a server in tests/service/test_querystring_server.py.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote

from hypothesis import given, settings
from hypothesis import strategies as st

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
