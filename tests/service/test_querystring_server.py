"""Query strings: the C-speed decoder serves requests (GET queries, REST parameters) of a real server.

The decoder itself is held to the standard library in tests/unit/test_querystring.py.
"""

from __future__ import annotations

import httpx

from tests.conftest import Server


def test_a_get_query_with_plus_for_space_and_a_bad_escape_is_answered_precisely(server: Server) -> None:
    query = "{+current(lat:+52.52,+lon:+13.40)+{+temperature+}+}"
    answer = httpx.get(f"{server.url}/graphql?query={query}")
    assert answer.status_code == 200 and answer.json()["data"]["current"]["temperature"] is not None
    refused = httpx.get(f"{server.url}/graphql?query={query}&variables=%zz")
    assert refused.status_code == 400 and "`variables` is not valid JSON" in refused.text
    rest = httpx.get(f"{server.url}/api/v1/weather?lat=52%2E52&lon=13.40&lat=nope")
    assert rest.status_code == 400 and "'nope'" in rest.text, "the last of a repeated name, as Starlette takes it"
