"""Deterministic pseudo-randomness: an integer hash and smooth 2-D value noise built on it."""

from __future__ import annotations

import math

_MASK = (1 << 64) - 1
_UNIT = 2.0**-53


def hash01(*keys: int) -> float:
    """A uniform number in [0, 1) that depends only on `keys` (splitmix64 mixing)."""
    state = 0x9E3779B97F4A7C15
    for key in keys:
        state = (state + (key & _MASK) + 0x9E3779B97F4A7C15) & _MASK
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK
        state ^= state >> 31
    return (state >> 11) * _UNIT


def smoothstep(fraction: float) -> float:
    return fraction * fraction * (3.0 - 2.0 * fraction)


def value_noise(keys: tuple[int, ...], x: float, y: float, wrap_x: int) -> float:
    """Smooth noise in [0, 1] on an integer lattice; x wraps every `wrap_x` cells (longitude)."""
    ix = math.floor(x)
    iy = math.floor(y)
    fx = smoothstep(x - ix)
    fy = smoothstep(y - iy)
    x0 = ix % wrap_x
    x1 = (ix + 1) % wrap_x
    v00 = hash01(*keys, iy, x0)
    v01 = hash01(*keys, iy, x1)
    v10 = hash01(*keys, iy + 1, x0)
    v11 = hash01(*keys, iy + 1, x1)
    bottom = v00 + (v01 - v00) * fx
    top = v10 + (v11 - v10) * fx
    return bottom + (top - bottom) * fy
