"""The upstream contract: real Open-Meteo response shapes parse into our entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weathernote.errors import ContractError
from weathernote.model.entries import Current, Daily, Hourly, Part
from weathernote.upstream import request_weight
from weathernote.upstream.contract import parse_locations, query_params

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_bytes())


def test_real_single_location_answer_parses() -> None:
    # the example asked for 7 days
    [parts] = parse_locations(load("open-meteo-forecast-example.json"), 1, [Part.CURRENT, Part.DAILY], days=7)
    current = parts[Part.CURRENT]
    assert isinstance(current, Current)
    assert current.time == "2025-06-16T14:45+02:00"
    assert current.temperature == 26.0 and current.humidity == 46 and current.is_day is True
    assert current.pressure == 1018.4 and current.wind_direction == 274 and current.weather_code == 1
    daily = parts[Part.DAILY]
    assert isinstance(daily, Daily)
    assert daily.timezone == "Europe/Berlin" and daily.utc_offset_seconds == 7200
    assert len(daily.date) == 7 and daily.date[0] == "2025-06-16"
    assert daily.sunrise[0] is not None and daily.sunrise[0].endswith("+02:00")


def test_real_multi_location_answer_parses_in_order() -> None:
    body = load("open-meteo-multi-example.json")
    with pytest.raises(ContractError):
        # the example has no wind gusts: a missing variable is a contract break, not a silent None
        parse_locations(body, 2, [Part.CURRENT])
    for location in body:  # type: ignore[union-attr]
        location["current"]["wind_gusts_10m"] = 20.5
        location["current"]["pressure_msl"] = 1012.0
        location["current_units"]["wind_gusts_10m"] = "km/h"
        location["current_units"]["pressure_msl"] = "hPa"
    berlin, paris = parse_locations(body, 2, [Part.CURRENT])
    assert berlin[Part.CURRENT].temperature == 26.0
    assert paris[Part.CURRENT].temperature == 22.8


def test_hourly_columns_parse() -> None:
    body = load("open-meteo-forecast-example.json")
    assert isinstance(body, dict)
    # the example asked for other hourly variables; add the one it lacks
    body["hourly"]["wind_speed_10m"] = [10.0] * len(body["hourly"]["time"])
    body["hourly_units"]["wind_speed_10m"] = "km/h"
    [parts] = parse_locations(body, 1, [Part.HOURLY], days=7)
    hourly = parts[Part.HOURLY]
    assert isinstance(hourly, Hourly)
    assert len(hourly.time) == 168 == len(hourly.temperature) == len(hourly.wind_speed)
    assert hourly.time[0] == "2025-06-16T00:00+02:00"
    assert all(isinstance(code, int) for code in hourly.weather_code)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("current"),
        lambda b: b["current"].update(temperature_2m="warm"),
        lambda b: b["current_units"].update(temperature_2m="°F"),
        lambda b: b["daily"]["temperature_2m_max"].pop(),
        lambda b: b.pop("utc_offset_seconds"),
    ],
)
def test_malformed_answers_are_contract_errors(mutate) -> None:  # type: ignore[no-untyped-def]
    body = load("open-meteo-forecast-example.json")
    mutate(body)
    with pytest.raises(ContractError):
        parse_locations(body, 1, [Part.CURRENT, Part.DAILY], days=7)


def test_wrong_location_count_is_a_contract_error() -> None:
    with pytest.raises(ContractError):
        parse_locations(load("open-meteo-forecast-example.json"), 2, [Part.CURRENT])


def test_current_only_request_never_pays_for_a_forecast() -> None:
    params = query_params([Part.CURRENT])
    assert "daily" not in params and "hourly" not in params
    assert params["forecast_days"] == "1"
    assert "is_day" not in params["current"].split(",")  # worked out here: ten variables weigh 1, not 1.1
    assert request_weight(1, [Part.CURRENT]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("local_time", "is_day"),
    [
        ("2025-06-16T14:45", True),  # Berlin, a June afternoon
        ("2025-06-16T02:00", False),  # the night after
        ("2025-06-16T04:30", False),  # sunrise is at 04:43 local (the daily section says so)
        ("2025-06-16T05:00", True),
        ("2025-06-16T21:15", True),  # sunset at 21:31
        ("2025-06-16T21:45", False),
    ],
)
def test_is_day_is_worked_out_from_the_sun_when_not_asked_for(local_time: str, is_day: bool) -> None:
    body = load("open-meteo-forecast-example.json")
    assert isinstance(body, dict)
    current = {key: value for key, value in body["current"].items() if key != "is_day"}
    [parts] = parse_locations({**body, "current": {**current, "time": local_time}}, 1, [Part.CURRENT])
    assert parts[Part.CURRENT].is_day is is_day


def test_weights_follow_open_meteo_formula() -> None:
    # 9 daily variables over 16 days: 0.9 * 16/14
    assert request_weight(1, [Part.DAILY]) == pytest.approx(0.9 * 16 / 14)
    assert request_weight(3, [Part.HOURLY]) == pytest.approx(3.0)
    assert request_weight(1, [Part.DAILY, Part.HOURLY]) == pytest.approx(13 / 10 * 16 / 14)
