"""What a pre-warm cycle refreshes, renews and how it batches: pure functions of what it read.

Current values are due once they fall out of the freshness target (with the
default, as soon as the upstream has a newer step); forecasts once a newer
model run can have landed. Entries that would lapse before the next cycle yet
cannot have changed are renewed without an upstream call. What is due goes in
multi-location batches by part set, most valuable first, as far as the
period's allowance reaches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from weathernote.model import Cell, Entry, Part
from weathernote.prewarm.ranking import Candidate
from weathernote.upstream import STEP_SECONDS, request_weight
from weathernote.upstream.pace import newer_data_from_ms, observed_step_ms

Batch = tuple[list[Part], list[Cell]]


@dataclass(frozen=True, slots=True)
class Due:
    """What to fetch, in value order, and the kept cells' current values that could be refreshed early."""

    now: list[tuple[Part, Cell]]
    early: list[tuple[Part, Cell]]  # oldest first


def due(
    candidates: Sequence[Candidate], entries: Sequence[Entry | None], kept: int, now_ms: int, target_ms: int
) -> Due:
    """Candidates to fetch, and the kept ones (the first `kept`) that are not due yet but not of this step."""
    step_start = now_ms // (STEP_SECONDS * 1000) * STEP_SECONDS * 1000
    fetch: list[tuple[Part, Cell]] = []
    early: list[tuple[int, int, Part, Cell]] = []  # (observed step, value rank, ...)
    for rank, (candidate, entry) in enumerate(zip(candidates, entries)):
        part, cell = candidate.part, candidate.cell
        if entry is None:
            fetch.append((part, cell))
        elif part is Part.CURRENT:
            observed = observed_step_ms(entry.next_update_ms)
            if observed + target_ms <= step_start:
                fetch.append((part, cell))
            elif rank < kept and observed < step_start:
                early.append((observed, rank, part, cell))
        elif newer_data_from_ms(entry.next_update_ms) <= now_ms:
            fetch.append((part, cell))
    return Due(fetch, [(part, cell) for _, _, part, cell in sorted(early, key=lambda item: item[:2])])


def spread(due: Due, kept: int, target_steps: int) -> list[tuple[Part, Cell]]:
    """What this cycle fetches: the due ones, and with a target of several steps enough of the
    oldest kept ones early that refreshes spread over the target.

    After a cold start the kept cells were all fetched in the same hour and would fall due
    together, more than one cycle affords: a cycle with fewer due than an even share of the
    kept set refreshes the oldest early.
    """
    if target_steps <= 1:
        return list(due.now)
    current = sum(1 for part, _ in due.now if part is Part.CURRENT)
    return [*due.now, *due.early[: max(0, math.ceil(kept / target_steps) - current)]]


def to_renew(entries: Iterable[Entry | None], now_ms: int, interval_ms: int) -> list[Entry]:
    """Entries that would lapse before the next cycle, yet cannot have changed."""
    horizon = now_ms + interval_ms
    return [
        entry
        for entry in entries
        if entry is not None and newer_data_from_ms(entry.next_update_ms) > now_ms and entry.fresh_until_ms < horizon
    ]


def batches(fetch: Sequence[tuple[Part, Cell]], batch_size: int) -> Iterable[Batch]:
    """Multi-location batches by part set, most valuable cells first.

    A cell due for both forecast parts fetches them together (cheaper than apart).
    """
    by_cell: dict[str, set[Part]] = {}
    order: list[Cell] = []
    for part, cell in fetch:
        if cell.label not in by_cell:
            by_cell[cell.label] = set()
            order.append(cell)
        by_cell[cell.label].add(part)
    groups: dict[tuple[Part, ...], list[Cell]] = {}
    for cell in order:
        parts = by_cell[cell.label]
        if Part.CURRENT in parts:
            groups.setdefault((Part.CURRENT,), []).append(cell)
        forecast_parts = tuple(p for p in (Part.DAILY, Part.HOURLY) if p in parts)
        if forecast_parts:
            groups.setdefault(forecast_parts, []).append(cell)
    for group, cells in groups.items():
        for start in range(0, len(cells), batch_size):
            yield list(group), cells[start : start + batch_size]


def affordable(planned: Iterable[Batch], allowance: float) -> tuple[list[Batch], bool]:
    """The batches (their head, the last one cut short) that `allowance` covers; whether it ran short."""
    chosen: list[Batch] = []
    for parts, cells in planned:
        # the most valuable come first: when the allowance runs short, the tail waits
        count = int(allowance / request_weight(1, parts) + 1e-9)
        if count < len(cells):
            if count:
                chosen.append((parts, cells[:count]))
            return chosen, True
        chosen.append((parts, cells))
        allowance -= request_weight(len(cells), parts)
    return chosen, False


def share_of_day(day_left: float, window_left: float, now: float, interval_ms: int) -> float:
    """This period's allowance: what is left of the day spread evenly over the periods left,
    but never more than the shorter windows have now."""
    periods_left = max(1, math.ceil((86400 - now % 86400) * 1000 / interval_ms))
    return max(0.0, min(day_left / periods_left, window_left))
