"""What a cell is: validation of a point and its rounding to the grid.

A phone's GPS position is rounded to a cell (0.1 degree by default, about
11 km) so that a whole city shares one cache entry. This module is the only
place that decides which cell a point belongs to and how a cell prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from weathernote.errors import InvalidInput


class InvalidCoordinates(InvalidInput):
    """A latitude or longitude that is not a finite number in range."""


class InvalidBox(InvalidCoordinates):
    """A box whose edges are out of order (or cross the antimeridian), or that holds too many cells."""


@dataclass(frozen=True, slots=True)
class Cell:
    """The centre of one grid cell; `lat`/`lon` are already rounded."""

    lat: float
    lon: float
    label: str  # "lat:40.7:lon:-74.0": the canonical spelling used in keys

    def __str__(self) -> str:
        return self.label


class Grid:
    """Rounds points to cells of `step` degrees."""

    def __init__(self, step: float = 0.1) -> None:
        if not (0 < step <= 1):
            raise ValueError("grid step must be in (0, 1] degrees")
        self.step = step
        # Enough decimals to print every multiple of the step exactly.
        exponent = Decimal(str(step)).normalize().as_tuple().exponent
        self.decimals = max(1, -int(exponent))
        self._quantum = Decimal(1).scaleb(-self.decimals)

    def cell(self, lat: float, lon: float) -> Cell:
        """The cell containing (lat, lon); raises InvalidCoordinates."""
        validate(lat, lon)
        return self._cell(self._snap(lat), self._wrap(self._snap(lon)))

    def parse(self, label: str) -> Cell:
        """The cell a canonical label names ("lat:40.7:lon:-74.0")."""
        _, lat, _, lon = label.split(":")
        return self.cell(float(lat), float(lon))

    def cells_in(self, south: float, west: float, north: float, east: float, *, max_cells: int) -> list[Cell]:
        """Every cell whose centre lies in the box, edges included: south to north, west to east in each row.

        Centres are whole multiples of the step, found in exact decimals (the edges as
        written, so 40.1 is the edge 40.1, not 40.09999…). A box never crosses the
        antimeridian (west <= east; ask for west..180 and -180..east instead); the centres
        at 180 and -180 are one cell. Raises InvalidBox past `max_cells` cells.
        """
        for name, value, bound in (
            ("south", south, 90.0),
            ("north", north, 90.0),
            ("west", west, 180.0),
            ("east", east, 180.0),
        ):
            _check(name, value, bound)
        if south > north:
            raise InvalidBox(f"south must not exceed north, got south {south:g} > north {north:g}")
        if west > east:
            raise InvalidBox(
                f"west must not exceed east, got west {west:g} > east {east:g}: a box does not cross the "
                "antimeridian (ask for west..180 and -180..east)"
            )
        rows = self._indices(south, north)
        columns = self._indices(west, east)
        if len(rows) * (len(columns) - 1) > max_cells:  # too many even if one column is the antimeridian's twin
            raise InvalidBox(self._too_many(len(rows) * len(columns), max_cells))
        cells: dict[str, Cell] = {}
        for row in rows:
            for column in columns:
                cell = self.cell(self._centre(row), self._centre(column))
                cells.setdefault(cell.label, cell)
        if len(cells) > max_cells:
            raise InvalidBox(self._too_many(len(cells), max_cells))
        return list(cells.values())

    def _indices(self, low: float, high: float) -> range:
        """The multiples of the step within [low, high], as whole numbers of steps."""
        step = Decimal(str(self.step))
        return range(math.ceil(Decimal(repr(float(low))) / step), math.floor(Decimal(repr(float(high))) / step) + 1)

    def _centre(self, index: int) -> float:
        return float(index * Decimal(str(self.step)))

    def _too_many(self, count: int, max_cells: int) -> str:
        return f"the box holds {count} cells of {self.step:g} degrees; at most {max_cells} cells may be asked at once"

    def _snap(self, value: float) -> float:
        return round(value / self.step) * self.step

    def _wrap(self, lon: float) -> float:
        # The antimeridian is one line: 180 and -180 name the same cell.
        return -180.0 if lon >= 180.0 - self.step / 2 else lon

    def _cell(self, lat: float, lon: float) -> Cell:
        lat_text = self._format(lat)
        lon_text = self._format(lon)
        return Cell(float(lat_text), float(lon_text), f"lat:{lat_text}:lon:{lon_text}")

    def _format(self, value: float) -> str:
        text = str(Decimal(repr(value)).quantize(self._quantum, rounding=ROUND_HALF_EVEN))
        # "-0.0" and "0.0" are the same cell; keys never carry the sign.
        return text.lstrip("-") if Decimal(text) == 0 else text


def validate(lat: float, lon: float) -> None:
    for name, value, bound in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        _check(name, value, bound)


def _check(name: str, value: float, bound: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidCoordinates(f"{name} must be a number")
    if not math.isfinite(value):
        raise InvalidCoordinates(f"{name} must be a finite number")
    if not -bound <= value <= bound:
        raise InvalidCoordinates(f"{name} must be between -{bound:g} and {bound:g}, got {value:g}")
