"""Fast in-process tests of the pieces whose logic is subtle.

Beside the black-box tests (real servers over real HTTP), these exercise one
piece at a time: the breaker's states, the wire form of entries and how
strictly it is read back, key spelling per topology, the gateway's error
mapping, and the hub's latest-wins slots. No mocks: a clock is a function;
no process is started (the gateway against a real Redis and the budget's
windows are in tests/service/test_units_redis.py).
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis

from weathernote.breaker import CircuitBreaker, State
from weathernote.errors import RedisKeyError, RedisUnavailable, UndecodableEntry
from weathernote.live import Subscriber
from weathernote.model import Current, Daily, Entry, Grid, Part
from weathernote.redis import RedisGateway, classify
from weathernote.redis.keys import CLUSTER_SPELLING, SEED_SPELLING

CELL = Grid(0.1).cell(40.7128, -74.006)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_the_threshold_probes_once_and_closes_on_success() -> None:
    clock = ManualClock()
    changes: list[State] = []
    breaker = CircuitBreaker(
        "redis", failures=3, reset_seconds=5, clock=clock, on_change=lambda _, s: changes.append(s)
    )
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # no second probe at once
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert changes == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_an_abandoned_probe_frees_the_half_open_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("redis", failures=1, reset_seconds=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


def _current(**overrides: object) -> Current:
    values: dict[str, object] = {
        "time": "2026-12-01T10:00+01:00",
        "temperature": 3.5,
        "apparent_temperature": 1.0,
        "humidity": 80,
        "precipitation": 0.0,
        "weather_code": 3,
        "cloud_cover": 90,
        "pressure": 1012.0,
        "wind_speed": 10.0,
        "wind_direction": 200,
        "wind_gusts": 20.0,
        "is_day": True,
    }
    values.update(overrides)
    return Current(**values)  # type: ignore[arg-type]


def test_an_entry_round_trips_through_its_wire_form() -> None:
    entry = Entry.from_model(Part.CURRENT, CELL, _current(), 1, 2, 3)
    raw = entry.encode()
    assert raw.startswith(b"wn2 2 1 3\n")
    decoded = Entry.decode(Part.CURRENT, CELL, raw)
    assert decoded.model == entry.model and decoded.fetched_at_ms == 1


def test_a_reader_ignores_fields_it_does_not_know() -> None:
    payload = {**orjson.loads(orjson.dumps(_current())), "feels_like_index": 4}
    decoded = Entry.decode(Part.CURRENT, CELL, b"wn2 2 1 3\n" + orjson.dumps(payload))
    assert decoded.model == _current()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00garbage",
        b"2 1 3\n{}",  # the format before versions
        b"wn3 2 1 3\n{}",  # a newer format
        b"wn2 2 one 3\n{}",
        b"wn2 2 1 3\nnot json",
        b"wn2 2 1 3\n[]",
        b'wn2 2 1 3\n{"time": "2026-12-01T10:00"}',  # fields missing
        b"wn2 2 1 3\n" + orjson.dumps({**orjson.loads(orjson.dumps(_current())), "time": "not a time"}),
        b"wn2 2 1 3\n" + orjson.dumps({**orjson.loads(orjson.dumps(_current())), "temperature": "warm"}),
        b"wn2 2 1 3\n" + orjson.dumps({**orjson.loads(orjson.dumps(_current())), "weather_code": 2.5}),
        b"wn2 2 1 3\n" + orjson.dumps({**orjson.loads(orjson.dumps(_current())), "is_day": 1}),
    ],
)
def test_anything_else_is_undecodable(raw: bytes) -> None:
    with pytest.raises(UndecodableEntry):
        Entry.decode(Part.CURRENT, CELL, raw)


def _daily(**overrides: object) -> dict[str, object]:
    days = 2
    values: dict[str, object] = {
        "timezone": "Europe/Paris",
        "utc_offset_seconds": 3600,
        "date": ["2026-12-01", "2026-12-02"],
        "temperature_max": [5.0] * days,
        "temperature_min": [1.0] * days,
        "precipitation_sum": [0.0] * days,
        "precipitation_probability_max": [10] * days,
        "weather_code": [3] * days,
        "sunrise": ["2026-12-01T08:30+01:00", None],
        "sunset": ["2026-12-01T17:00+01:00", None],
        "wind_speed_max": [20.0] * days,
        "uv_index_max": [1.0] * days,
    }
    values.update(overrides)
    return values


def test_forecast_columns_are_checked_for_dates_and_lengths() -> None:
    good = b"wn2 2 1 3\n" + orjson.dumps(_daily())
    assert isinstance(Entry.decode(Part.DAILY, CELL, good).model, Daily)
    for bad in (_daily(date=["not-a-date", "2026-12-02"]), _daily(temperature_max=[5.0]), _daily(sunrise="x")):
        with pytest.raises(UndecodableEntry):
            Entry.decode(Part.DAILY, CELL, b"wn2 2 1 3\n" + orjson.dumps(bad))


def test_keys_keep_the_seed_spelling_on_one_server_and_share_a_slot_on_a_cluster() -> None:
    assert SEED_SPELLING.entry(Part.CURRENT, CELL) == "weather:lat:40.7:lon:-74.0"
    keys = CLUSTER_SPELLING
    spelled = [
        keys.entry(Part.CURRENT, CELL),
        keys.entry(Part.DAILY, CELL),
        keys.entry(Part.HOURLY, CELL),
        keys.stale(Part.HOURLY, CELL),
        keys.refresh_lock(Part.CURRENT, CELL),
        keys.update_channel(Part.DAILY, CELL),
    ]
    assert spelled[0] == "weather:{lat:40.7:lon:-74.0}"
    assert len({redis.crc.key_slot(key.encode()) for key in spelled}) == 1


def test_errors_about_a_key_are_the_keys_and_the_rest_are_the_servers() -> None:
    assert isinstance(
        classify(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")), RedisKeyError
    )
    assert isinstance(classify(redis.ResponseError("ERR value is not a valid float")), RedisKeyError)
    assert isinstance(classify(redis.ConnectionError("refused")), RedisUnavailable)
    assert isinstance(classify(redis.TimeoutError()), RedisUnavailable)
    assert isinstance(classify(redis.ResponseError("LOADING Redis is loading the dataset")), RedisUnavailable)
    assert isinstance(classify(redis.exceptions.ReadOnlyError("READONLY You can't write")), RedisUnavailable)
    assert isinstance(classify(redis.exceptions.ClusterDownError("CLUSTERDOWN")), RedisUnavailable)
    # a Cluster node talked to as a single server (it was down when the instance started)
    assert isinstance(classify(redis.exceptions.MovedError("3999 127.0.0.1:6381")), RedisUnavailable)
    assert isinstance(classify(redis.ResponseError("MOVED 3999 127.0.0.1:6381")), RedisUnavailable)


async def test_a_dead_server_opens_the_breaker_and_then_nobody_waits() -> None:
    dead = RedisGateway("redis://127.0.0.1:1/0", timeout=0.2, breaker=CircuitBreaker("redis", failures=2))
    await dead.connect()
    assert not dead.topology_known and not await dead.ping()  # not ready: nothing is guessed
    dead.breaker.success()
    for _ in range(2):
        with pytest.raises(RedisUnavailable):
            await dead.get_many(["a"])
    assert dead.breaker.state is State.OPEN
    with pytest.raises(RedisUnavailable, match="breaker open"):
        await dead.get_many(["a"])
    await dead.aclose()


async def test_a_subscriber_keeps_only_the_latest_message() -> None:
    first, second = Subscriber("a"), Subscriber("b")
    first.offer(1)
    first.offer(2)
    second.offer(3)
    await asyncio.wait_for(first.wakeup.wait(), 1)
    assert (first.take(), second.take()) == (2, 3)
    assert first.take() is None
    waiting = asyncio.ensure_future(first.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    first.offer(4)
    assert await asyncio.wait_for(waiting, 1) == 4
