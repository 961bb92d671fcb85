"""Typed cache entries: what one refresh of one cell stores, and its wire form.

A cell has three independent parts, each its own Redis entry, so that a query
reads and fetches only what it selected: the current conditions, the daily
forecast and the hourly forecast. Values are stored in metric units; unit
conversion happens when a response is rendered.

In Redis an entry is a one-line header followed by JSON:

    b"wn2 <fresh_until_ms> <fetched_at_ms> <next_update_ms>\\n{...}"

so that freshness and version can be read without decoding the JSON. `wn2` is
the format: what is read back from Redis is checked like any input, and an
entry of another format (an older or newer release sharing the Redis during a
deploy, another tool, corruption) is `UndecodableEntry`, which readers treat
as a miss and the next write overwrites. Within one format, changes are
additive: a reader ignores fields it does not know, so two releases of one
format share entries without flapping.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

import orjson

from weathernote.errors import UndecodableEntry
from weathernote.model.cells import Cell

FORMAT = b"wn2"

FORECAST_DAYS = 16  # every `days` argument is served from one 16-day entry


class Part(enum.Enum):
    """The three independent parts of a cell, each its own cache entry."""

    CURRENT = "current"
    DAILY = "daily"
    HOURLY = "hourly"


@dataclass(frozen=True, slots=True)
class Current:
    """Current conditions at one 15-minute step, metric."""

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
    """Parallel columns, one value per local hour, metric."""

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
        """The entry `raw` holds, checked whole (header, JSON, every field's type)."""
        entry = cls.undecoded(part, cell, raw)
        try:
            document = orjson.loads(entry.payload)
        except orjson.JSONDecodeError as exc:
            raise UndecodableEntry(f"unreadable {FORMAT.decode()} entry") from exc
        entry._model = _model(part, document)
        return entry

    @classmethod
    def undecoded(cls, part: Part, cell: Cell, raw: bytes) -> Entry:
        """The entry `raw` holds, its header checked and its model decoded on first use: for a version
        whose bytes this process has decoded whole before (cache.EntryMemo)."""
        header, _, payload = raw.partition(b"\n")
        fields_ = header.split(b" ")
        if len(fields_) != 4 or fields_[0] != FORMAT:
            raise UndecodableEntry(f"not a {FORMAT.decode()} entry")
        try:
            fresh_until, fetched_at, next_update = (int(value) for value in fields_[1:])
        except ValueError as exc:
            raise UndecodableEntry(f"unreadable {FORMAT.decode()} entry") from exc
        return cls(part, cell, fetched_at, fresh_until, next_update, payload)

    def renewed(self, fresh_until_ms: int) -> Entry:
        """The same data and version, fresh for longer (the upstream cannot have newer yet)."""
        return Entry(
            self.part, self.cell, self.fetched_at_ms, fresh_until_ms, self.next_update_ms, self.payload, self._model
        )

    @property
    def header(self) -> bytes:
        """The first line of the wire form: format, freshness, version and next possible update."""
        return b"%s %d %d %d\n" % (FORMAT, self.fresh_until_ms, self.fetched_at_ms, self.next_update_ms)

    def encode(self) -> bytes:
        return self.header + self.payload

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = _model(self.part, orjson.loads(self.payload))
        return self._model

    def is_fresh(self, now_ms: int) -> bool:
        return now_ms < self.fresh_until_ms


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))


def _integer(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _parses(parse: Callable[[str], object], optional: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if value is None:
            return optional
        if not isinstance(value, str):
            return False
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return check


_moment = _parses(datetime.fromisoformat)
_CHECKS: dict[type[Any], dict[str, Callable[[Any], bool]]] = {
    Current: {
        "time": _moment,
        "weather_code": _integer,
        "is_day": _flag,
        **dict.fromkeys(
            [
                "temperature",
                "apparent_temperature",
                "humidity",
                "precipitation",
                "cloud_cover",
                "pressure",
                "wind_speed",
                "wind_direction",
                "wind_gusts",
            ],
            _number,
        ),
    },
    Daily: {
        "date": _parses(date.fromisoformat),
        "weather_code": _integer,
        "sunrise": _parses(datetime.fromisoformat, optional=True),
        "sunset": _parses(datetime.fromisoformat, optional=True),
        **dict.fromkeys(
            [
                "temperature_max",
                "temperature_min",
                "precipitation_sum",
                "precipitation_probability_max",
                "wind_speed_max",
                "uv_index_max",
            ],
            _number,
        ),
    },
    Hourly: {
        "time": _moment,
        "weather_code": _integer,
        **dict.fromkeys(["temperature", "precipitation_probability", "wind_speed"], _number),
    },
}


def _model(part: Part, document: Any) -> Model:
    """The part's model from decoded JSON, every field checked; unknown fields are ignored."""
    kind = MODEL_OF_PART[part]
    if not isinstance(document, dict):
        raise UndecodableEntry("entry payload is not an object")
    values = {}
    for spec in fields(kind):
        if spec.name not in document:
            raise UndecodableEntry(f"entry lacks {spec.name}")
        values[spec.name] = document[spec.name]
    checks = _CHECKS[kind]
    if kind is Current:
        bad = [name for name, check in checks.items() if not check(values[name])]
    else:
        if not _text(values["timezone"]) or not _integer(values["utc_offset_seconds"]):
            raise UndecodableEntry("entry has a bad timezone")
        columns = {name: values[name] for name in checks}
        if not all(isinstance(column, list) for column in columns.values()):
            raise UndecodableEntry("entry columns are not lists")
        if len({len(column) for column in columns.values()}) != 1:
            raise UndecodableEntry("entry columns differ in length")
        bad = [name for name, column in columns.items() if not all(map(checks[name], column))]
    if bad:
        raise UndecodableEntry(f"entry has bad {', '.join(bad)}")
    return kind(**values)  # type: ignore[no-any-return]
