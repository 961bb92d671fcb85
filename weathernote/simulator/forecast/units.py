"""Units: the label the server prints, its fixed number of decimals, and conversion from our base units."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from weathernote.simulator.forecast.numbers import fixed_text


class Kind(enum.Enum):
    """What a variable measures; the query's unit parameters pick the printed unit."""

    TEMPERATURE = enum.auto()
    WIND_SPEED = enum.auto()
    PRECIPITATION = enum.auto()  # mm, or inch
    SNOWFALL = enum.auto()  # cm, or inch
    LENGTH = enum.auto()  # m, or ft with precipitation_unit=inch
    PERCENT = enum.auto()
    DEGREE = enum.auto()
    WMO_CODE = enum.auto()
    FLAG = enum.auto()  # is_day
    INDEX = enum.auto()  # uv_index
    PRESSURE = enum.auto()
    SECONDS = enum.auto()
    HOURS = enum.auto()
    RADIATION = enum.auto()
    RADIATION_SUM = enum.auto()
    ENERGY = enum.auto()
    VAPOUR_PRESSURE = enum.auto()
    SOIL_MOISTURE = enum.auto()
    TIME = enum.auto()  # sunrise/sunset: printed as times, not numbers


@dataclass(frozen=True, slots=True)
class UnitFormat:
    """How one unit prints: its label and decimals."""

    label: str
    decimals: int
    factor: float = 1.0
    offset: float = 0.0

    def text(self, value: float | None) -> str:
        return fixed_text(None if value is None else value * self.factor + self.offset, self.decimals)


TEMPERATURE_UNITS = {"celsius": UnitFormat("°C", 1), "fahrenheit": UnitFormat("°F", 1, 1.8, 32.0)}
WIND_SPEED_UNITS = {
    "kmh": UnitFormat("km/h", 1),
    "ms": UnitFormat("m/s", 2, 1 / 3.6),
    "mph": UnitFormat("mp/h", 1, 1 / 1.609344),
    "kn": UnitFormat("kn", 1, 1 / 1.852),
}
PRECIPITATION_UNITS = ("mm", "inch")
_METRIC_LENGTHS = {
    Kind.PRECIPITATION: UnitFormat("mm", 2),
    Kind.SNOWFALL: UnitFormat("cm", 2),
    Kind.LENGTH: UnitFormat("m", 2),
}
_IMPERIAL_LENGTHS = {
    Kind.PRECIPITATION: UnitFormat("inch", 3, 1 / 25.4),
    Kind.SNOWFALL: UnitFormat("inch", 3, 1 / 2.54),
    Kind.LENGTH: UnitFormat("ft", 3, 1 / 0.3048),
}
_FIXED = {
    Kind.PERCENT: UnitFormat("%", 0),
    Kind.DEGREE: UnitFormat("°", 0),
    Kind.WMO_CODE: UnitFormat("wmo code", 0),
    Kind.FLAG: UnitFormat("", 0),
    Kind.INDEX: UnitFormat("", 2),
    Kind.PRESSURE: UnitFormat("hPa", 1),
    Kind.SECONDS: UnitFormat("s", 2),
    Kind.HOURS: UnitFormat("h", 1),
    Kind.RADIATION: UnitFormat("W/m²", 1),
    Kind.RADIATION_SUM: UnitFormat("MJ/m²", 2),
    Kind.ENERGY: UnitFormat("J/kg", 1),
    Kind.VAPOUR_PRESSURE: UnitFormat("kPa", 2),
    Kind.SOIL_MOISTURE: UnitFormat("m³/m³", 3),
}


@dataclass(frozen=True, slots=True)
class UnitChoice:
    """The unit parameters of one query (already validated)."""

    temperature: str = "celsius"
    wind_speed: str = "kmh"
    precipitation: str = "mm"

    def format(self, kind: Kind) -> UnitFormat:
        if kind is Kind.TEMPERATURE:
            return TEMPERATURE_UNITS[self.temperature]
        if kind is Kind.WIND_SPEED:
            return WIND_SPEED_UNITS[self.wind_speed]
        if kind in _METRIC_LENGTHS:
            return (_IMPERIAL_LENGTHS if self.precipitation == "inch" else _METRIC_LENGTHS)[kind]
        return _FIXED[kind]
