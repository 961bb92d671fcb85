"""The Open-Meteo simulator, run as `python -m weathernote.simulator` and spoken to over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "latency_jitter_ms": 0,
    "error_rate": 0,
    "forced_status": None,
    "rate_limit_per_minute": 600,
    "rate_limit_per_hour": 5000,
    "rate_limit_per_day": 10000,
    "max_concurrent": 5,
    "clock_speed": 1.0,
    "seed": 0,
    "corrupt": None,
    "corrupt_location": None,
    "body_padding_bytes": 0,
    "trickle_bytes_per_second": 0.0,
}
# The requests behind the two example files (reference §11).
EXAMPLE_QUERY = {
    "latitude": "52.52",
    "longitude": "13.41",
    "timezone": "Europe/Berlin",
    "current": "temperature_2m,relative_humidity_2m,apparent_temperature,is_day,precipitation,rain,showers,"
    "snowfall,weather_code,cloud_cover,pressure_msl,surface_pressure,wind_speed_10m,wind_direction_10m,"
    "wind_gusts_10m",
    "hourly": "temperature_2m,relative_humidity_2m,precipitation_probability,precipitation,weather_code",
    "daily": "weather_code,temperature_2m_max,temperature_2m_min,sunrise,sunset,precipitation_sum,"
    "precipitation_probability_max,wind_speed_10m_max,uv_index_max",
}
MULTI_QUERY = {
    "latitude": "52.52,48.8534",
    "longitude": "13.41,2.3488",
    "timezone": "auto",
    "current": "temperature_2m,relative_humidity_2m,apparent_temperature,is_day,precipitation,weather_code,"
    "cloud_cover,wind_speed_10m,wind_direction_10m",
}
CURRENT_ONLY = {"latitude": "52.52", "longitude": "13.41", "current": "temperature_2m"}
WMO_CODES = {0, 1, 2, 3, 45, 48, 51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 71, 73, 75, 77, 80, 81, 82, 85, 86}
WMO_CODES |= {95, 96, 99}
PRECIPITATION_CODES = {code for code in WMO_CODES if code >= 51}
STREAMING_ERROR = b"Unexpected error while streaming data:"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "weathernote.simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the simulator printed nothing within 15 s"
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"unexpected first line {line!r}"
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


@pytest.fixture
def sim(base_url: str) -> Iterator[httpx.Client]:
    """A client on a simulator with default knobs and zeroed counters; knobs are restored after."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        configure(client)
        client.post("/__simulator/reset").raise_for_status()
        yield client
        configure(client)


def configure(client: httpx.Client, **knobs: Any) -> dict[str, Any]:
    response = client.post("/__simulator/config", json={**DEFAULTS, **knobs})
    response.raise_for_status()
    return response.json()


def stats(client: httpx.Client) -> dict[str, Any]:
    return client.get("/__simulator/stats").json()


def without_generation_time(body: bytes) -> bytes:
    return re.sub(rb'"generationtime_ms":[0-9.e+-]+', b"", body)


class Number(str):
    """A JSON number kept as its source text, to check how it was printed."""


def raw_json(text: bytes | str) -> Any:
    return json.loads(text, parse_float=Number, parse_int=Number)


def shape(value: Any, key: str = "") -> Any:
    """Keys in order, types, and decimals of every number; values themselves are ignored."""
    if isinstance(value, dict):
        return [(k, shape(v, k)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(item, key) for item in value]
    if isinstance(value, Number):
        if key in ("latitude", "longitude", "generationtime_ms"):
            return "float"  # shortest round-trip forms: any number of digits
        return ("decimals", len(value.partition(".")[2]) if "." in value else None)
    if isinstance(value, str):
        if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", value):
            return "local minute"
        if re.fullmatch(r"\d{4}-\d\d-\d\d", value):
            return "date"
        return "text"
    return type(value).__name__


def test_single_location_has_the_example_key_order_units_and_decimals(sim: httpx.Client) -> None:
    example_text = (FIXTURES / "open-meteo-forecast-example.json").read_bytes()
    response = sim.get("/v1/forecast", params=EXAMPLE_QUERY)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    ours, example = raw_json(response.content), raw_json(example_text)
    assert shape(ours) == shape(example)
    for section in ("current_units", "hourly_units", "daily_units"):
        assert ours[section] == example[section]
    # Compact like the server: no whitespace between tokens.
    assert b": " not in response.content and b", " not in response.content
    assert response.content.startswith(b'{"latitude":52.52,"longitude":13.419998,"generationtime_ms":')
    assert ours["timezone"] == "Europe/Berlin"
    assert re.fullmatch(r"GMT\+[12]", ours["timezone_abbreviation"])


def test_several_locations_answer_an_array_with_location_ids_from_the_second(sim: httpx.Client) -> None:
    example = raw_json((FIXTURES / "open-meteo-multi-example.json").read_bytes())
    response = sim.get("/v1/forecast", params=MULTI_QUERY)

    assert response.status_code == 200
    ours = raw_json(response.content)
    assert isinstance(ours, list) and len(ours) == 2
    assert shape(ours) == shape(example)
    assert "location_id" not in ours[0] and ours[1]["location_id"] == "1"
    # The pseudo-grid reproduces the real server's Float32 cell centres for these points.
    assert [(o["latitude"], o["longitude"]) for o in ours] == [("52.52", "13.419998"), ("48.86", "2.3399997")]
    assert [o["timezone"] for o in ours] == ["Europe/Berlin", "Europe/Paris"]


def test_same_request_same_answer_and_the_seed_changes_it(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)  # no 15-minute step may pass between the requests
    query = {**EXAMPLE_QUERY, "forecast_days": "3"}
    first = sim.get("/v1/forecast", params=query).content
    second = sim.get("/v1/forecast", params=query).content
    assert without_generation_time(first) == without_generation_time(second)

    configure(sim, clock_speed=0, seed=1)
    reseeded = sim.get("/v1/forecast", params=query).content
    assert without_generation_time(reseeded) != without_generation_time(first)


def test_weather_is_physical_and_daily_values_derive_from_hourly(sim: httpx.Client) -> None:
    # Berlin, Singapore, Tromsø, Riyadh, Sydney, Denver
    places = [(52.52, 13.41), (1.35, 103.82), (69.65, 18.96), (24.71, 46.68), (-33.87, 151.21), (39.74, -105)]
    hourly = (
        "temperature_2m,relative_humidity_2m,precipitation,rain,showers,snowfall,weather_code,cloud_cover,"
        "wind_direction_10m,precipitation_probability,is_day,uv_index,visibility"
    )
    daily = (
        "weather_code,temperature_2m_max,temperature_2m_min,precipitation_sum,precipitation_probability_max,"
        "sunrise,sunset"
    )
    configure(sim, clock_speed=0)
    response = sim.get(
        "/v1/forecast",
        params={
            "latitude": ",".join(str(lat) for lat, _ in places),
            "longitude": ",".join(str(lon) for _, lon in places),
            "timezone": "auto",
            "current": "temperature_2m",
            "hourly": hourly,
            "daily": daily,
            "forecast_days": "16",
        },
    )
    assert response.status_code == 200
    for (lat, _), location in zip(places, response.json()):
        h, d = location["hourly"], location["daily"]
        assert len(h["time"]) == 16 * 24 and len(d["time"]) == 16
        for key in ("relative_humidity_2m", "cloud_cover", "precipitation_probability"):
            assert all(0 <= v <= 100 for v in h[key])
        assert all(0 <= v <= 360 for v in h["wind_direction_10m"])
        for key in ("precipitation", "rain", "showers", "snowfall", "uv_index"):
            assert all(v >= 0 for v in h[key])
        assert all(v > 0 for v in h["visibility"]) and set(h["is_day"]) <= {0, 1}
        assert set(h["weather_code"]) <= WMO_CODES
        for i, precipitation in enumerate(h["precipitation"]):
            if precipitation > 0:
                assert h["weather_code"][i] in PRECIPITATION_CODES
            if h["snowfall"][i] > 0:
                assert h["temperature_2m"][i] < 2
        for day in range(16):
            hours = slice(24 * day, 24 * day + 24)
            assert d["time"][day] == h["time"][24 * day][:10]
            assert d["temperature_2m_max"][day] == max(h["temperature_2m"][hours])
            assert d["temperature_2m_min"][day] == min(h["temperature_2m"][hours])
            assert d["weather_code"][day] == max(h["weather_code"][hours])
            assert d["precipitation_probability_max"][day] == max(h["precipitation_probability"][hours])
            assert d["precipitation_sum"][day] == pytest.approx(sum(h["precipitation"][hours]), abs=0.011)
            if abs(lat) < 60:
                sun = (d["sunrise"][day], d["sunset"][day])
                _assert_is_day_matches_sun(h["time"][hours], h["is_day"][hours], *sun)
        # `current` is the 15-minute step at or before now, between the hours around it.
        current = location["current"]
        assert current["interval"] == 900 and current["time"][-2:] in ("00", "15", "30", "45")
        index = h["time"].index(current["time"][:-2] + "00")
        around = h["temperature_2m"][index : index + 2]
        assert min(around) - 0.05 <= current["temperature_2m"] <= max(around) + 0.05


def _assert_is_day_matches_sun(times: list[str], is_day: list[int], sunrise: str, sunset: str) -> None:
    def minutes(text: str) -> int:
        return int(text[11:13]) * 60 + int(text[14:16])

    rise, set_ = minutes(sunrise), minutes(sunset)
    for time_text, flag in zip(times, is_day):
        t = minutes(time_text)
        if rise + 10 < t < set_ - 10:
            assert flag == 1, (time_text, sunrise, sunset)
        elif t < rise - 10 or t > set_ + 10:
            assert flag == 0, (time_text, sunrise, sunset)


def test_units_conversions_labels_and_legacy_names(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)
    base = {
        "latitude": "40.0",
        "longitude": "-3.0",
        "current": "temperature_2m,windspeed_10m,precipitation,visibility",
    }
    imperial_units = {
        "temperature_unit": "fahrenheit",
        "wind_speed_unit": "mph",
        "precipitation_unit": "inch",
    }
    metric = sim.get("/v1/forecast", params=base).json()
    imperial = raw_json(sim.get("/v1/forecast", params={**base, **imperial_units}).content)
    assert imperial["current_units"] == {
        "time": "iso8601",
        "interval": "seconds",
        "temperature_2m": "°F",
        "windspeed_10m": "mp/h",
        "precipitation": "inch",
        "visibility": "ft",
    }
    assert len(imperial["current"]["precipitation"].partition(".")[2]) == 3
    celsius, kmh = metric["current"]["temperature_2m"], metric["current"]["windspeed_10m"]
    assert float(imperial["current"]["temperature_2m"]) == pytest.approx(celsius * 1.8 + 32, abs=0.15)
    assert float(imperial["current"]["windspeed_10m"]) == pytest.approx(kmh / 1.609344, abs=0.1)

    # The legacy alias `windspeed_unit` wins over `wind_speed_unit`; m/s prints two decimals.
    both = {**base, "wind_speed_unit": "kn", "windspeed_unit": "ms"}
    knots = raw_json(sim.get("/v1/forecast", params=both).content)
    assert knots["current_units"]["windspeed_10m"] == "m/s"
    assert len(knots["current"]["windspeed_10m"].partition(".")[2]) == 2


def test_unixtime_prints_epoch_seconds(sim: httpx.Client) -> None:
    response = sim.get(
        "/v1/forecast",
        params={**CURRENT_ONLY, "timezone": "America/New_York", "daily": "sunrise", "timeformat": "unixtime"},
    )
    body = response.json()
    assert body["current_units"]["time"] == "unixtime" and body["daily_units"]["sunrise"] == "unixtime"
    assert isinstance(body["current"]["time"], int) and body["current"]["time"] % 900 == 0
    clock = sim.get("/__simulator/clock").json()["now"]
    assert 0 <= clock - body["current"]["time"] < 900 + 5
    # A daily timestamp is local midnight as a UTC instant.
    assert all((t + body["utc_offset_seconds"]) % 86400 == 0 for t in body["daily"]["time"])
    assert all(isinstance(t, int) for t in body["daily"]["sunrise"])


LONG_LIST = ",".join(["1"] * 1001)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"latitude": "100", "longitude": "10"}, "Latitude must be in range of -90 to 90°. Given: 100.0."),
        ({"latitude": "10", "longitude": "200"}, "Longitude must be in range of -180 to 180°. Given: 200.0."),
        (
            {"latitude": "abc", "longitude": "10"},
            "Data corrupted at path ''. Cannot initialize Float from invalid String value abc.",
        ),
        (
            {"latitude": "1,2", "longitude": "1"},
            "Parameter 'latitude' and 'longitude' must have the same number of elements",
        ),
        ({"latitude": "1", "longitude": "1", "timezone": "Mars/Olympus"}, "Invalid timezone"),
        (
            {"latitude": "1", "longitude": "1", "hourly": "temperature_2m,not_a_var"},
            "Data corrupted at path ''. Cannot initialize SurfacePressureAndHeightVariable<"
            "VariableAndPreviousDay, VariableOrSpread<ForecastPressureVariable>, ForecastHeightVariable> "
            "from invalid String value temperature_2m,not_a_var.",
        ),
        (
            {"latitude": "1", "longitude": "1", "daily": "uv_index"},
            "Data corrupted at path ''. Cannot initialize ForecastVariableDaily from invalid String value uv_index.",
        ),
        (
            {"latitude": "1", "longitude": "1", "models": "icon_seamless"},
            "Data corrupted at path ''. Cannot initialize MultiDomains from invalid String value icon_seamless.",
        ),
        (
            {"latitude": "1", "longitude": "1", "forecast_days": "30"},
            "Forecast days is invalid. Allowed range 0 to 16. Given 16.",
        ),
        (
            {"latitude": "1", "longitude": "1", "past_days": "120"},
            "Past days is invalid. Allowed range 0 to 93. Given 120.",
        ),
        (
            {"latitude": LONG_LIST, "longitude": LONG_LIST},
            "Only up to 1000 locations can be requested at once",
        ),
        (
            {
                "latitude": ",".join(["1"] * 200),
                "longitude": ",".join(["1"] * 200),
                "hourly": ",".join(["temperature_2m"] * 40),
                "past_days": "93",
                "forecast_days": "16",
            },
            "Your API call requests too much data. Please reduce the number of variables, locations and/or "
            "weather models.",
        ),
    ],
)
def test_invalid_requests_get_the_servers_400_reason(sim: httpx.Client, params: dict[str, str], reason: str) -> None:
    response = sim.post("/v1/forecast", data=params)  # POST: some of these are too long for a URL
    assert response.status_code == 400
    assert response.json() == {"error": True, "reason": reason}


PARAMETER_NAMES = [
    "latitude",
    "longitude",
    "elevation",
    "timezone",
    "current",
    "hourly",
    "daily",
    "forecast_days",
    "past_days",
    "forecast_hours",
    "temperature_unit",
    "wind_speed_unit",
    "timeformat",
    "models",
]
PARAMETER_VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["52.5", "-90", "1e3", "nan", "1,2", "auto", "Europe/Berlin", "weathercode,sunrise"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(PARAMETER_NAMES), PARAMETER_VALUES, max_size=7))
def test_any_parameters_get_data_or_a_400_body(sim: httpx.Client, params: dict[str, str]) -> None:
    configure(sim, rate_limit_per_minute=1e9, rate_limit_per_hour=1e9, rate_limit_per_day=1e9)
    response = sim.get("/v1/forecast", params=params)
    assert response.status_code in (200, 400)
    body = response.json()
    if response.status_code == 400:
        assert set(body) == {"error", "reason"} and body["error"] is True and body["reason"]


def test_checks_run_in_the_servers_order(sim: httpx.Client) -> None:
    # Bad coordinates are reported before a bad time zone, which comes before a bad variable.
    everything_wrong = {"latitude": "95", "longitude": "1", "timezone": "Nowhere", "hourly": "x"}
    response = sim.get("/v1/forecast", params=everything_wrong)
    assert response.json()["reason"].startswith("Latitude must be in range")
    response = sim.get("/v1/forecast", params={**everything_wrong, "latitude": "5"})
    assert response.json()["reason"] == "Invalid timezone"


def test_unknown_path_and_method_are_404(sim: httpx.Client) -> None:
    assert sim.get("/v1/nothing").json() == {"error": True, "reason": "Not Found"}
    response = sim.put("/v1/forecast", params=CURRENT_ONLY)
    assert response.status_code == 404 and response.json() == {"error": True, "reason": "Not Found"}


def test_weight_is_counted_per_location_variable_and_day(sim: httpx.Client) -> None:
    two_locations = {"latitude": "52.52,48.85", "longitude": "13.41,2.35", "current": "temperature_2m"}
    assert sim.get("/v1/forecast", params=two_locations).status_code == 200
    assert stats(sim)["weight"] == pytest.approx(2.0)

    fifteen = (
        "temperature_2m,relative_humidity_2m,dew_point_2m,apparent_temperature,precipitation,rain,showers,"
        "snowfall,weather_code,cloud_cover,pressure_msl,surface_pressure,wind_speed_10m,wind_direction_10m,"
        "is_day"
    )
    long_range = {"latitude": "52.52", "longitude": "13.41", "hourly": fifteen, "forecast_days": "16"}
    assert sim.get("/v1/forecast", params=long_range).status_code == 200
    assert sim.get("/v1/forecast", params={"latitude": "95", "longitude": "1"}).status_code == 400

    counters = stats(sim)
    assert counters["weight"] == pytest.approx(2.0 + 1.5 * 16 / 14)
    assert (counters["requests"], counters["served"], counters["locations"]) == (3, 2, 3)
    assert counters["statuses"] == {"200": 2, "400": 1}
    # by the UTC day of the simulator's clock, as its daily limit counts
    today = dt.datetime.fromtimestamp(sim.get("/__simulator/clock").json()["now"], dt.UTC).strftime("%Y-%m-%d")
    assert list(counters["weight_by_day"]) == [today]
    assert counters["weight_by_day"][today] == pytest.approx(counters["weight"])
    assert counters["last_requests"][-1] == {
        "locations": 1,
        "current": [],
        "hourly": [],
        "daily": [],
        "forecast_days": 7,
        "status": 400,
    }
    assert counters["last_requests"][1]["hourly"] == fifteen.split(",")
    assert counters["last_requests"][1]["forecast_days"] == 16


def test_minute_limit_counts_weight_after_success_and_one_per_failure(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0, rate_limit_per_minute=3)  # frozen: no minute boundary mid-test
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).status_code == 200
    assert sim.get("/v1/forecast", params={"latitude": "95", "longitude": "1"}).status_code == 400
    # Usage 2 < 3: allowed, although this one weighs 2 and ends at 4.
    two = {"latitude": "1,2", "longitude": "1,2", "current": "temperature_2m"}
    assert sim.get("/v1/forecast", params=two).status_code == 200

    refused = sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert refused.status_code == 429
    assert refused.json() == {
        "error": True,
        "reason": "Minutely API request limit exceeded. Please try again in one minute.",
    }
    assert stats(sim)["statuses"] == {"200": 2, "400": 1, "429": 1}


def test_hourly_and_daily_limits_have_their_own_reasons(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0, rate_limit_per_hour=1)
    sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).json()["reason"] == (
        "Hourly API request limit exceeded. Please try again in the next hour."
    )
    sim.post("/__simulator/reset")
    configure(sim, clock_speed=0, rate_limit_per_day=1)
    sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).json()["reason"] == (
        "Daily API request limit exceeded. Please try again tomorrow."
    )


def test_forced_status_answers_every_forecast_request(sim: httpx.Client) -> None:
    configure(sim, forced_status=429)
    response = sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert response.status_code == 429
    assert response.json()["reason"] == "Minutely API request limit exceeded. Please try again in one minute."

    configure(sim, forced_status=503)
    response = sim.get("/v1/forecast", params={"latitude": "1000"})  # even an invalid one
    assert response.status_code == 503
    assert response.json() == {"error": True, "reason": "The service is overloaded"}

    configure(sim, forced_status=500)
    response = sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert response.status_code == 500 and response.json()["error"] is True

    configure(sim)
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).status_code == 200
    assert stats(sim)["served"] == 1


def test_error_rate_one_gives_only_faults_in_rotation(sim: httpx.Client) -> None:
    configure(sim, error_rate=1)
    responses = [sim.get("/v1/forecast", params=EXAMPLE_QUERY) for _ in range(6)]

    assert Counter(r.status_code for r in responses) == {502: 2, 503: 2, 200: 2}
    for response in responses:
        if response.status_code == 200:
            assert STREAMING_ERROR in response.content
            with pytest.raises(ValueError):
                json.loads(response.content)
        elif response.status_code == 503:
            assert response.json() == {"error": True, "reason": "The service is overloaded"}
    assert stats(sim)["served"] == 0


def test_error_rate_is_a_probability(sim: httpx.Client) -> None:
    configure(sim, error_rate=0.5, seed=7)
    for _ in range(40):
        sim.get("/v1/forecast", params=CURRENT_ONLY)
    faults = 40 - stats(sim)["served"]
    assert 8 <= faults <= 32


def test_latency_is_added_to_each_request(sim: httpx.Client) -> None:
    configure(sim, latency_ms=300)
    started = time.monotonic()
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_a_caller_that_gives_up_is_counted_as_gone_not_as_a_failure(base_url: str, sim: httpx.Client) -> None:
    configure(sim, latency_ms=500)
    with httpx.Client(base_url=base_url, timeout=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/forecast", data=CURRENT_ONLY)
    # once the latency passes the body is read, from a closed connection
    wait_until(lambda: stats(sim)["statuses"], timeout=5)
    assert stats(sim)["statuses"] == {"499": 1}


async def test_sixth_simultaneous_request_is_refused(base_url: str, sim: httpx.Client) -> None:
    configure(sim, latency_ms=400, max_concurrent=5)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        responses = await asyncio.gather(*(client.get("/v1/forecast", params=CURRENT_ONLY) for _ in range(6)))

    assert sorted(r.status_code for r in responses) == [200] * 5 + [429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json() == {"error": True, "reason": "Too many concurrent requests"}
    counters = stats(sim)
    assert counters["max_in_flight"] == 5 and counters["in_flight"] == 0


def test_clock_speed_moves_current_time_across_15_minute_steps(sim: httpx.Client) -> None:
    before = sim.get("/__simulator/clock").json()["now"]
    configure(sim, clock_speed=3600)  # one simulated hour per real second
    after_change = sim.get("/__simulator/clock").json()["now"]
    assert 0 <= after_change - before < 600  # continuous: no jump when the speed changes

    query = {**CURRENT_ONLY, "timeformat": "unixtime"}
    first = sim.get("/v1/forecast", params=query).json()["current"]["time"]
    time.sleep(0.6)
    second = sim.get("/v1/forecast", params=query).json()["current"]["time"]
    assert second - first >= 900
    elapsed = sim.get("/__simulator/clock").json()["now"] - after_change
    assert elapsed >= 0.6 * 3600


def test_the_clock_says_the_wall_time_of_its_reading_so_another_process_can_anchor_to_it(
    sim: httpx.Client,
) -> None:
    configure(sim, clock_speed=3600)
    first = sim.get("/__simulator/clock").json()
    time.sleep(0.2)
    sent = time.time()
    second = sim.get("/__simulator/clock").json()
    assert sent <= second["real"] <= time.time()
    # anchored at the first pair, the second reading is predicted to within a millisecond's worth
    predicted = first["now"] + (second["real"] - first["real"]) * 3600
    assert second["now"] == pytest.approx(predicted, abs=3.6)


def test_post_form_and_json_bodies_answer_like_get(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)
    by_get = sim.get("/v1/forecast", params=MULTI_QUERY).content
    by_form = sim.post("/v1/forecast", data=MULTI_QUERY).content
    as_json = {
        **MULTI_QUERY,
        "latitude": [52.52, 48.8534],
        "longitude": [13.41, 2.3488],
        "current": MULTI_QUERY["current"].split(","),
    }
    by_json = sim.post("/v1/forecast", json=as_json).content
    assert without_generation_time(by_form) == without_generation_time(by_get)
    assert without_generation_time(by_json) == without_generation_time(by_get)

    too_big = sim.post("/v1/forecast", data={**MULTI_QUERY, "padding": "x" * 140_000})
    assert too_big.status_code == 413 and too_big.json()["error"] is True


def test_reset_zeroes_counters_and_windows_but_keeps_the_config(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0, rate_limit_per_minute=1, latency_ms=1)
    sim.get("/v1/forecast", params=CURRENT_ONLY)
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).status_code == 429

    reset = sim.post("/__simulator/reset").json()
    assert reset == stats(sim)
    assert reset["requests"] == reset["served"] == reset["weight"] == 0
    assert reset["statuses"] == {} and reset["last_requests"] == []
    assert sim.get("/__simulator/config").json()["rate_limit_per_minute"] == 1
    assert sim.get("/v1/forecast", params=CURRENT_ONLY).status_code == 200


def test_config_endpoint_rejects_bad_knobs_atomically(sim: httpx.Client) -> None:
    full = sim.post("/__simulator/config", json={"latency_ms": 5}).json()
    assert list(full) == list(DEFAULTS) and full["latency_ms"] == 5

    invalid = [
        {"no_such_knob": 1},
        {"error_rate": 2},
        {"latency_ms": 1, "max_concurrent": -1},
        {"seed": "x"},
        {"corrupt": "everything"},
        {"corrupt_location": -1},
        {"corrupt_location": "1"},
        {"body_padding_bytes": -1},
        {"body_padding_bytes": 1.5},
        {"trickle_bytes_per_second": -1},
    ]
    for bad in invalid:
        response = sim.post("/__simulator/config", json=bad)
        assert response.status_code == 400 and response.json()["error"] is True
    assert sim.get("/__simulator/config").json()["latency_ms"] == 5


def test_corrupt_answers_are_well_formed_json_with_wrong_contents(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)
    good = sim.get("/v1/forecast", params=EXAMPLE_QUERY).json()

    configure(sim, clock_speed=0, corrupt="dates")
    dates = sim.get("/v1/forecast", params=EXAMPLE_QUERY)
    assert dates.status_code == 200
    body = dates.json()
    assert body["daily"]["time"][0] == good["daily"]["time"][0][:5] + "13" + good["daily"]["time"][0][7:]
    assert all(t[5:7] == "13" for t in body["hourly"]["time"] + body["daily"]["sunrise"] + [body["current"]["time"]])
    assert body["daily"]["temperature_2m_max"] == good["daily"]["temperature_2m_max"]

    configure(sim, clock_speed=0, corrupt="nulls")
    body = sim.get("/v1/forecast", params=EXAMPLE_QUERY).json()
    assert body["hourly"]["time"] == good["hourly"]["time"] and body["current"]["time"] == good["current"]["time"]
    for section in ("current", "hourly", "daily"):
        values = [v for k, v in body[section].items() if k not in ("time", "interval")]
        assert values and all(v is None or (isinstance(v, list) and set(v) == {None}) for v in values)

    configure(sim, clock_speed=0, corrupt="lengths")
    body = sim.get("/v1/forecast", params=EXAMPLE_QUERY).json()
    assert len(body["daily"]["time"]) == 7 and len(body["daily"]["sunrise"]) == 6
    assert len(body["hourly"]["time"]) == 168 and len(body["hourly"]["temperature_2m"]) == 167

    configure(sim, clock_speed=0, corrupt="horizon")
    body = sim.get("/v1/forecast", params=EXAMPLE_QUERY).json()
    assert len(body["daily"]["time"]) == len(body["daily"]["sunset"]) == 6
    assert len(body["hourly"]["time"]) == len(body["hourly"]["weather_code"]) == 144

    configure(sim, corrupt="nulls")
    several = sim.get("/v1/forecast", params=MULTI_QUERY).json()
    assert [location["current"]["temperature_2m"] for location in several] == [None, None]
    # faults, not data: charged one call each like the other faults
    assert stats(sim)["served"] == 1


def test_corrupt_location_spoils_one_location_of_a_multi_location_answer(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)
    good = sim.get("/v1/forecast", params=MULTI_QUERY).json()
    configure(sim, clock_speed=0, corrupt="nulls", corrupt_location=1)
    several = sim.get("/v1/forecast", params=MULTI_QUERY).json()
    assert several[0] == {**good[0], "generationtime_ms": several[0]["generationtime_ms"]}
    assert (
        several[1]["current"]["temperature_2m"] is None and several[1]["current"]["time"] == good[1]["current"]["time"]
    )
    # an answer like any other (two locations served), not a fault
    assert stats(sim)["served"] == 2 and stats(sim)["locations"] == 4
    configure(sim, clock_speed=0, corrupt="nulls", corrupt_location=5)  # no such location: nothing spoilt
    assert sim.get("/v1/forecast", params=MULTI_QUERY).json()[1]["current"] == good[1]["current"]


def test_padded_answer_is_the_real_one_followed_by_whitespace(sim: httpx.Client) -> None:
    configure(sim, clock_speed=0)
    plain = sim.get("/v1/forecast", params=EXAMPLE_QUERY).content
    configure(sim, clock_speed=0, body_padding_bytes=3_000_000)
    padded = sim.get("/v1/forecast", params=EXAMPLE_QUERY)  # gzip on the wire, decoded here
    assert padded.status_code == 200
    answer = padded.content.rstrip(b" ")
    assert len(padded.content) - len(answer) == 3_000_000
    assert without_generation_time(answer) == without_generation_time(plain)
    assert json.loads(padded.content)["timezone"] == "Europe/Berlin"


def test_trickled_answer_arrives_at_the_configured_rate(sim: httpx.Client) -> None:
    configure(sim, trickle_bytes_per_second=100)
    started = time.monotonic()
    with sim.stream("GET", "/v1/forecast", params=CURRENT_ONLY) as response:
        assert response.status_code == 200
        headers_after = time.monotonic() - started
        received = b"".join(response.iter_bytes())
    elapsed = time.monotonic() - started
    assert headers_after < 1  # the headers and first bytes go out at once; the rest trickles
    # a current-only answer is about 300 bytes: some three seconds at 100 bytes a second
    assert elapsed >= len(received) / 100 * 0.8
    assert json.loads(received)["current"]["temperature_2m"] is not None
