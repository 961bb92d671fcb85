"""The pub/sub hub: one Redis subscription per channel per process, fanned out locally.

Modelled on encode/broadcaster (a per-channel set of local subscribers, one
listener task) with what it leaves open fixed: each message is handed to every
subscriber by a plain call from the listener, and a subscriber keeps at most the
latest (weather is latest-wins: a stalled socket never grows memory nor delays
others, and an idle subscriber costs no task); channels are reference-counted
under a lock (SUBSCRIBE for the first local subscriber, UNSUBSCRIBE after the
last); a dropped connection is re-established with backoff, every channel
resubscribed and `on_reconnect` told which channels may have missed messages.

The hub connects when it first has a channel, and from then on its listener
keeps reading the link, channels or none, so that the link's liveness checks
keep running: a link parked unread while no channel was wanted was closed by
the server's idle `timeout` (it is an ordinary client once nothing is
subscribed) or lost otherwise unseen, and the next subscriber found it broken
(issue 21). A listener that lost its link reconnects only if a channel is
still wanted; otherwise it waits for one. Each loss of a link that was up is
counted (`weathernote_pubsub_reconnects_total`, by what ended it).

Traced, each message's delivery on this instance is a span of its own that
links to the refresh that announced it (its trace context rides with the
announcement: `redis.pubsub.with_traceparent`), so one update's trace reaches
every instance that delivered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from weathernote.breaker import CircuitBreaker
from weathernote.breaker import State as BreakerState
from weathernote.errors import RedisUnavailable, WeatherNoteError
from weathernote.ops import metrics, tracing
from weathernote.ops.tracing import SpanKind, Tracer
from weathernote.redis import PubSubBackend
from weathernote.redis.pubsub import without_traceparent
from weathernote.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def _reason(exc: Exception) -> str:
    """What ended a link, as the backend says it (the cause of its RedisUnavailable): a bounded label."""
    cause = exc.__cause__ if isinstance(exc, RedisUnavailable) and exc.__cause__ is not None else exc
    return type(cause).__name__


class Listener(Protocol):
    """What the hub hands a channel's messages to: `offer` is called from the listener, and must not block."""

    @property
    def channel(self) -> str: ...

    def offer(self, message: Any) -> None: ...


class Wakeup:
    """An event for one waiter.

    asyncio.Event allocates a deque per instance; at tens of thousands of
    subscriptions that alone is megabytes.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return once set (at once if already), and clear."""
        if not self._flag:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._flag = False


class Subscriber:
    """A latest-wins slot for a task that waits for a channel's next message: a new one replaces one not yet taken."""

    __slots__ = ("_pending", "channel", "wakeup")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._pending: Any = None
        self.wakeup = Wakeup()

    def offer(self, message: Any) -> None:
        self._pending = message
        self.wakeup.set()

    def take(self) -> Any:
        """The pending message, or None."""
        message, self._pending = self._pending, None
        return message

    async def next(self) -> Any:
        while True:
            await self.wakeup.wait()
            message = self.take()
            if message is not None:
                return message


class Hub:
    """Local subscribers of Redis channels, over one pub/sub backend (one server or a Cluster's shards).

    The hub's (re)connections go through the Redis breaker: while it is open the
    hub does not dial, and each failed connection counts against Redis.
    """

    def __init__(
        self,
        backend: Callable[[], PubSubBackend],
        breaker: CircuitBreaker,
        *,
        decode: Callable[[str, bytes], Any] = lambda channel, data: data,
        on_reconnect: Callable[[list[str]], Coroutine[Any, Any, None]] | None = None,
        max_backoff: float = 2.0,
        connect_wait: float = 1.5,
        connect_timeout: float = 5.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.new_backend = backend  # a backend for the topology as the gateway knows it at each connection
        self.backend: PubSubBackend | None = None
        self.breaker = breaker
        self.decode = decode  # once per message, shared by every local subscriber
        self.on_reconnect = on_reconnect
        self.max_backoff = max_backoff
        self.connect_wait = connect_wait
        self.connect_timeout = connect_timeout  # a (re)connection holds the lock: never for long
        self.tracer = tracer  # None: tracing is off
        self._listening = asyncio.Event()  # set while connected and subscribed
        self._catching_up: set[asyncio.Task[None]] = set()  # referenced until done
        self._subscribers: dict[str, set[Listener]] = {}
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._has_channels = asyncio.Event()
        self._ever_connected = False
        # channels whose subscriber did not wait for a connection: it read before listening
        self._unsure: set[str] = set()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="hub-listener")

    async def stop(self) -> None:
        await cancel_and_wait(self._listener)
        if self.backend is not None:
            await self.backend.close()

    async def attach(self, subscriber: Listener) -> None:
        """Add a local subscriber; on return its channel is subscribed in Redis if Redis can be had.

        Callers read the current value after attaching, so that a refresh landing in
        between is not lost: when the listener is (re)connecting, wait for it a little.
        Cancelled, it leaves nothing behind.
        """
        try:
            async with self._lock:
                local = self._subscribers.get(subscriber.channel)
                first = local is None
                if local is None:
                    self._subscribers[subscriber.channel] = local = set()
                local.add(subscriber)
                self._has_channels.set()
                if first:
                    await self._redis_subscribe([subscriber.channel])
            if not self.connected and self.breaker.state is not BreakerState.OPEN:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._listening.wait(), self.connect_wait)
            if not self.connected:
                self._unsure.add(subscriber.channel)
        except BaseException:
            await asyncio.shield(self._remove_now(subscriber))
            raise

    async def detach(self, subscriber: Listener) -> None:
        # shielded: a cancelled subscription must still leave nothing behind
        await asyncio.shield(self._remove_now(subscriber))

    async def _remove_now(self, subscriber: Listener) -> None:
        async with self._lock:
            local = self._subscribers.get(subscriber.channel)
            if local is None:
                return
            local.discard(subscriber)
            if local:
                return
            del self._subscribers[subscriber.channel]
            if not self._subscribers:
                self._has_channels.clear()
            if self.connected and self.backend is not None:
                await self.backend.unsubscribe([subscriber.channel])

    async def _redis_subscribe(self, channels: list[str]) -> None:
        if not self.connected or self.backend is None:
            return  # the listener subscribes everything when it (re)connects
        try:
            await self.backend.subscribe(channels)
        except RedisUnavailable as exc:
            log.warning("pub/sub subscribe failed (%s); will resubscribe on reconnect", exc)
            self._link_lost(exc)

    def deliver(self, channel: str, data: bytes) -> None:
        """Decode a message once and hand it to every local subscriber of `channel`."""
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        data, traceparent = without_traceparent(data)
        if self.tracer is None:
            self._deliver(channel, data, subscribers)
            return
        link = tracing.link_to(traceparent)
        attributes: dict[str, str | int] = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.operation.name": "deliver",
            "messaging.destination.name": channel,
            "weathernote.subscribers": len(subscribers),
        }
        with self.tracer.start_as_current_span(
            "deliver", kind=SpanKind.CONSUMER, attributes=attributes, links=[link] if link else None
        ):
            self._deliver(channel, data, subscribers)

    def _deliver(self, channel: str, data: bytes, subscribers: set[Listener]) -> None:
        try:
            message = self.decode(channel, data)
        except WeatherNoteError as exc:
            log.warning("undecodable message on %s dropped (%s)", channel, exc)
            return
        except Exception:  # one bad message must not stop the listener
            log.exception("undecodable message on %s dropped", channel)
            return
        for subscriber in subscribers:
            try:
                subscriber.offer(message)
            except Exception:  # one subscriber's failure must reach neither the others nor the listener
                log.exception("delivery on %s failed", channel)
        metrics.PUBSUB_DELIVERIES.inc(len(subscribers))

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self.connected or self.backend is None:
                    await self._has_channels.wait()  # no link until a channel is wanted
                    if not await self._connect():
                        continue  # every channel left while we waited for the lock
                    backoff = 0.05
                assert self.backend is not None
                # channels or none: reading keeps the link's liveness checked
                message = await self.backend.next_message(timeout=1.0)
            except Exception as exc:  # whatever it was, the connection is to be made again
                if self.connected:
                    self._link_lost(exc)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if message is not None:
                metrics.PUBSUB_MESSAGES.inc()
                self.deliver(*message)

    @property
    def connected(self) -> bool:
        """Connected to Redis and subscribed to every local channel."""
        return self._listening.is_set()

    def _link_lost(self, exc: Exception) -> None:
        """A link that was up is gone: counted, said, held against Redis, and to be made again."""
        metrics.PUBSUB_RECONNECTS.labels(_reason(exc)).inc()
        log.warning("pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc)
        self.breaker.failure()
        self._listening.clear()

    async def _connect(self) -> bool:
        """(Re)connect with every channel wanted now; False, and no link, if none is."""
        if not self.breaker.allow():
            raise RedisUnavailable("circuit breaker open")
        async with self._lock:
            channels = list(self._subscribers)
            if self.backend is not None:
                await self.backend.close()
                self.backend = None
            if not channels:
                # they left while we waited for the lock: a link with nothing to read waits for a subscribe
                self.breaker.abandon()
                return False
            self.backend = self.new_backend()
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self.backend.connect(channels)
            except Exception as exc:
                self.breaker.failure()  # also ends the half-open probe this was
                raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self.breaker.success()
            self._listening.set()
        reconnecting, self._ever_connected = self._ever_connected, True
        unsure, self._unsure = self._unsure, set()
        log.info("pub/sub listening on %d channel(s)", len(channels))
        # announcements published while we were away (all channels), or before a subscriber that
        # could not wait for this first connection was listening, are lost: let the owner catch up
        channels = channels if reconnecting else [channel for channel in channels if channel in unsure]
        if self.on_reconnect and channels:
            task = asyncio.create_task(self.on_reconnect(channels))
            self._catching_up.add(task)
            task.add_done_callback(self._catching_up.discard)
        return True
