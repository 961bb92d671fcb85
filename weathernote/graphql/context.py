"""What a resolver may use: the weather service and the grid, nothing of Redis or HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weathernote.cells import Cell, Grid, InvalidCoordinates
from weathernote.entries import FORECAST_DAYS
from weathernote.graphql.errors import bad_user_input
from weathernote.service import WeatherService


@dataclass(slots=True)
class Context:
    service: WeatherService
    grid: Grid
    request: Any = None  # the Starlette Request or WebSocket, for transports that need it

    def cell(self, lat: float, lon: float) -> Cell:
        try:
            return self.grid.cell(lat, lon)
        except InvalidCoordinates as exc:
            raise bad_user_input(str(exc)) from None


def check_days(days: int) -> None:
    if not 1 <= days <= FORECAST_DAYS:
        raise bad_user_input(f"days must be between 1 and {FORECAST_DAYS}, got {days}")
