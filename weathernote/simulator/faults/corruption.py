"""Well-formed but wrong answers, for the `corrupt` knob: 200s that a validating client must refuse.

Each kind keeps the answer valid JSON in Open-Meteo's shape, so only a client
that checks the contents (not just the syntax) notices:

- `dates`: every date and time names month 13 (`2025-13-16T14:45`): the shape of a date, not a date;
- `nulls`: every value is null, only the times are left;
- `lengths`: every hourly and daily column is one value shorter than its `time`;
- `horizon`: hourly and daily cover one day less than the request asked for.

With `corrupt_location` only that location of a multi-location answer is made wrong
(the others are right): a client must refuse that one and keep the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

CORRUPTIONS = ("dates", "nulls", "lengths", "horizon")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KEEP = ("time", "interval")  # what `nulls` leaves as it is


def corrupt(body: bytes, kind: str, only: int | None = None) -> bytes:
    """`body`, a rendered answer for one or several locations, made wrong in the way `kind` names:
    every location, or `only` the one of that index (in request order; none if there is no such one)."""
    document = orjson.loads(body)
    for index, location in enumerate(document if isinstance(document, list) else [document]):
        if only is not None and index != only:
            continue
        for name in ("current", "hourly", "daily"):
            section = location.get(name)
            if section is not None:
                _CORRUPTERS[kind](name, section)
    return orjson.dumps(document)


def _not_dates(name: str, section: dict[str, Any]) -> None:
    for key, value in section.items():
        if isinstance(value, list):
            section[key] = [_month_13(item) for item in value]
        else:
            section[key] = _month_13(value)


def _month_13(value: Any) -> Any:
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value[:5] + "13" + value[7:]
    return value


def _nulls(name: str, section: dict[str, Any]) -> None:
    for key, value in section.items():
        if key not in _KEEP:
            section[key] = [None] * len(value) if isinstance(value, list) else None


def _lengths(name: str, section: dict[str, Any]) -> None:
    for key, value in section.items():
        if key != "time" and isinstance(value, list):
            section[key] = value[:-1]


def _horizon(name: str, section: dict[str, Any]) -> None:
    short = 24 if name == "hourly" else 1
    for key, value in section.items():
        if isinstance(value, list):
            section[key] = value[:-short]


_CORRUPTERS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "dates": _not_dates,
    "nulls": _nulls,
    "lengths": _lengths,
    "horizon": _horizon,
}
