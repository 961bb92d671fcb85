"""The pseudo model grid: where a requested point is snapped to, and the terrain height there.

The grid has 0.02° cells anchored like DWD ICON-D2 (43.18°N, 3.94°W) and is
computed in Float32 arithmetic as the real server does, so Berlin's 13.41°E
comes back as 13.419998 and Paris' 2.3488°E as 2.3399997, as in real captures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from weathernote.simulator.forecast.noise import value_noise
from weathernote.simulator.forecast.numbers import to_float32

STEP = 0.02
_LAT_ORIGIN = 43.18
_LON_ORIGIN = -3.94
_CELLS_AROUND = round(360 / STEP)
_TERRAIN_KEY = 0x7E44A1


@dataclass(frozen=True, slots=True)
class GridCell:
    """One grid cell: integer indexes (stable identity) and its Float32 centre."""

    lat_index: int
    lon_index: int
    latitude: float
    longitude: float


def snap(latitude: float, longitude: float) -> GridCell:
    """The cell whose centre is nearest to the point (ties go north/east)."""
    lat_index = math.floor((latitude - _LAT_ORIGIN) / STEP + 0.5)
    lon_index = math.floor((longitude - _LON_ORIGIN) / STEP + 0.5)
    centre_lat = _grid_value(_LAT_ORIGIN, lat_index)
    centre_lat = max(-90.0, min(90.0, centre_lat))
    return GridCell(
        lat_index=lat_index,
        lon_index=lon_index % _CELLS_AROUND,
        latitude=centre_lat,
        longitude=_grid_value(_LON_ORIGIN, lon_index),
    )


def terrain_height(latitude: float, longitude: float) -> float:
    """A made-up digital elevation model in whole metres: mostly lowland, some mountain ranges."""
    ranges = value_noise((_TERRAIN_KEY, 1), longitude / 4.0, latitude / 4.0, 90)
    hills = value_noise((_TERRAIN_KEY, 2), longitude / 0.5, latitude / 0.5, 720)
    height = 2600.0 * max(0.0, ranges - 0.45) ** 1.3 + 220.0 * hills
    return float(round(height))


def _grid_value(origin: float, index: int) -> float:
    return to_float32(to_float32(origin) + to_float32(to_float32(float(index)) * to_float32(STEP)))
