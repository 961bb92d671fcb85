"""What a pre-warm cycle is worth spending on: distinct watchers count, within their share of the kept set."""

from __future__ import annotations

from weathernote.demand import Shape
from weathernote.model import Cell, Grid, Part
from weathernote.prewarm.ranking import Candidate, keep, rank

GRID = Grid(0.1)
POPULAR = [(Part.CURRENT, GRID.cell(48.9, round(2.0 + index / 10, 1)), 100.0 - index) for index in range(50)]


def ranked(watchers: dict[tuple[Part, Cell], int]) -> list[Candidate]:
    return rank(
        watchers=watchers,
        popular=POPULAR,
        cities=[],
        shape=Shape(),
        at=0.0,
        ahead=900,
        period=900,
        decay=0.8,
        limit=2000,
    )


def test_a_cell_is_worth_its_distinct_watchers_not_a_fixed_trump() -> None:
    junk = {(Part.CURRENT, GRID.cell(-60.0 + index // 1000, (index % 1000) / 10)): 1 for index in range(2000)}
    order = ranked(junk)
    # one watcher each: worth a request a period (5 decayed requests), less than the popular cells
    assert [c.cell for c in order[:50]] == [cell for _, cell, _ in POPULAR]
    crowd = {(Part.CURRENT, GRID.cell(-60.0, 0.0)): 100}
    assert ranked(crowd)[0].cell == GRID.cell(-60.0, 0.0), "a hundred watchers outrank any request count here"


def test_watched_cells_take_at_most_their_share_of_the_kept_set() -> None:
    crowded = {(Part.CURRENT, GRID.cell(-60.0, float(index) / 10)): 1000 for index in range(40)}
    order, kept = keep(ranked(crowded), room=20, watched_share=0.5)
    assert kept == 20
    watched_kept = [c for c in order[:kept] if c.watched > 0]
    assert len(watched_kept) == 10, "half of the kept set at most"
    assert {c.cell for c in order[:kept]} >= {cell for _, cell, _ in POPULAR[:10]}, "the most requested keep the rest"
    everything, kept = keep(ranked(crowded), room=20, watched_share=1.0)
    assert kept == 20 and all(c.watched > 0 for c in everything[:kept]), "with a share of 1, watchers may take it all"
