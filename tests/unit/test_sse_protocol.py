"""GraphQL over SSE in process: the protocol's framing and the single connection's reservations
(signed tokens, caps per address and per process, the time to live of an unused reservation)."""

from __future__ import annotations

import asyncio

from weathernote.fairuse import Identifier, Identity
from weathernote.http.sse.protocol import complete_event, data_field, next_framing, wants_event_stream
from weathernote.http.sse.reservations import Reservations
from weathernote.http.sse.stream import EventStream

ALICE = Identity(client="alice", address="a")
BOB = Identity(client="bob", address="b")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def reservations(clock: Clock, secret: str = "k" * 32, **caps: int) -> Reservations:
    identifier = Identifier(secret)
    return Reservations(
        lambda value: identifier.hash("sse", value),
        ttl=30,
        max_total=caps.get("max_total", 100),
        max_per_address=caps.get("max_per_address", 2),
        now=clock,
    )


def test_accept_asks_for_an_event_stream() -> None:
    assert wants_event_stream("text/event-stream")
    assert wants_event_stream("application/json, Text/Event-Stream; q=0.5")
    assert not wants_event_stream("text/event-stream;q=0")
    assert not wants_event_stream("application/json")
    assert not wants_event_stream(None)


def test_events_are_framed_per_mode() -> None:
    prefix, suffix = next_framing(None)
    assert prefix + data_field('{"data":1}') + suffix == b'event: next\ndata: {"data":1}\n\n'
    prefix, suffix = next_framing('o"1')
    assert prefix + data_field("{}") + suffix == b'event: next\ndata: {"id":"o\\"1","payload":{}}\n\n'
    assert complete_event(None) == b"event: complete\ndata: \n\n"  # EventSource needs the data field
    assert complete_event("x") == b'event: complete\ndata: {"id":"x"}\n\n'
    assert data_field('{\n"a": 1\r\n}') == b'{\ndata: "a": 1\ndata: }'  # a line break never ends an event


def test_reservations_are_capped_per_address_and_lapse_unused() -> None:
    clock = Clock()
    registry = reservations(clock)
    first, second = registry.reserve(ALICE), registry.reserve(ALICE)
    assert first and second and first != second
    assert registry.reserve(ALICE) is None, "two per address"
    assert registry.reserve(BOB) is not None, "another address has its own"
    clock.now += 31
    assert registry.find(first, ALICE, adopt=False) is None, "unused, it lapsed"
    assert registry.reserve(ALICE) is not None


def test_a_reservation_with_a_stream_outlives_its_time_to_live() -> None:
    clock = Clock()
    registry = reservations(clock)
    token = registry.reserve(ALICE)
    found = registry.find(token, ALICE, adopt=False)
    assert found is not None
    found.streaming = True

    async def attach() -> None:
        registry.attach(found, EventStream(_never, 10), None)  # type: ignore[arg-type]

    asyncio.run(attach())
    clock.now += 3600
    assert registry.find(token, ALICE, adopt=False) is found
    registry.release(found)
    assert registry.find(token, ALICE, adopt=False) is None


def test_another_instance_adopts_a_genuine_unexpired_token_once() -> None:
    clock = Clock()
    here, there, stranger = reservations(clock), reservations(clock), reservations(clock, secret="z" * 32)
    token = here.reserve(ALICE)
    assert token is not None
    assert stranger.find(token, ALICE, adopt=True) is None, "signed with another key"
    assert there.find(token[:-1] + ("0" if token[-1] != "0" else "1"), ALICE, adopt=True) is None, "forged"
    adopted = there.find(token, ALICE, adopt=True)
    assert adopted is not None and there.find(token, ALICE, adopt=True) is adopted
    there.release(adopted)
    assert there.find(token, ALICE, adopt=True) is None, "ended here: not adopted again"
    clock.now += 31
    assert reservations(clock).find(token, ALICE, adopt=True) is None, "lapsed"
    assert there.find("not a token", ALICE, adopt=True) is None
    assert there.find("é.1.x", ALICE, adopt=True) is None


async def _never(message: object) -> None:
    raise AssertionError("nothing is sent")
