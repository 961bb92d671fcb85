"""schema.graphql is generated from the code and must never drift from it."""

from __future__ import annotations

from pathlib import Path

from weathernote.graphql.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_checked_in_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == str(schema) + "\n", (
        "schema.graphql is out of date: run `weathernote export-schema -o schema.graphql`"
    )


def test_contract_fields_are_present() -> None:
    sdl = str(schema)
    assert "current(lat: Float!, lon: Float!, units: Units = METRIC): CurrentWeather!" in sdl
    assert "forecast(lat: Float!, lon: Float!, days: Int = 7, units: Units = METRIC): Forecast!" in sdl
    for field in (
        "apparentTemperature",
        "humidity",
        "precipitation",
        "weatherCode",
        "cloudCover",
        "pressure",
        "windSpeed",
        "windDirection",
        "windGusts",
        "isDay",
        "cached",
        "stale",
        "fetchedAt",
        "precipitationProbabilityMax",
        "sunrise",
        "sunset",
        "windSpeedMax",
        "uvIndexMax",
        "precipitationProbability",
    ):
        assert f"  {field}" in sdl, field
