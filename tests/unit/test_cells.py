"""Cells: the invariants every cache key depends on."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weathernote.model.cells import Grid, InvalidCoordinates
from weathernote.model.entries import Part
from weathernote.redis.keys import SEED_SPELLING

latitudes = st.floats(min_value=-90, max_value=90, allow_nan=False)
longitudes = st.floats(min_value=-180, max_value=180, allow_nan=False)
steps = st.sampled_from([0.1, 0.25, 0.5, 0.05, 1.0])


def test_seed_example_rounds_to_the_seed_key() -> None:
    cell = Grid(0.1).cell(40.7128, -74.0060)
    assert (cell.lat, cell.lon) == (40.7, -74.0)
    assert SEED_SPELLING.entry(Part.CURRENT, cell) == "weather:lat:40.7:lon:-74.0"
    assert SEED_SPELLING.entry(Part.DAILY, cell) == "forecast:lat:40.7:lon:-74.0:days:16"


@given(latitudes, longitudes, steps)
def test_rounding_is_idempotent(lat: float, lon: float, step: float) -> None:
    grid = Grid(step)
    cell = grid.cell(lat, lon)
    assert grid.cell(cell.lat, cell.lon) == cell


@given(latitudes, longitudes)
def test_labels_never_carry_negative_zero(lat: float, lon: float) -> None:
    label = Grid(0.1).cell(lat, lon).label
    assert "-0.0:" not in label + ":" and not label.endswith("-0.0")


@given(latitudes, longitudes)
def test_labels_print_one_decimal(lat: float, lon: float) -> None:
    label = Grid(0.1).cell(lat, lon).label
    _, lat_text, _, lon_text = label.split(":")
    assert len(lat_text.split(".")[1]) == 1 and len(lon_text.split(".")[1]) == 1


@given(latitudes, steps)
def test_antimeridian_is_one_cell(lat: float, step: float) -> None:
    grid = Grid(step)
    assert grid.cell(lat, 180.0) == grid.cell(lat, -180.0)


@given(latitudes, longitudes, steps)
def test_every_point_is_within_half_a_step_of_its_cell(lat: float, lon: float, step: float) -> None:
    cell = Grid(step).cell(lat, lon)
    assert abs(cell.lat - lat) <= step / 2 + 1e-9
    lon_distance = abs(cell.lon - lon)
    assert min(lon_distance, 360 - lon_distance) <= step / 2 + 1e-9


@given(latitudes, longitudes)
def test_cell_coordinates_stay_in_range(lat: float, lon: float) -> None:
    cell = Grid(0.1).cell(lat, lon)
    assert -90 <= cell.lat <= 90 and -180 <= cell.lon < 180


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(90.0001, 0), (-90.5, 0), (0, 180.01), (0, -181), (math.nan, 0), (0, math.inf), (-math.inf, 0)],
)
def test_invalid_points_are_refused(lat: float, lon: float) -> None:
    with pytest.raises(InvalidCoordinates):
        Grid(0.1).cell(lat, lon)


def test_non_numbers_are_refused() -> None:
    with pytest.raises(InvalidCoordinates):
        Grid(0.1).cell("40", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidCoordinates):
        Grid(0.1).cell(True, 1)
