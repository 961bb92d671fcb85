"""Number spellings of the Open-Meteo server (Swift): Float32 shortest form and fixed decimals."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

_FLOAT32 = struct.Struct("<f")
_FLOAT32_MAX = 3.4028234663852886e38
# Swift prints a Float in plain notation inside this range and as `1e+20` outside it.
_PLAIN_MIN = 1e-4
_PLAIN_MAX = float(1 << 24)


def to_float32(value: float) -> float:
    """`value` rounded to the nearest Float32, as a Python float."""
    if math.isnan(value):
        return value
    if abs(value) > _FLOAT32_MAX:
        return math.copysign(math.inf, value)
    single: float = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    return single


def float32_text(value: float) -> str:
    """Shortest text that reads back as the same Float32, spelled like Swift: `13.419998`, `38.0`."""
    single = to_float32(value)
    if math.isnan(single):
        return "nan"
    if math.isinf(single):
        return "inf" if single > 0 else "-inf"
    if single == 0:
        return "-0.0" if math.copysign(1.0, single) < 0 else "0.0"
    for precision in range(1, 10):
        shortest = f"{single:.{precision}g}"
        if to_float32(float(shortest)) == single:
            break
    if _PLAIN_MIN <= abs(single) < _PLAIN_MAX:
        plain = format(Decimal(shortest), "f")
        return plain if "." in plain else plain + ".0"
    negative, digits, exponent = Decimal(shortest).normalize().as_tuple()
    assert isinstance(exponent, int)  # a finite number: not 'n', 'N' or 'F'
    text = "".join(map(str, digits))
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    power = exponent + len(text) - 1
    sign = "-" if power < 0 else "+"
    return f"{'-' if negative else ''}{mantissa}e{sign}{abs(power):02d}"


def fixed_text(value: float | None, decimals: int) -> str:
    """A value with a unit-driven number of decimals (`0.00`, `1018.4`, `46`); NaN/None is `null`."""
    if value is None or not math.isfinite(value):
        return "null"
    if decimals == 0:
        return str(round(value))
    # `+ 0.0` turns a rounded -0.0 into 0.0, so no `-0.0` is ever printed.
    return f"{round(value, decimals) + 0.0:.{decimals}f}"
