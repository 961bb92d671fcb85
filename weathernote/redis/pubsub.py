"""The listening side of Redis pub/sub, for one server or a Cluster: the hub's backend.

Two backends behind one small interface (after encode/broadcaster's): connect
(and subscribe what is wanted), subscribe, unsubscribe, next message, close.

- `PlainPubSub`: one connection, SUBSCRIBE, for a single server.
- `ShardedPubSub`: one connection per shard that owns a wanted channel,
  SSUBSCRIBE, for a Cluster. A refresh is announced (SPUBLISH) inside the
  shard that owns its cell, so each instance listens only where its channels
  live. A lost node, a failover or a slot moved elsewhere (the server then
  drops the subscription with an unsolicited SUNSUBSCRIBE) surfaces as
  `RedisUnavailable`: the hub reconnects, which re-reads the slot map and
  subscribes every channel where it lives now, then catches up.

Neither retries on its own: the hub must see every disconnect to catch up on
what was announced meanwhile. redis-py would: even with no retries, its PubSub
reconnects (and resubscribes) inside the call that found the connection broken,
from whichever task made it, so a SUBSCRIBE and the listener's read each made
the connection again at once and read its handshake together: asyncio's
"read() called while another coroutine is already waiting for incoming data"
(issue 21). So nothing here runs redis-py's failure handler, and no backend
touches a connection it has not got: each connects once, in `connect`, before
anyone reads it, and a call on a connection that is gone is `RedisUnavailable`.
Only the listener reads; SUBSCRIBE and UNSUBSCRIBE only write.

A link that goes silent without closing (a partition, a stuck proxy: no RST
ever comes) is found by `Liveness`: each connection that has said nothing for
`keepalive` seconds is sent a PING, and one whose answer does not come within
`timeout` is lost like any other. TCP keepalive is on as well, for what the
kernel can tell.

A lost link's `RedisUnavailable` has what ended it as its cause (redis-py's
error, or `LinkClosed`, `LinkSilent`, `SlotMoved`): the hub counts reconnects by it.

An announcement is an entry's wire form, whose JSON object ends it. Traced,
the refresh's W3C `traceparent` rides as one more member at the end
(`with_traceparent`): readers of every release ignore a member they do not
know, so instances of an older release still read it; this one takes it off
before decoding (`without_traceparent`). An announcement without one, or
with a malformed one, is delivered all the same, unlinked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from weathernote.errors import RedisUnavailable

Message = tuple[str, bytes]

# `,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"}`: a traceparent's version 00 is 55 characters
_TRACE_MEMBER = b',"traceparent":"'
_TRACEPARENT_LENGTH = 55
_TRAILER_LENGTH = len(_TRACE_MEMBER) + _TRACEPARENT_LENGTH + 2


def with_traceparent(message: bytes, traceparent: str | None) -> bytes:
    """`message` (ending in a JSON object) with `traceparent` as its last member; unchanged without one."""
    if traceparent is None or len(traceparent) != _TRACEPARENT_LENGTH or not message.endswith(b"}"):
        return message
    return message[:-1] + _TRACE_MEMBER + traceparent.encode("ascii", "replace") + b'"}'


def without_traceparent(data: bytes) -> tuple[bytes, str | None]:
    """The announcement as it was before `with_traceparent`, and the traceparent it carried (unchecked:
    garbage links to nothing), or `data` and None when it carries none."""
    if len(data) <= _TRAILER_LENGTH or not data.endswith(b'"}'):
        return data, None
    start = len(data) - _TRAILER_LENGTH
    if data[start : start + len(_TRACE_MEMBER)] != _TRACE_MEMBER:
        return data, None
    traceparent = data[start + len(_TRACE_MEMBER) : -2].decode("ascii", "replace")
    return data[:start] + b"}", traceparent


class PubSubBackend(Protocol):
    """What the hub needs from Redis pub/sub."""

    async def connect(self, channels: Collection[str]) -> None:
        """(Re)open the connections and subscribe `channels`; raises RedisUnavailable."""

    async def subscribe(self, channels: Collection[str]) -> None: ...

    async def unsubscribe(self, channels: Collection[str]) -> None: ...

    async def next_message(self, timeout: float) -> Message | None:
        """The next announcement, None after `timeout`; raises RedisUnavailable when a connection is lost."""

    async def close(self) -> None: ...


class LinkClosed(Exception):
    """A pub/sub connection found gone (closed, reset, never made) before it was used."""


class LinkSilent(Exception):
    """A pub/sub connection that did not answer a PING in time."""


class SlotMoved(Exception):
    """A Cluster node dropped a sharded subscription: its slot lives elsewhere now."""


def _client(url: str, timeout: float) -> Redis:
    # No retries and no failure handler: redis-py's (PubSub._reconnect) runs even with
    # Retry(NoBackoff(), 0) and makes the connection again inside the failing call, behind
    # the hub's back and racing its reader (`supported_errors=()`: no error is the retry's
    # business). Its health check off too: it swallows the answers to its PINGs, and
    # Liveness needs to hear them.
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=0,
        retry=Retry(NoBackoff(), 0, supported_errors=()),
    )


def _lost(reason: Exception, detail: str) -> RedisUnavailable:
    """The hub's error for a lost link, with what ended it as its cause."""
    error = RedisUnavailable(detail)
    error.__cause__ = reason
    return error


def _connected(pubsub: PubSub) -> None:
    """RedisUnavailable unless `pubsub` has a connection that is up: redis-py would make one on its own."""
    connection: AbstractConnection | None = pubsub.connection
    if connection is None or not connection.is_connected:
        raise _lost(LinkClosed(), "pub/sub connection closed")


_LIVENESS_TOKEN = b"weathernote-liveness"


class Liveness:
    """A pub/sub connection's proof of life: a PING after `keepalive` seconds of silence, its answer
    within `timeout`; otherwise the link is dead however open it looks."""

    def __init__(self, keepalive: float, timeout: float) -> None:
        self.keepalive = keepalive
        self.timeout = timeout
        self._heard = time.monotonic()
        self._pinged: float | None = None

    async def read(self, pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
        """The connection's next message (an answer to our PING included) within `timeout`, or None;
        a PING first if it has been silent `keepalive` seconds; RedisUnavailable if one went unanswered."""
        now = time.monotonic()
        if self._pinged is not None and now - self._pinged > self.timeout:
            # an event loop stalled past the deadline may have left the answer unread: what is
            # already there counts before the link is called silent
            message = await pubsub.get_message(timeout=0)
            if message is None:
                raise _lost(LinkSilent(), f"pub/sub link silent: no answer to PING within {self.timeout:g} s")
        else:
            if self._pinged is None and now - self._heard > self.keepalive:
                self._pinged = now
                await pubsub.ping(_LIVENESS_TOKEN)
            message = await pubsub.get_message(timeout=min(timeout, self.wait))
        if message is not None:
            self._heard, self._pinged = time.monotonic(), None
        return cast(dict[str, Any] | None, message)

    @property
    def wait(self) -> float:
        """How long a read may wait before the next check is due."""
        return max(0.05, min(1.0, self.timeout / 2, self.keepalive / 2))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PlainPubSub:
    """SUBSCRIBE on one connection to a single server."""

    def __init__(self, url: str, timeout: float, keepalive: float = 5.0) -> None:
        self.redis = _client(url, timeout)
        self._pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=True)
        self._liveness = Liveness(keepalive, max(2.0, timeout * 4))

    async def connect(self, channels: Collection[str]) -> None:
        """The connection (its handshake read here, before the listener reads), then `channels`."""
        try:
            await self._pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if channels:
                await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(type(exc).__name__) from exc

    async def subscribe(self, channels: Collection[str]) -> None:
        _connected(self._pubsub)
        try:
            await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(type(exc).__name__) from exc

    async def unsubscribe(self, channels: Collection[str]) -> None:
        # a connection that is gone has nothing subscribed; the listener finds it lost
        with contextlib.suppress(RedisError, OSError, RedisUnavailable):
            _connected(self._pubsub)
            await self._pubsub.unsubscribe(*channels)

    async def next_message(self, timeout: float) -> Message | None:
        """The next announcement; with no channel subscribed, the connection's liveness only."""
        _connected(self._pubsub)
        try:
            message = await self._liveness.read(self._pubsub, timeout)
        except RedisUnavailable:
            raise
        except Exception as exc:  # whatever breaks the connection, the hub reconnects
            raise RedisUnavailable(type(exc).__name__) from exc
        if message is None or message.get("type") != "message":
            return None
        return _text(message["channel"]), message["data"]

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()


class _Shard:
    """One node's connection, its channels and the task reading it into the shared queue."""

    def __init__(
        self, url: str, timeout: float, keepalive: float, queue: asyncio.Queue[Message | BaseException]
    ) -> None:
        self.redis = _client(url, timeout)
        self.pubsub: PubSub = self.redis.pubsub()
        self.liveness = Liveness(keepalive, max(2.0, timeout * 4))
        self.channels: set[str] = set()
        # SUNSUBSCRIBE replies we asked for and have not read yet, per channel: any other one
        # is the server dropping us because the slot moved
        self.leaving: Counter[str] = Counter()
        self.queue = queue
        self.reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read(), name="pubsub-shard-reader")

    async def _read(self) -> None:
        try:
            while True:
                _connected(self.pubsub)
                message = await self.liveness.read(self.pubsub, self.liveness.wait)
                if message is None:
                    continue
                kind = _text(message.get("type"))
                channel = _text(message.get("channel"))
                if kind == "smessage":
                    self.queue.put_nowait((channel, message["data"]))
                elif kind == "sunsubscribe" and self.leaving[channel] <= 0:
                    # the server dropped us: the slot moved to another node
                    raise _lost(SlotMoved(), f"slot of {channel} moved")
                elif kind == "sunsubscribe":
                    self.leaving[channel] -= 1
        except RedisUnavailable as exc:
            self.queue.put_nowait(exc)
        except Exception as exc:  # whatever ends the reader, the hub must hear of it
            self.queue.put_nowait(_lost(exc, type(exc).__name__))

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()


class ShardedPubSub:
    """SSUBSCRIBE on one connection per shard that owns a wanted channel."""

    def __init__(
        self, cluster: RedisCluster, node_url: Callable[[str, int], str], timeout: float, keepalive: float = 5.0
    ) -> None:
        self.cluster = cluster
        self.node_url = node_url
        self.timeout = timeout
        self.keepalive = keepalive
        self._queue: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        self._shards: dict[str, _Shard] = {}

    async def connect(self, channels: Collection[str]) -> None:
        await self.close()
        self._queue = asyncio.Queue()
        try:
            # the slot map as it is now: after a failover or a slot move, the new owners
            await self.cluster.nodes_manager.initialize()
        except (RedisError, RedisClusterException, OSError) as exc:
            raise RedisUnavailable(type(exc).__name__) from exc
        await self.subscribe(channels)

    def _owner(self, channel: str) -> tuple[str, str, int]:
        node = self.cluster.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
        return node.name, node.host, int(node.port)

    async def subscribe(self, channels: Collection[str]) -> None:
        # one SSUBSCRIBE per slot: a node refuses one whose channels span slots (CROSSSLOT)
        by_slot: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            try:
                name, host, port = self._owner(channel)
            except (RedisError, RedisClusterException) as exc:
                raise RedisUnavailable(type(exc).__name__) from exc
            if name not in self._shards:
                self._shards[name] = _Shard(self.node_url(host, port), self.timeout, self.keepalive, self._queue)
            by_slot.setdefault((name, key_slot(channel.encode())), []).append(channel)
        for (name, _), wanted in by_slot.items():
            shard = self._shards[name]
            if shard.reader is not None:
                _connected(shard.pubsub)  # its reader finds it lost; redis-py would reconnect it here
            try:
                await shard.pubsub.ssubscribe(*wanted)
            except (RedisError, OSError) as exc:
                raise RedisUnavailable(type(exc).__name__) from exc
            shard.channels.update(wanted)
            if shard.reader is None:
                shard.start()

    async def unsubscribe(self, channels: Collection[str]) -> None:
        for channel in channels:
            for name, shard in list(self._shards.items()):
                if channel not in shard.channels:
                    continue
                shard.channels.discard(channel)
                shard.leaving[channel] += 1
                with contextlib.suppress(RedisError, OSError, RedisUnavailable):
                    _connected(shard.pubsub)
                    await shard.pubsub.sunsubscribe(channel)
                if not shard.channels:
                    # a shard with nothing wanted is not worth a connection
                    del self._shards[name]
                    await shard.close()

    async def next_message(self, timeout: float) -> Message | None:
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            await shard.close()
