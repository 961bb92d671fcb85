"""GET answers an edge may keep: Cache-Control until the provider can have newer data, validators, 304s."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import httpx

from tests.conftest import Server, Simulator

CURRENT = "{ current(lat: 51.5074, lon: -0.1278) { temperature cached fetchedAt nextUpdateAt } }"
FORECAST = "{ forecast(lat: 51.5074, lon: -0.1278, days: 3) { daily { temperatureMax } fetchedAt nextUpdateAt } }"


DATE_SLACK = 5  # seconds between the Date header and the clock max-age is computed from


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _max_age(response: httpx.Response) -> int:
    directives = {}
    for part in response.headers["cache-control"].split(","):
        name, _, value = part.strip().partition("=")
        directives[name] = value
    assert "public" in directives and directives["stale-while-revalidate"] == "60", directives
    return int(directives["max-age"])


def test_a_get_answer_is_kept_until_the_provider_can_have_newer_data(server: Server, clean: Simulator) -> None:
    url = f"{server.url}/graphql"
    miss = httpx.get(url, params={"query": CURRENT})
    hit = httpx.get(url, params={"query": CURRENT})
    for answer in (miss, hit):
        body = answer.json()["data"]["current"]
        now = parsedate_to_datetime(answer.headers["date"]).timestamp()
        next_update = _seconds(body["nextUpdateAt"])
        assert next_update > _seconds(body["fetchedAt"])
        # uvicorn refreshes its Date header once a second from its main loop (later on a loaded
        # machine): seconds of slack, still far below the minutes a wrong max-age would be off by
        assert abs(_max_age(answer) - (next_update - now)) <= DATE_SLACK, "max-age runs until nextUpdateAt"
        assert parsedate_to_datetime(answer.headers["last-modified"]).timestamp() == int(_seconds(body["fetchedAt"]))
        assert answer.headers["vary"] == "Accept"
    assert miss.json()["data"]["current"]["cached"] is False and hit.json()["data"]["current"]["cached"] is True
    assert miss.headers["etag"] != hit.headers["etag"], "the bodies differ (cached), so do their tags"

    again = httpx.get(url, params={"query": CURRENT}, headers={"if-none-match": hit.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == hit.headers["etag"] and "max-age" in again.headers["cache-control"]
    weak = httpx.get(url, params={"query": CURRENT}, headers={"if-none-match": f'"x", W/{hit.headers["etag"]}'})
    assert weak.status_code == 304, "a weak tag in a list matches"
    other = httpx.get(url, params={"query": CURRENT}, headers={"if-none-match": '"not-it"'})
    assert other.status_code == 200 and other.json() == hit.json()

    since = httpx.get(url, params={"query": CURRENT}, headers={"if-modified-since": hit.headers["last-modified"]})
    assert since.status_code == 304
    before = format_datetime(
        datetime.fromtimestamp(parsedate_to_datetime(hit.headers["last-modified"]).timestamp() - 60, UTC),
        usegmt=True,
    )
    older = httpx.get(url, params={"query": CURRENT}, headers={"if-modified-since": before})
    assert older.status_code == 200
    garbage = httpx.get(url, params={"query": CURRENT}, headers={"if-modified-since": "yesterday-ish"})
    assert garbage.status_code == 200, "an unreadable date is ignored"
    both = httpx.get(
        url,
        params={"query": CURRENT},
        headers={"if-none-match": '"not-it"', "if-modified-since": hit.headers["last-modified"]},
    )
    assert both.status_code == 200, "If-None-Match decides when both are sent"


def test_the_media_type_is_part_of_the_answer(server: Server, clean: Simulator) -> None:
    url = f"{server.url}/graphql"
    plain = httpx.get(url, params={"query": FORECAST}, headers={"accept": "application/json"})
    graphql = httpx.get(url, params={"query": FORECAST}, headers={"accept": "application/graphql-response+json"})
    assert plain.headers["content-type"].startswith("application/json")
    assert graphql.headers["content-type"].startswith("application/graphql-response+json")
    body = graphql.json()["data"]["forecast"]
    assert body["nextUpdateAt"] is not None and _seconds(body["nextUpdateAt"]) > _seconds(body["fetchedAt"])
    assert plain.headers["vary"] == graphql.headers["vary"] == "Accept"


def test_what_is_not_weather_is_not_stored(server: Server, clean: Simulator) -> None:
    url = f"{server.url}/graphql"
    bad = httpx.get(url, params={"query": "{ current(lat: 91, lon: 0) { temperature } }"})
    assert bad.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert bad.headers["cache-control"] == "no-store" and "etag" not in bad.headers
    unparsable = httpx.get(url, params={"query": "{ current("})
    assert unparsable.headers["cache-control"] == "no-store"
    introspection = httpx.get(url, params={"query": "{ __typename }"})
    assert introspection.headers["cache-control"] == "no-store", "no entry read: nothing says how long it holds"
    post = httpx.post(url, json={"query": CURRENT})
    assert "cache-control" not in post.headers and "etag" not in post.headers, "POST answers carry no validators"
    rest_bad = httpx.get(f"{server.url}/api/v1/weather", params={"lat": "x", "lon": 0})
    assert rest_bad.status_code == 400 and rest_bad.headers["cache-control"] == "no-store"
    for probe in ("health", "ready"):
        assert httpx.get(f"{server.url}/{probe}").headers["cache-control"] == "no-store", probe


def test_rest_answers_are_cacheable_and_revalidated(server: Server, clean: Simulator) -> None:
    url = f"{server.url}/api/v1/weather"
    params = {"lat": 48.8566, "lon": 2.3522}
    first = httpx.get(url, params=params)
    body = first.json()
    assert body["next_update_at"] > body["fetched_at"]
    now = parsedate_to_datetime(first.headers["date"]).timestamp()
    assert abs(_max_age(first) - (body["next_update_at"] - now)) <= DATE_SLACK
    second = httpx.get(url, params=params)
    again = httpx.get(url, params=params, headers={"if-none-match": second.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    forecast = httpx.get(f"{server.url}/api/v1/forecast", params={**params, "days": 2})
    revalidated = httpx.get(
        f"{server.url}/api/v1/forecast",
        params={**params, "days": 2},
        headers={"if-modified-since": forecast.headers["last-modified"]},
    )
    assert revalidated.status_code == 304
