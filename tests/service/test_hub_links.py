"""The hub's link to Redis pub/sub: lost only when Redis loses it, never by the hub's own doing (issue 21).

In process, against a real embedded server of each test's own (its clients are killed and its
idle timeout set here). What each test met before its fix:

- a link parked unread once the hub had no channel was closed (by the server's idle timeout, a
  kill) without the hub knowing: the next subscriber's attach returned as subscribed and its
  announcement was lost, or its SUBSCRIBE raced the listener, both making the connection again
  inside redis-py (its PubSub reconnects in the failing call even with `Retry(NoBackoff(), 0)`:
  the retry runs its failure handler, `PubSub._reconnect`, before counting) and reading its
  handshake at once: asyncio's "read() called while another coroutine is already waiting for
  incoming data", out of the attach or logged as `pub/sub connection lost (RedisUnavailable:
  RuntimeError)`;
- a listener that found no channel left once it had the hub's lock connected anyway, subscribed
  nothing and read: redis-py's "pubsub connection not set", logged as that same line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import eventually
from weathernote.breaker import CircuitBreaker
from weathernote.live import Hub, Subscriber
from weathernote.ops import metrics
from weathernote.redis import EmbeddedRedis, PubSubBackend, RedisGateway


def reconnects() -> dict[str, float]:
    """The hub's reconnects so far in this process, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.PUBSUB_RECONNECTS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def since(before: dict[str, float]) -> dict[str, float]:
    return {
        reason: count - before.get(reason, 0) for reason, count in reconnects().items() if count > before.get(reason, 0)
    }


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def admin(own_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.close()


@contextlib.asynccontextmanager
async def started(backend: object, **options: float) -> AsyncIterator[Hub]:
    hub = Hub(backend, CircuitBreaker("redis-test"), **options)  # type: ignore[arg-type]
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


@pytest.fixture
async def gateway(own_redis: EmbeddedRedis) -> AsyncIterator[RedisGateway]:
    gateway = RedisGateway(own_redis.url, timeout=0.5, breaker=CircuitBreaker("redis-test"), pubsub_keepalive=0.2)
    await gateway.connect()
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def hub(gateway: RedisGateway) -> AsyncIterator[Hub]:
    async with started(gateway.pubsub) as running:
        yield running


async def heard(hub: Hub, admin: redis.Redis, channel: str, data: bytes) -> bytes:
    """Attach a subscriber to `channel`, publish `data` there and return what it received."""
    subscriber = Subscriber(channel)
    await hub.attach(subscriber)
    try:
        await asyncio.to_thread(admin.publish, channel, data)
        message: bytes = await asyncio.wait_for(subscriber.next(), 10)
        return message
    finally:
        await hub.detach(subscriber)


def hub_links(admin: redis.Redis) -> list[dict[str, object]]:
    """The hub's connections: the ones that last (un)subscribed or pinged."""
    return [client for client in admin.client_list() if client["cmd"] in ("subscribe", "unsubscribe", "ping")]


async def test_a_link_closed_while_the_hub_has_no_channel_is_found_and_the_next_subscriber_gets_through(
    hub: Hub, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The last subscriber left; Redis then closed the link (an idle timeout, a restart, a kill).
    The hub never read it again, so only the next subscriber's SUBSCRIBE met the closed link."""
    assert await heard(hub, admin, "updates:a", b"1") == b"1"
    before = reconnects()
    killed = 0
    for client in hub_links(admin):
        killed += int(admin.client_kill_filter(_id=client["id"]))
    assert killed == 1, "the hub kept one link while it had no channel"
    with caplog.at_level(logging.WARNING, logger="weathernote.live.hub"):
        await eventually(lambda: not hub.connected, timeout=10)  # found by the hub, not by the next subscriber
        assert await heard(hub, admin, "updates:b", b"2") == b"2"
        assert await heard(hub, admin, "updates:a", b"3") == b"3"
    assert "RuntimeError" not in caplog.text
    assert since(before) == {"ConnectionError": 1}, "one loss, Redis's doing, and said so"


async def test_an_idle_hub_keeps_its_link_past_the_servers_idle_timeout(
    hub: Hub, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A link with no subscription is an ordinary client to Redis, closed after `timeout` seconds
    idle (300 in the shipped redis.conf); the hub parked it unwatched, so the next subscriber found it."""
    assert await heard(hub, admin, "updates:a", b"1") == b"1"
    before = reconnects()
    admin.config_set("timeout", 1)
    try:
        await asyncio.sleep(2.5)  # idle, no channel, longer than the server keeps a silent client
        with caplog.at_level(logging.WARNING, logger="weathernote.live.hub"):
            assert await heard(hub, admin, "updates:b", b"2") == b"2"
    finally:
        admin.config_set("timeout", 0)
    assert "connection lost" not in caplog.text
    assert since(before) == {}


class GatedPubSub:
    """A real backend whose UNSUBSCRIBE waits for the test: a detach holding the hub's lock, as one
    does while its UNSUBSCRIBE meets a broken link."""

    def __init__(self, inner: PubSubBackend, gate: asyncio.Event) -> None:
        self.inner = inner
        self.gate = gate

    async def connect(self, channels: Collection[str]) -> None:
        await self.inner.connect(channels)

    async def subscribe(self, channels: Collection[str]) -> None:
        await self.inner.subscribe(channels)

    async def unsubscribe(self, channels: Collection[str]) -> None:
        await self.gate.wait()
        await self.inner.unsubscribe(channels)

    async def next_message(self, timeout: float) -> tuple[str, bytes] | None:
        return await self.inner.next_message(timeout)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_listener_that_finds_no_channel_left_waits_for_one_instead_of_reading_nothing(
    gateway: RedisGateway, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The link is lost while one detach holds the hub's lock and another waits for it; by the time the
    listener has the lock no channel is left. It connected anyway, subscribed nothing and read."""
    gate = asyncio.Event()
    gate.set()
    async with started(lambda: GatedPubSub(gateway.pubsub(), gate)) as hub:
        a, b = Subscriber("updates:a"), Subscriber("updates:b")
        await hub.attach(a)
        await hub.attach(b)
        assert hub.connected
        before = reconnects()
        gate.clear()
        leaving_a = asyncio.create_task(hub.detach(a))  # holds the lock, waiting at the gate
        await asyncio.sleep(0.1)
        leaving_b = asyncio.create_task(hub.detach(b))  # waits for the lock
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="weathernote.live.hub"):
            assert admin.client_kill_filter(_type="pubsub") == 1
            await eventually(lambda: not hub.connected, timeout=10)  # the listener lost it, and waits for the lock
            await asyncio.sleep(0.3)
            gate.set()
            await asyncio.gather(leaving_a, leaving_b)
            await asyncio.sleep(1.0)  # what the listener does with no channel left
            assert caplog.text.count("connection lost") == 1, caplog.text
        assert since(before) == {"ConnectionError": 1}
        assert await heard(hub, admin, "updates:c", b"3") == b"3"
