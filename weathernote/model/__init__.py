"""What the service talks about: cells of the grid, cache entries and their parts, units, conditions.

Plain values with no I/O: every other package builds on these.
"""

from weathernote.model.cells import Cell, Grid, InvalidBox, InvalidCoordinates
from weathernote.model.entries import FORECAST_DAYS, Current, Daily, Entry, Hourly, Model, Part
from weathernote.model.units import Units

__all__ = [
    "FORECAST_DAYS",
    "Cell",
    "Current",
    "Daily",
    "Entry",
    "Grid",
    "Hourly",
    "InvalidBox",
    "InvalidCoordinates",
    "Model",
    "Part",
    "Units",
]
