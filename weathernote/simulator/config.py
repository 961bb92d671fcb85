"""The simulator's knobs. One mutable instance is shared by every request, so changes apply at once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from weathernote.simulator.faults.corruption import CORRUPTIONS


@dataclass
class SimulatorConfig:
    """The simulator's knobs (latency, faults, limits, clock), shared and changeable at run time."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    forced_status: int | None = None
    rate_limit_per_minute: float = 600.0
    rate_limit_per_hour: float = 5000.0
    rate_limit_per_day: float = 10000.0
    max_concurrent: int = 5
    clock_speed: float = 1.0
    seed: int = 0
    corrupt: str | None = None
    corrupt_location: int | None = None
    body_padding_bytes: int = 0
    trickle_bytes_per_second: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, overrides: dict[str, Any]) -> None:
        """Apply a partial set of knobs; nothing changes unless every one of them is valid."""
        known = {field.name for field in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in known:
                raise ValueError(f"Unknown knob '{name}'")
            checked[name] = _checked(name, value)
        for name, value in checked.items():
            setattr(self, name, value)


def _checked(name: str, value: Any) -> Any:
    if name == "forced_status":
        if value is not None and not (_is_int(value) and 400 <= value <= 599):
            raise ValueError("'forced_status' must be null or an HTTP error status 400..599")
        return value
    if name == "seed":
        if not _is_int(value):
            raise ValueError("'seed' must be an integer")
        return value
    if name in ("max_concurrent", "body_padding_bytes"):
        if not (_is_int(value) and value >= 0):
            raise ValueError(f"'{name}' must be a non-negative integer")
        return value
    if name == "corrupt_location":
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError("'corrupt_location' must be null or a location's index (0, 1, …)")
        return value
    if name == "corrupt":
        if value is not None and value not in CORRUPTIONS:
            raise ValueError(f"'corrupt' must be null or one of {', '.join(CORRUPTIONS)}")
        return value
    if not (_is_number(value) and value >= 0):
        raise ValueError(f"'{name}' must be a non-negative number")
    if name == "error_rate" and value > 1:
        raise ValueError("'error_rate' must be within 0..1")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
