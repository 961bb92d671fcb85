"""Strict readers of JSON values, for the generated models (`models.py`).

A reader takes a JSON value and returns it as its Python type, or raises `Mismatch`;
`field` reads one field of an object that way and turns a mismatch into `ServerError`
naming the field: the server and this client disagree about the schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

from weathernote_client.errors import ServerError

T = TypeVar("T")
E = TypeVar("E", bound=Enum)
Reader = Callable[[Any], T]


class Mismatch(Exception):
    """A JSON value that does not fit its reader (`field` says which field it was)."""


def unexpected(name: str, value: object) -> ServerError:
    return ServerError(f"unexpected response: `{name}` is {value!r}")


def fields(data: Any, name: str) -> Mapping[str, Any]:
    """`data`, a JSON object of the type `name`."""
    if not isinstance(data, Mapping):
        raise unexpected(name, data)
    return data


def field(data: Mapping[str, Any], key: str, reader: Reader[T]) -> T:
    """The field `key` of `data` (absent reads as null), read by `reader`."""
    value = data.get(key)
    try:
        return reader(value)
    except Mismatch:
        raise unexpected(key, value) from None


def optional(reader: Reader[T]) -> Reader[T | None]:
    """A nullable value: None for null, else read by `reader`."""

    def read_optional(value: Any) -> T | None:
        return None if value is None else reader(value)

    return read_optional


def tuple_of(reader: Reader[T]) -> Reader[tuple[T, ...]]:
    """A JSON list, each item read by `reader`."""

    def read_list(value: Any) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise Mismatch
        return tuple(reader(item) for item in value)

    return read_list


def object_of(reader: Reader[T]) -> Reader[T]:
    """A JSON object, read by `reader` (a model's `from_json`)."""

    def read_object(value: Any) -> T:
        if not isinstance(value, Mapping):
            raise Mismatch
        return reader(value)

    return read_object


def enum(kind: type[E]) -> Reader[E]:
    """An enum value, by its name (the generated enums' values are their names)."""

    def read_enum(value: Any) -> E:
        if not isinstance(value, str):
            raise Mismatch
        try:
            return kind(value)
        except ValueError:
            raise Mismatch from None

    return read_enum


def number(value: Any) -> float:
    """`Float`: a JSON number (an integer too), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Mismatch
    return float(value)


def integer(value: Any) -> int:
    """`Int`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Mismatch
    return value


def boolean(value: Any) -> bool:
    """`Boolean`."""
    if not isinstance(value, bool):
        raise Mismatch
    return value


def string(value: Any) -> str:
    """`String` and `ID`."""
    if not isinstance(value, str):
        raise Mismatch
    return value


def datetime(value: Any) -> dt.datetime:
    """`DateTime`: ISO 8601 text."""
    try:
        return dt.datetime.fromisoformat(string(value))
    except ValueError:
        raise Mismatch from None


def date(value: Any) -> dt.date:
    """`Date`: ISO 8601 text."""
    try:
        return dt.date.fromisoformat(string(value))
    except ValueError:
        raise Mismatch from None
