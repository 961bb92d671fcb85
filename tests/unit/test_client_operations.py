"""The app's operations (clients/operations), read in process: the six of them, valid against the schema,
listed in a manifest of Apollo's format whose ids hash the bodies.

That the manifest is current (its builder's --check) and that a server in safelist mode runs these
operations and nothing else is tested in tests/service/test_client_operations_safelist.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from tests.conftest import ROOT

OPERATIONS = ROOT / "clients" / "operations"
MANIFEST = OPERATIONS / "persisted-query-manifest.json"
OPERATION_FILES = sorted(OPERATIONS.glob("*.graphql"))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_operations() -> list[dict[str, str]]:
    operations: list[dict[str, str]] = json.loads(MANIFEST.read_text())["operations"]
    return operations


def by_type(kind: str) -> list[dict[str, str]]:
    return [operation for operation in manifest_operations() if operation["type"] == kind]


def test_the_app_has_its_six_operations() -> None:
    assert [path.stem for path in OPERATION_FILES] == [
        "CurrentArea",
        "CurrentWeather",
        "Forecast",
        "ForecastUpdates",
        "WeatherUpdates",
        "WeatherUpdatesInArea",
    ]
    assert {(op["name"], op["type"]) for op in manifest_operations()} == {
        ("CurrentArea", "query"),
        ("CurrentWeather", "query"),
        ("Forecast", "query"),
        ("WeatherUpdates", "subscription"),
        ("WeatherUpdatesInArea", "subscription"),
        ("ForecastUpdates", "subscription"),
    }


@pytest.mark.parametrize("path", OPERATION_FILES, ids=lambda path: path.stem)
def test_every_operation_validates_against_the_schema(path: Path) -> None:
    schema = build_schema((ROOT / "schema.graphql").read_text())
    assert validate(schema, parse(path.read_text())) == []


def test_the_manifest_is_apollos_format_with_ids_that_hash_the_bodies() -> None:
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["format"] == "apollo-persisted-query-manifest" and manifest["version"] == 1
    for operation in manifest["operations"]:
        assert set(operation) == {"id", "name", "type", "body"}
        assert operation["id"] == sha256(operation["body"])
