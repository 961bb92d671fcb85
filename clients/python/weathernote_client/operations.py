"""The app's operations, exactly as listed in the persisted-query manifest.

`persisted-query-manifest.json` in this package is a copy of
`clients/operations/persisted-query-manifest.json`, written by the same
`clients/operations/build_manifest.py`: the bodies sent here are byte for byte
the ones a safelisted server accepts, and their hashes are the manifest's ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

MANIFEST = "persisted-query-manifest.json"


@dataclass(frozen=True, slots=True)
class Operation:
    """One persisted operation: its name, type (`query`, `subscription`), text and SHA-256 id."""

    name: str
    type: str
    body: str
    sha256: str


def load_operations() -> dict[str, Operation]:
    """The manifest's operations by name."""
    manifest = json.loads(resources.files("weathernote_client").joinpath(MANIFEST).read_text(encoding="utf-8"))
    return {
        entry["name"]: Operation(name=entry["name"], type=entry["type"], body=entry["body"], sha256=entry["id"])
        for entry in manifest["operations"]
    }


OPERATIONS = load_operations()
CURRENT_WEATHER = OPERATIONS["CurrentWeather"]
FORECAST = OPERATIONS["Forecast"]
WEATHER_UPDATES = OPERATIONS["WeatherUpdates"]
FORECAST_UPDATES = OPERATIONS["ForecastUpdates"]
