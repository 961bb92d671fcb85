"""Which cache entries a field's selection needs, so a query reads only those."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from weathernote.model.entries import Part

# Forecast fields that any read part can answer (they describe the part read).
_FORECAST_METADATA = frozenset({"timezone", "cached", "stale", "fetchedAt"})


def selected_names(selections: Iterable[Any]) -> Iterator[str]:
    """Field names selected directly on this level, fragments flattened, @skip/@include applied."""
    for selection in selections:
        if not _included(selection.directives):
            continue
        if isinstance(selection, SelectedField):
            yield selection.name
        elif isinstance(selection, (FragmentSpread, InlineFragment)):
            yield from selected_names(selection.selections)


def forecast_parts(selections: Iterable[Any]) -> frozenset[Part]:
    return forecast_parts_for(set(selected_names(selections)))


def forecast_parts_for(names: set[str]) -> frozenset[Part]:
    """The parts a forecast selection of these field names needs."""
    parts = set()
    if "daily" in names:
        parts.add(Part.DAILY)
    if "hourly" in names:
        parts.add(Part.HOURLY)
    if not parts and names & _FORECAST_METADATA:
        parts.add(Part.DAILY)
    return frozenset(parts)


def _included(directives: dict[str, dict[str, Any]]) -> bool:
    if directives.get("skip", {}).get("if") is True:
        return False
    return directives.get("include", {}).get("if", True) is not False
