"""A map's box: the cells it holds (edges, rounding, limits, the antimeridian and the poles), and a
multi-location answer read location by location."""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import graphql
import pytest
from hypothesis import given
from hypothesis import strategies as st

from weathernote.errors import ContractError
from weathernote.graphql.documents.plans import read_cost
from weathernote.model import Grid, InvalidBox, InvalidCoordinates, Part
from weathernote.upstream.contract import parse_each

GRID = Grid(0.1)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def labels(south: float, west: float, north: float, east: float, max_cells: int = 100, grid: Grid = GRID) -> list[str]:
    return [cell.label for cell in grid.cells_in(south, west, north, east, max_cells=max_cells)]


def test_edges_on_centres_are_included_as_written() -> None:
    # 40.1 / 0.1 is 400.99999999999994 in floats: the edge is still the centre 40.1
    assert labels(40.1, -74.0, 40.3, -73.8) == [
        f"lat:{lat}:lon:{lon}" for lat in ("40.1", "40.2", "40.3") for lon in ("-74.0", "-73.9", "-73.8")
    ]
    assert labels(0.3, 0.7, 0.3, 0.7) == ["lat:0.3:lon:0.7"]  # a box that is one centre


def test_only_centres_inside_count_not_the_cells_the_box_touches() -> None:
    # 40.06 and 40.94 round to the cells 40.1 and 40.9, whose centres are inside; 40.0 and 41.0 are not
    assert labels(40.06, 10.0, 40.94, 10.0) == [f"lat:{lat / 10:.1f}:lon:10.0" for lat in range(401, 410)]
    assert labels(40.01, 10.01, 40.09, 10.09) == []  # no centre inside: an empty box


def test_limits_count_cells_and_name_the_limit() -> None:
    assert len(labels(10.0, 10.0, 10.9, 10.9)) == 100  # 10 x 10: exactly the limit
    with pytest.raises(InvalidBox, match=r"the box holds 110 cells of 0\.1 degrees; at most 100 cells"):
        labels(10.0, 10.0, 11.0, 10.9)
    # the whole world is refused from its size alone, long before 6.5 million cells are made
    with pytest.raises(InvalidBox, match="6485401 cells"):
        labels(-90, -180, 90, 180)


def test_edges_out_of_order_or_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidBox, match="south must not exceed north"):
        labels(11, 10, 10, 11)
    with pytest.raises(InvalidBox, match="does not cross the antimeridian"):
        labels(10, 179.9, 11, -179.9)
    for box in ((-91, 0, 0, 1), (0, 0, 0, 180.5), (math.nan, 0, 1, 1), (0, math.inf, 1, 1), (True, 0, 1, 1)):
        with pytest.raises(InvalidCoordinates):
            labels(*box)  # type: ignore[arg-type]


def test_the_antimeridian_is_one_column_and_the_poles_are_cells() -> None:
    # 180 and -180 are the same cell: once, where -180 sorts
    assert labels(-10, 179.9, -10, 180) == ["lat:-10.0:lon:179.9", "lat:-10.0:lon:-180.0"]
    assert len(labels(0, -180, 0, 180, max_cells=3600)) == 3600
    assert labels(89.9, -180, 90, -179.9) == [
        "lat:89.9:lon:-180.0",
        "lat:89.9:lon:-179.9",
        "lat:90.0:lon:-180.0",
        "lat:90.0:lon:-179.9",
    ]
    assert labels(-90, 0, -90, 0) == ["lat:-90.0:lon:0.0"]
    # the twin column does not count against the limit
    assert len(labels(0, -180, 0.9, 180, max_cells=36000)) == 36000


def test_other_steps() -> None:
    assert labels(0.2, 0.2, 0.8, 0.3, grid=Grid(0.25)) == [
        "lat:0.25:lon:0.25",
        "lat:0.50:lon:0.25",
        "lat:0.75:lon:0.25",
    ]


edges = st.decimals(min_value=-3, max_value=3, places=2).map(float)


@given(edges, edges, edges, edges)
def test_a_box_holds_exactly_the_cells_whose_centres_lie_in_it(a: float, b: float, c: float, d: float) -> None:
    south, north, west, east = min(a, b), max(a, b), min(c, d), max(c, d)
    found = GRID.cells_in(south, west, north, east, max_cells=10_000)
    assert len({cell.label for cell in found}) == len(found)
    assert all(south <= cell.lat <= north and west <= cell.lon <= east for cell in found)
    # every centre inside, from the exact decimals of the edges
    inside = [
        (lat / 10, lon / 10)
        for lat in range(-31, 32)
        for lon in range(-31, 32)
        if Decimal(repr(south)) <= Decimal(lat) / 10 <= Decimal(repr(north))
        and Decimal(repr(west)) <= Decimal(lon) / 10 <= Decimal(repr(east))
    ]
    assert [(cell.lat, cell.lon) for cell in found] == inside


def _multi() -> list[dict[str, Any]]:
    body = json.loads((FIXTURES / "open-meteo-multi-example.json").read_bytes())
    for location in body:  # the example lacks two of our variables (as in test_upstream_contract)
        location["current"]["wind_gusts_10m"] = 20.5
        location["current"]["pressure_msl"] = 1012.0
        location["current_units"]["wind_gusts_10m"] = "km/h"
        location["current_units"]["pressure_msl"] = "hPa"
    return list(body)


def test_a_flawed_location_spoils_only_itself() -> None:
    body = _multi()
    spoilt = copy.deepcopy(body)
    spoilt[0]["current"]["temperature_2m"] = 900.0  # implausible
    berlin, paris = parse_each(spoilt, 2, [Part.CURRENT], days=1)
    assert isinstance(berlin, ContractError) and "location 0" in str(berlin)
    assert not isinstance(paris, ContractError) and paris[Part.CURRENT].temperature == 22.8
    # the answer's shape still holds for the whole of it
    with pytest.raises(ContractError, match="expected 3 location"):
        parse_each(body, 3, [Part.CURRENT], days=1)


def test_a_box_field_is_charged_one_read_before_its_resolver_knows_its_cells() -> None:
    document = graphql.parse(
        "{ a: currentArea(south: 0, west: 0, north: 1, east: 1) { temperature } current(lat: 1, lon: 1) { cached } }"
    )
    [operation] = document.definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    assert read_cost(document, operation) == 2
