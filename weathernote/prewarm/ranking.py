"""What a pre-warm cycle is worth spending on: candidates ranked by the demand they will serve.

Pure functions of what the cycle read. A requested (part, cell)'s value is the
demand it expects over the period a refresh serves: its decayed request count
times the daily rhythm's outlook at the cell's longitude (a cell whose morning
starts outranks one with the same count whose night begins). A watched cell
adds what its distinct watchers are worth (each sees every refresh, as a
client reading once a period would), and watched cells take at most a share
of what a period keeps, so subscriptions cannot claim the budget every user
shares. The 100 most populous cities come last, as a prior for cold starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from weathernote.demand import Shape
from weathernote.model import Cell, Part
from weathernote.upstream import request_weight

# A city nobody asked for yet ranks below any cell someone asked for: a prior,
# spent only from what the cycle's allowance leaves over.
CITY_VALUE = 0.01


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (part, cell) the cycle may refresh, and what a refresh of it is worth."""

    part: Part
    cell: Cell
    requested: float = 0.0  # expected requests over the period a refresh serves
    watched: float = 0.0  # what its distinct watchers are worth

    @property
    def value(self) -> float:
        return self.requested + self.watched


def rank(
    *,
    watchers: Mapping[tuple[Part, Cell], int],
    popular: Sequence[tuple[Part, Cell, float]],
    cities: Sequence[Cell],
    shape: Shape,
    at: float,
    ahead: float,
    period: float,
    decay: float,
    limit: int,
) -> list[Candidate]:
    """The `limit` most valuable candidates for the period starting at `at`, each (part, cell) once."""
    # a distinct watcher is worth a request every period: its decayed count at steady state
    watcher_value = 1 / (1 - decay) if 0 < decay < 1 else 1.0
    requested: dict[tuple[Part, str], float] = {}
    watched: dict[tuple[Part, str], float] = {}
    cells: dict[str, Cell] = {}
    outlooks: dict[float, float] = {}  # per half degree of longitude (two minutes of solar time)

    def outlook(cell: Cell) -> float:
        meridian = round(cell.lon * 2) / 2
        if meridian not in outlooks:
            outlooks[meridian] = shape.outlook(meridian, at, ahead, period, decay)
        return outlooks[meridian]

    for (part, cell), count in watchers.items():
        cells[cell.label] = cell
        watched[(part, cell.label)] = count * watcher_value * outlook(cell)
    for part, cell, score in popular:
        cells[cell.label] = cell
        requested[(part, cell.label)] = requested.get((part, cell.label), 0.0) + score * outlook(cell)
    for index, cell in enumerate(cities):
        cells[cell.label] = cell
        key = (Part.CURRENT, cell.label)
        requested[key] = requested.get(key, 0.0) + CITY_VALUE / (1 + index / 100)
    candidates = [
        Candidate(part, cells[label], requested.get((part, label), 0.0), watched.get((part, label), 0.0))
        for part, label in requested.keys() | watched.keys()
    ]
    candidates.sort(key=lambda candidate: (-candidate.value, candidate.part.value, candidate.cell.label))
    return candidates[:limit]


def fitting(candidates: Sequence[Candidate], room: float) -> int:
    """How many of the candidates (their head) `room` weighted calls cover."""
    count = 0
    for candidate in candidates:
        room -= request_weight(1, [candidate.part])
        if room < -1e-9:  # weights are tenths: forgive the float rounding
            break
        count += 1
    return count


def keep(candidates: Sequence[Candidate], room: float, watched_share: float) -> tuple[list[Candidate], int]:
    """The candidates in this period's order, and how many of them (the head) `room` keeps fresh.

    Watched cells take at most `watched_share` of the kept ones: past it, a watched
    cell competes with its requests alone, and one nobody asked for is worth nothing
    (left out, however much room is left).
    """
    cap = _share(watched_share, fitting(candidates, room))
    while True:
        ordered = _capped(candidates, cap)
        kept = fitting(ordered, room)
        allowed = _share(watched_share, kept)
        if sum(1 for candidate in ordered[:kept] if candidate.watched > 0) <= allowed or allowed >= cap:
            return ordered, kept
        cap = allowed  # fewer kept than the first guess: the share of what is kept, again


def _share(share: float, kept: int) -> int:
    """How many of `kept` watched cells may be: the share, rounded down, one at least (when any)."""
    return max(1 if share > 0 else 0, math.floor(share * kept + 1e-9))


def _capped(candidates: Sequence[Candidate], cap: int) -> list[Candidate]:
    """The candidates with only the `cap` most valuable watched ones worth their watchers, by value."""
    ordered: list[Candidate] = []
    taken = 0
    for candidate in candidates:
        if candidate.watched > 0:
            if taken >= cap:
                candidate = replace(candidate, watched=0.0)
            else:
                taken += 1
        if candidate.value > 0:
            ordered.append(candidate)
    ordered.sort(key=lambda candidate: -candidate.value)  # stable: ties keep their rank
    return ordered
