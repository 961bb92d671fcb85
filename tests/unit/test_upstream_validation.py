"""A hardened upstream client, in process: answers validated whole, causes named.

The contract checks run on answers rendered by the simulator's own writer; the client is
tried against a closed port and a name that does not resolve. Everything that speaks real
HTTP to the simulator process (bodies capped, one deadline per call, causes logged once,
a `weathernote serve` process in front of a misbehaving upstream) is in
tests/service/test_upstream_validation_simulator.py.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import math
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from tests.conftest import free_port
from weathernote.errors import ContractError, UpstreamFailed
from weathernote.model.cells import Cell, Grid
from weathernote.model.entries import FORECAST_DAYS, Part
from weathernote.simulator.forecast.weather import WeatherModel
from weathernote.simulator.params import parse_query
from weathernote.simulator.render import render_forecast
from weathernote.upstream import OpenMeteoClient
from weathernote.upstream.contract import parse_locations, query_params

ALL_PARTS = [Part.CURRENT, Part.DAILY, Part.HOURLY]
OFFLINE_HINT = ("make offline", "weathernote serve --simulator")

_points = itertools.count()


def new_point() -> dict[str, float]:
    """A cell no other test asked for: the servers remember the cells they fetched."""
    n = next(_points)
    return {"lat": round(-50 + (n % 50) * 2.1, 1), "lon": round(-170 + n // 50 * 3.3 + n % 7 * 0.4, 1)}


def rendered(parts: list[Part], points: list[tuple[float, float]] | None = None, now: float = 1.75e9) -> Any:
    """A decoded answer to our own request, written by the simulator's Open-Meteo writer."""
    points = points or [(52.52, 13.41)]
    params = query_params(parts)
    params["latitude"] = ",".join(str(lat) for lat, _ in points)
    params["longitude"] = ",".join(str(lon) for _, lon in points)
    query = parse_query({key: [value] for key, value in params.items()})
    return orjson.loads(render_forecast(query, now, WeatherModel(0)))


# ---------------------------------------------------------------------------------------------
# The contract, in-process


def test_simulated_answers_from_all_over_the_globe_and_year_are_valid() -> None:
    points = [(lat, lon) for lat in range(-80, 90, 32) for lon in range(-170, 180, 70)]
    for now in (1.736e9, 1.752e9):  # January and July
        body = rendered(ALL_PARTS, points, now)
        parsed = parse_locations(body, len(points), ALL_PARTS)
        assert len(parsed) == len(points)
        assert all(len(location[Part.HOURLY].time) == FORECAST_DAYS * 24 for location in parsed)


def test_single_nulls_are_missing_values_not_a_broken_answer() -> None:
    body = rendered(ALL_PARTS)
    body["current"]["wind_gusts_10m"] = None
    body["daily"]["sunrise"][2] = None  # a polar night
    body["daily"]["uv_index_max"] = [None] * FORECAST_DAYS
    body["hourly"]["precipitation_probability"][5] = None
    body["hourly"]["weather_code"][0] = 3.0  # an integral float is still a code
    [parsed] = parse_locations(body, 1, ALL_PARTS)
    assert parsed[Part.CURRENT].wind_gusts is None
    assert parsed[Part.DAILY].sunrise[2] is None and parsed[Part.DAILY].sunrise[3] is not None
    assert parsed[Part.HOURLY].weather_code[0] == 3 and isinstance(parsed[Part.HOURLY].weather_code[0], int)


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body[section].__setitem__(key, value)


def _set_item(section: str, key: str, index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body[section][key].__setitem__(index, value)


def _all_null(section: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for key, value in body[section].items():
            if key not in ("time", "interval"):
                body[section][key] = [None] * len(value) if isinstance(value, list) else None

    return mutate


def _one_day_short(body: dict[str, Any]) -> None:
    for section, per_day in (("daily", 1), ("hourly", 24)):
        for key, value in body[section].items():
            body[section][key] = value[:-per_day]


def _daily_starts_a_day_late(body: dict[str, Any]) -> None:
    body["daily"]["time"] = [(date.fromisoformat(day) + timedelta(days=1)).isoformat() for day in body["daily"]["time"]]


def _swap(section: str, key: str, i: int, j: int) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        column = body[section][key]
        column[i], column[j] = column[j], column[i]

    return mutate


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "daily date that is no date": _set_item("daily", "time", 3, "2025-02-30"),
    "daily date in another format": _set_item("daily", "time", 0, "16.06.2025"),
    "daily date as a number": _set_item("daily", "time", 0, 20250616),
    "daily dates out of order": _swap("daily", "time", 1, 2),
    "hourly time without minutes": _set_item("hourly", "time", 5, "2025-06-16T05"),
    "hourly time of hour 24": _set_item("hourly", "time", 0, "2025-06-16T24:00"),
    "hourly times out of order": _swap("hourly", "time", 10, 11),
    "current time that is no time": _set("current", "time", "now"),
    "current time at the dawn of time": _set("current", "time", "0001-01-01T00:15"),
    "daily dates past the end of time": lambda b: b["daily"]["time"].__setitem__(0, "9999-12-31"),
    "current time with seconds": lambda b: b["current"].__setitem__("time", b["current"]["time"] + ":00"),
    "hourly column one short": lambda b: b["hourly"]["temperature_2m"].pop(),
    "daily column one long": lambda b: b["daily"]["uv_index_max"].append(1.0),
    "one day short of the horizon": _one_day_short,
    "hourly and daily on different days": _daily_starts_a_day_late,
    "current all null": _all_null("current"),
    "daily all null": _all_null("daily"),
    "hourly all null": _all_null("hourly"),
    "a variable missing": lambda b: b["hourly"].pop("wind_speed_10m"),
    "humidity over 100": _set("current", "relative_humidity_2m", 101),
    "humidity below 0": _set("current", "relative_humidity_2m", -1),
    "weather code not an integer": _set("current", "weather_code", 2.5),
    "weather code beyond WMO": _set_item("daily", "weather_code", 0, 100),
    "weather code as text": _set_item("hourly", "weather_code", 0, "3"),
    "wind direction over 360": _set("current", "wind_direction_10m", 361),
    "temperature NaN": _set("current", "temperature_2m", math.nan),
    "temperature infinite": _set_item("hourly", "temperature_2m", 7, math.inf),
    "temperature of a star": _set_item("daily", "temperature_2m_max", 0, 5500.0),
    "a bool for a number": _set("current", "cloud_cover", True),
    "precipitation probability 120": _set_item("hourly", "precipitation_probability", 3, 120),
    "negative wind speed": _set_item("daily", "wind_speed_10m_max", 1, -4.0),
    "pressure of a vacuum": _set("current", "pressure_msl", 0.0),
    "sunrise that is no time": _set_item("daily", "sunrise", 0, "dawn"),
    "sunset as a number": _set_item("daily", "sunset", 0, 1234),
    "sunrise in month 13": _set_item("daily", "sunrise", 0, "2025-13-01T05:00"),
    "is_day neither 0 nor 1": _set("current", "is_day", 2),
    "timezone not text": lambda b: b.__setitem__("timezone", 7200),
    "timezone empty": lambda b: b.__setitem__("timezone", ""),
    "utc offset beyond 18 h": lambda b: b.__setitem__("utc_offset_seconds", 90_000),
    "utc offset as text": lambda b: b.__setitem__("utc_offset_seconds", "7200"),
    "utc offset in odd seconds": lambda b: b.__setitem__("utc_offset_seconds", 7201),
    "latitude missing": lambda b: b.pop("latitude"),
    "longitude off the globe": lambda b: b.__setitem__("longitude", 200.0),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_a_flaw_anywhere_makes_the_whole_answer_a_contract_error(mutate: Callable[[dict[str, Any]], None]) -> None:
    body = rendered(ALL_PARTS)
    parse_locations(copy.deepcopy(body), 1, ALL_PARTS)  # the untouched answer is fine
    mutate(body)
    with pytest.raises(ContractError):
        parse_locations(body, 1, ALL_PARTS)


def test_one_bad_location_fails_the_batch_and_order_is_checked() -> None:
    points = [(52.5, 13.4), (48.9, 2.3), (40.7, -74.0)]
    body = rendered(ALL_PARTS, points)
    assert len(parse_locations(copy.deepcopy(body), 3, ALL_PARTS)) == 3
    swapped = [body[0], body[2], body[1]]  # location_id 2 where 1 belongs
    with pytest.raises(ContractError, match="location 1"):
        parse_locations(swapped, 3, ALL_PARTS)
    body[2]["current"]["relative_humidity_2m"] = 250
    with pytest.raises(ContractError, match="location 2"):
        parse_locations(body, 3, ALL_PARTS)


# ---------------------------------------------------------------------------------------------
# The client, in-process, with no upstream to speak to


def cells(count: int) -> list[Cell]:
    grid = Grid()
    return [grid.cell(**new_point()) for _ in range(count)]


async def fetch(client: OpenMeteoClient, count: int = 1) -> float:
    """Seconds one fetch of every part for `count` new cells took; raises what the client raised."""
    started = time.monotonic()
    await client.fetch(cells(count), ALL_PARTS)
    return time.monotonic() - started


def upstream_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("weathernote.upstream")]


async def test_a_refused_connection_and_a_failed_lookup_are_named(caplog: pytest.LogCaptureFixture) -> None:
    closed = OpenMeteoClient(f"http://127.0.0.1:{free_port()}")
    try:
        for _ in range(3):
            with pytest.raises(UpstreamFailed) as refused:
                await fetch(closed)
    finally:
        await closed.aclose()
    assert refused.value.cause == "transport" and "connection refused" in refused.value.reason
    [logged] = upstream_records(caplog)
    assert "connection refused" in logged.getMessage() and all(hint in logged.getMessage() for hint in OFFLINE_HINT)

    unknown = OpenMeteoClient("http://upstream.weathernote.invalid", timeout=5)
    try:
        with pytest.raises(UpstreamFailed) as failed:
            await fetch(unknown)
    finally:
        await unknown.aclose()
    if failed.value.cause == "timeout":
        # a resolver that never answers (no network at all): the lookup is bounded by the deadline
        assert failed.value.reason.startswith("timeout"), failed.value.reason
    else:
        assert "DNS lookup failed" in failed.value.reason


def test_the_base_url_is_public_and_without_credentials() -> None:
    client = OpenMeteoClient("https://user:secret@api.open-meteo.com/")
    assert client.base_url == "https://api.open-meteo.com"
    asyncio.run(client.aclose())
