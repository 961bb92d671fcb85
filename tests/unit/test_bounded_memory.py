"""What a process keeps in memory is bounded in bytes, however many cells, clients or documents arrive,
and whether or not Redis takes what it counts."""

from __future__ import annotations

import asyncio

from weathernote.breaker import CircuitBreaker
from weathernote.cache import EntryMemo
from weathernote.clock import Clock
from weathernote.demand import RequestedCells, Usage
from weathernote.model import Entry, Grid, Hourly, Part
from weathernote.redis import RedisGateway

GRID = Grid(0.1)


def hourly_entry(index: int) -> Entry:
    hours = 384
    model = Hourly(
        timezone="GMT",
        utc_offset_seconds=0,
        time=[f"2026-12-{1 + hour // 24:02d}T{hour % 24:02d}:00" for hour in range(hours)],
        temperature=[1.5] * hours,
        precipitation_probability=[10.0] * hours,
        weather_code=[3] * hours,
        wind_speed=[12.25] * hours,
    )
    cell = GRID.cell(-60 + index // 3600 / 10, -180 + index % 3600 / 10)
    return Entry.from_model(Part.HOURLY, cell, model, 1, 2, 3)


def test_decoded_entries_are_bounded_in_bytes_not_by_count() -> None:
    budget = 4 * 1024 * 1024
    memo = EntryMemo(budget)
    for index in range(2_000):  # 16-day hourly entries: tens of KB each, decoded
        memo.remember(hourly_entry(index))
    held = memo._recent
    assert held.bytes <= budget
    assert 10 < len(held) < 2_000, "some kept, most evicted: bytes decided, not a count of 8,192"
    assert memo.latest(Part.HOURLY, hourly_entry(1_999).cell) is not None, "the latest stays"


def test_counts_waiting_for_an_unreachable_redis_stay_bounded() -> None:
    async def flood() -> tuple[int, int]:
        dead = RedisGateway("redis://127.0.0.1:1/0", timeout=0.05, breaker=CircuitBreaker("redis", failures=1))
        usage = Usage(dead, max_clients=1_000)
        requested = RequestedCells(dead, Clock(), GRID, max_pending=500)
        for index in range(20_000):
            usage.request(f"client-{index}")
            requested.read(Part.CURRENT, GRID.cell(-60 + index // 3600 / 10, -180 + index % 3600 / 10))
            if index % 5_000 == 0:
                await usage.flush()  # fails: Redis is unreachable, the figures wait
                await requested.flush()
        await dead.aclose()
        return len(usage._clients), len(requested._pending)

    clients, cells = asyncio.run(flood())
    assert clients == 1_000 and cells == 500


def test_a_version_decoded_once_is_read_again_by_its_header_alone() -> None:
    budget = 1024 * 1024
    memo = EntryMemo(budget)
    raws = [hourly_entry(index).encode() for index in range(200)]
    first = hourly_entry(0)
    for raw, index in zip(raws, range(200), strict=True):
        memo.decode(Part.HOURLY, hourly_entry(index).cell, raw)
    assert memo._recent.get((Part.HOURLY, first.cell.label)) is None, "its decoded model was evicted"

    again = memo.decode(Part.HOURLY, first.cell, raws[0])
    assert again._model is None, "a version decoded whole before is taken by its header"
    assert (again.fetched_at_ms, again.fresh_until_ms, again.next_update_ms) == (1, 2, 3)
    assert again.model == first.model, "and its model decodes when a render needs it"

    # a new version (another header) is checked whole: one that does not decode is a miss
    corrupt = b'%s 9 8 7\n{"timezone": 5}' % first.header.split(b" ")[0]
    assert memo.checked(Part.HOURLY, first.cell, corrupt) is None
    assert memo._decoded_versions.bytes <= budget // 4
