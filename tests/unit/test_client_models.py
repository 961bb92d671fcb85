"""The Python client's models (clients/python/weathernote_client/models.py) against the schema and the app's
operations (clients/operations/*.graphql): generated from them by clients/python/generate_models.py and current,
and, checked here independently of the generator, a class per selected object type holding exactly the fields
the operations select, typed as the schema types them, read from JSON as such. In-process: no server, no network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sys
import typing
from collections import defaultdict
from typing import Any

import pytest
from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    build_schema,
    get_named_type,
    parse,
    visit,
)

from tests.conftest import ROOT

CLIENT_DIR = ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))  # the client is its own distribution; the tests use its source tree

import generate_models  # noqa: E402
from weathernote_client import models  # noqa: E402
from weathernote_client.errors import ServerError  # noqa: E402

SCHEMA = build_schema((ROOT / "schema.graphql").read_text(encoding="utf-8"))
OPERATION_FILES = sorted((ROOT / "clients" / "operations").glob("*.graphql"))
ROOTS = {SCHEMA.query_type, SCHEMA.mutation_type, SCHEMA.subscription_type} - {None}

# a scalar's Python type, a JSON value of it and how the models read that, a JSON value that is not of it
SCALARS: dict[str, tuple[type, Any, Any, Any]] = {
    "Float": (float, 2, 2.0, "2.5"),
    "Int": (int, 3, 3, 3.5),
    "Boolean": (bool, True, True, 1),
    "String": (str, "text", "text", 7),
    "ID": (str, "id", "id", 7),
    "Date": (dt.date, "2024-05-01", dt.date(2024, 5, 1), "01/05/2024"),
    "DateTime": (
        dt.datetime,
        "2024-05-01T12:30:00+02:00",
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "noon",
    ),
}


class SelectedFields(Visitor):
    """Records each field selected below the root types: response key -> schema type, by parent type."""

    def __init__(self, type_info: TypeInfo, selected: dict[str, dict[str, GraphQLOutputType]]) -> None:
        super().__init__()
        self.type_info, self.selected = type_info, selected

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        parent, kind = self.type_info.get_parent_type(), self.type_info.get_type()
        assert parent is not None and kind is not None, f"{node.name.value} is not in the schema"
        if parent not in ROOTS:
            self.selected[parent.name][node.alias.value if node.alias else node.name.value] = kind


def selected_fields() -> dict[str, dict[str, GraphQLOutputType]]:
    """Per object type the operations select (below their root types): response key -> the field's schema type."""
    selected: dict[str, dict[str, GraphQLOutputType]] = defaultdict(dict)
    for path in OPERATION_FILES:
        type_info = TypeInfo(SCHEMA)
        visit(parse(path.read_text(encoding="utf-8")), TypeInfoVisitor(type_info, SelectedFields(type_info, selected)))
    return dict(selected)


SELECTED = selected_fields()
ENUMS = sorted(
    {
        kind.name
        for fields in SELECTED.values()
        for kind in map(get_named_type, fields.values())
        if isinstance(kind, GraphQLEnumType)
    }
)
FIELDS = [(type_name, key) for type_name, fields in SELECTED.items() for key in fields]


def snake(key: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in key)


def python_type(kind: GraphQLOutputType) -> Any:
    """The type a model field of GraphQL type `kind` must have."""
    if not isinstance(kind, GraphQLNonNull):
        return python_type(GraphQLNonNull(kind)) | None
    inner = kind.of_type
    if isinstance(inner, GraphQLList):
        return tuple[python_type(inner.of_type), ...]  # type: ignore[misc]
    if isinstance(inner, GraphQLEnumType | GraphQLObjectType):
        return getattr(models, inner.name)
    return SCALARS[inner.name][0]


def sample(kind: GraphQLOutputType) -> tuple[Any, Any]:
    """A JSON value of type `kind` (never null) and what the models read it as."""
    kind = kind.of_type if isinstance(kind, GraphQLNonNull) else kind
    if isinstance(kind, GraphQLList):
        item, value = sample(kind.of_type)
        return [item, item], (value, value)
    if isinstance(kind, GraphQLEnumType):
        name = list(kind.values)[-1]
        return name, getattr(models, kind.name)[name]
    if isinstance(kind, GraphQLObjectType):
        return sample_object(kind.name)
    _, data, value, _ = SCALARS[kind.name]
    return data, value


def sample_object(type_name: str) -> tuple[dict[str, Any], Any]:
    """A JSON object of every field the operations select of `type_name`, and its model."""
    samples = {key: sample(kind) for key, kind in SELECTED[type_name].items()}
    model = getattr(models, type_name)(**{snake(key): value for key, (_, value) in samples.items()})
    return {key: data for key, (data, _) in samples.items()}, model


def wrong(kind: GraphQLOutputType) -> Any:
    """A JSON value that is not of type `kind` (nor null)."""
    kind = kind.of_type if isinstance(kind, GraphQLNonNull) else kind
    if isinstance(kind, GraphQLList):
        return {"not": "a list"}
    if isinstance(kind, GraphQLEnumType):
        return "NOT_A_VALUE"
    if isinstance(kind, GraphQLObjectType):
        return ["not an object"]
    return SCALARS[kind.name][3]


def test_models_py_is_generated_from_the_schema_and_the_operations() -> None:
    """Fails when the schema or an operation changed without `.venv/bin/python clients/python/generate_models.py`."""
    current = generate_models.MODELS_FILE.read_text(encoding="utf-8")
    assert generate_models.render() == current, (
        "models.py is stale: run .venv/bin/python clients/python/generate_models.py"
    )


def test_the_models_are_the_selected_types_and_their_enums() -> None:
    defined = {
        name for name, value in vars(models).items() if isinstance(value, type) and value.__module__ == models.__name__
    }
    assert defined == set(SELECTED) | set(ENUMS)
    assert {"Cell", "Condition", "CurrentWeather", "DailyForecast", "Forecast", "HourlyForecast", "Units"} <= defined


@pytest.mark.parametrize("enum_name", ENUMS)
def test_an_enum_has_the_schemas_values(enum_name: str) -> None:
    kind = SCHEMA.get_type(enum_name)
    assert isinstance(kind, GraphQLEnumType)
    assert [(member.name, member.value) for member in getattr(models, enum_name)] == [
        (name, name) for name in kind.values
    ]


@pytest.mark.parametrize("type_name", sorted(SELECTED))
def test_a_model_has_exactly_the_selected_fields_typed_as_the_schema_types_them(type_name: str) -> None:
    model = getattr(models, type_name)
    assert dataclasses.is_dataclass(model)
    hints = typing.get_type_hints(model)
    actual = [(field.name, hints[field.name]) for field in dataclasses.fields(model)]
    expected = [(snake(key), python_type(kind)) for key, kind in SELECTED[type_name].items()]
    assert actual == expected


@pytest.mark.parametrize("type_name", sorted(SELECTED))
def test_a_model_reads_every_selected_field_from_json(type_name: str) -> None:
    data, expected = sample_object(type_name)
    read = getattr(models, type_name).from_json(data)
    assert read == expected and repr(read) == repr(expected)  # repr: 2.0 is not 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(read, dataclasses.fields(read)[0].name, None)


@pytest.mark.parametrize(("type_name", "key"), FIELDS, ids=[f"{type_name}.{key}" for type_name, key in FIELDS])
def test_null_reads_as_none_for_a_nullable_field_only(type_name: str, key: str) -> None:
    model = getattr(models, type_name)
    data, _ = sample_object(type_name)
    for without in ({**data, key: None}, {name: value for name, value in data.items() if name != key}):
        if isinstance(SELECTED[type_name][key], GraphQLNonNull):
            with pytest.raises(ServerError, match=f"`{key}` is None"):
                model.from_json(without)
        else:
            assert getattr(model.from_json(without), snake(key)) is None


@pytest.mark.parametrize(("type_name", "key"), FIELDS, ids=[f"{type_name}.{key}" for type_name, key in FIELDS])
def test_a_value_of_another_type_is_refused(type_name: str, key: str) -> None:
    data, _ = sample_object(type_name)
    value = wrong(SELECTED[type_name][key])
    with pytest.raises(ServerError, match=re.escape(f"unexpected response: `{key}` is {value!r}")):
        getattr(models, type_name).from_json({**data, key: value})
