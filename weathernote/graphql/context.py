"""What a resolver may use: the weather service and the grid, nothing of Redis or HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import DocumentNode

from weathernote.cache import Reading, WeatherService, read_area
from weathernote.errors import ShareSpent, UpstreamError, UpstreamUnavailable
from weathernote.graphql.errors import bad_user_input, reads_refused, share_spent, upstream_unavailable
from weathernote.live import LiveWeather
from weathernote.model import FORECAST_DAYS, Cell, Grid, InvalidCoordinates, Part
from weathernote.ops import requestlog
from weathernote.upstream import Payer

Prefetched = dict[tuple[str, frozenset[Part]], "Mapping[Part, Reading] | UpstreamError"]
# admission of reads beyond what the transport charged: 0 to go on, else the seconds to wait
Charge = Callable[[int], Awaitable[int]]
ANONYMOUS = Payer("", "")


@dataclass(slots=True)
class Context:
    """What one operation's resolvers may use, built by its transport."""

    service: WeatherService
    grid: Grid
    live: LiveWeather | None = None  # present on transports that serve subscriptions
    request: Any = None  # the Starlette Request or WebSocket, for transports that need it
    # who asks (hashed): pays its share of the budget for misses; a subscription registers it as watching its cell
    payer: Payer = ANONYMOUS
    # reads the transport already made for this operation (see graphql.documents.plans)
    prefetched: Prefetched = field(default_factory=dict)
    # the operation's document as the Planner passed it (Planner.checked): the only one Strawberry runs
    document: DocumentNode | None = None
    # the most cells a box may hold (currentArea, weatherUpdatesInArea)
    area_max_cells: int = 100
    # admission of what an area reads beyond the one read its transport charged (None: not charged)
    charge: Charge | None = None

    def cell(self, lat: float, lon: float) -> Cell:
        try:
            return self.grid.cell(lat, lon)
        except InvalidCoordinates as exc:
            raise bad_user_input(str(exc)) from None

    async def read(self, cell: Cell, parts: frozenset[Part]) -> Mapping[Part, Reading]:
        if not parts:
            return {}
        found = self.prefetched.get((cell.label, parts))
        try:
            if isinstance(found, UpstreamError):
                raise found
            return found if found is not None else await self.service.read(cell, parts, payer=self.payer)
        except ShareSpent as exc:
            raise share_spent(exc.retry_after) from None
        except UpstreamUnavailable:
            raise upstream_unavailable() from None

    async def area(self, field: str, south: float, west: float, north: float, east: float) -> list[Cell]:
        """The box's cells, admitted: charged one read each (the transport charged the field one)."""
        requestlog.note(operation=field)  # the ordinary path's label would be "other"
        try:
            cells = self.grid.cells_in(south, west, north, east, max_cells=self.area_max_cells)
        except InvalidCoordinates as exc:
            raise bad_user_input(str(exc)) from None
        if self.charge is not None and len(cells) > 1:
            retry_after = await self.charge(len(cells) - 1)
            if retry_after:
                raise reads_refused(len(cells), retry_after)
        return cells

    async def read_area(self, cells: Sequence[Cell]) -> list[Reading | UpstreamError]:
        """Each cell's current weather, or its failure: hits in one round trip, misses in one upstream request."""
        return await read_area(self.service, cells, self.payer)

    async def area_updates(self, cells: Sequence[Cell]) -> AsyncIterator[tuple[Cell, Reading | UpstreamError]]:
        """Each cell's reading (or failure) now, then each cell's every refresh."""
        assert self.live is not None, "subscriptions need a live transport"
        async with self.live.area_updates(cells, self.payer) as updates:
            async for update in updates:
                yield update

    async def updates(self, cell: Cell, parts: frozenset[Part]) -> AsyncIterator[Mapping[Part, Reading]]:
        """The cell's readings now, then after every refresh."""
        assert self.live is not None, "subscriptions need a live transport"
        async with self.live.updates(cell, parts, self.payer) as updates:
            try:
                async for readings in updates:
                    yield readings
            except ShareSpent as exc:
                raise share_spent(exc.retry_after) from None
            except UpstreamUnavailable:
                raise upstream_unavailable() from None


def check_days(days: int) -> None:
    if not 1 <= days <= FORECAST_DAYS:
        raise bad_user_input(f"days must be between 1 and {FORECAST_DAYS}, got {days}")
