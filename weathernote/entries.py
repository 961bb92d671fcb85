"""Typed cache entries: what one refresh of one cell stores, and its wire form.

A cell has three independent parts, each its own Redis entry, so that a query
reads and fetches only what it selected: the current conditions, the daily
forecast and the hourly forecast. Values are stored in metric units; unit
conversion happens when a response is rendered.

In Redis an entry is a one-line header followed by JSON:

    b"<fresh_until_ms> <fetched_at_ms>\\n{...}"

so that freshness and version can be read without decoding the JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

from weathernote.cells import Cell

FORECAST_DAYS = 16  # every `days` argument is served from one 16-day entry


class Part(enum.Enum):
    CURRENT = "current"
    DAILY = "daily"
    HOURLY = "hourly"


@dataclass(frozen=True, slots=True)
class Current:
    time: str  # ISO 8601 local time with its UTC offset, e.g. 2025-06-16T14:45+02:00
    temperature: float | None
    apparent_temperature: float | None
    humidity: float | None
    precipitation: float | None
    weather_code: int | None
    cloud_cover: float | None
    pressure: float | None
    wind_speed: float | None
    wind_direction: float | None
    wind_gusts: float | None
    is_day: bool | None


@dataclass(frozen=True, slots=True)
class Daily:
    """Parallel columns, one value per local day, like Open-Meteo's own shape."""

    timezone: str
    utc_offset_seconds: int
    date: list[str]
    temperature_max: list[float | None]
    temperature_min: list[float | None]
    precipitation_sum: list[float | None]
    precipitation_probability_max: list[float | None]
    weather_code: list[int | None]
    sunrise: list[str | None]
    sunset: list[str | None]
    wind_speed_max: list[float | None]
    uv_index_max: list[float | None]


@dataclass(frozen=True, slots=True)
class Hourly:
    timezone: str
    utc_offset_seconds: int
    time: list[str]
    temperature: list[float | None]
    precipitation_probability: list[float | None]
    weather_code: list[int | None]
    wind_speed: list[float | None]


Model = Current | Daily | Hourly
MODEL_OF_PART: dict[Part, type[Any]] = {Part.CURRENT: Current, Part.DAILY: Daily, Part.HOURLY: Hourly}


@dataclass(slots=True)
class Entry:
    """One stored refresh of one part of one cell; the model is decoded on first use."""

    part: Part
    cell: Cell
    fetched_at_ms: int  # also the entry's version
    fresh_until_ms: int
    next_update_ms: int  # when the upstream can have newer data than this
    payload: bytes  # the model as JSON
    _model: Model | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_model(
        cls, part: Part, cell: Cell, model: Model, fetched_at_ms: int, fresh_until_ms: int, next_update_ms: int
    ) -> Entry:
        return cls(part, cell, fetched_at_ms, fresh_until_ms, next_update_ms, orjson.dumps(model), model)

    @classmethod
    def decode(cls, part: Part, cell: Cell, raw: bytes) -> Entry:
        header, _, payload = raw.partition(b"\n")
        fresh_until, fetched_at, next_update = header.split(b" ")
        return cls(part, cell, int(fetched_at), int(fresh_until), int(next_update), payload)

    def renewed(self, fresh_until_ms: int) -> Entry:
        """The same data and version, fresh for longer (the upstream cannot have newer yet)."""
        return Entry(
            self.part, self.cell, self.fetched_at_ms, fresh_until_ms, self.next_update_ms, self.payload, self._model
        )

    @property
    def header(self) -> bytes:
        """The first line of the wire form: freshness, version and next possible update."""
        return b"%d %d %d\n" % (self.fresh_until_ms, self.fetched_at_ms, self.next_update_ms)

    def encode(self) -> bytes:
        return self.header + self.payload

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = MODEL_OF_PART[self.part](**orjson.loads(self.payload))
        return self._model

    def is_fresh(self, now_ms: int) -> bool:
        return now_ms < self.fresh_until_ms
