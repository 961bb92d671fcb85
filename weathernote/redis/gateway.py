"""The one way to Redis: a single server or a Cluster, behind one breaker and one error mapping.

Every Redis call of the service goes through a `RedisGateway`. It knows which
topology it talks to (a Cluster is recognised from the server itself, so
operators configure the same `redis://` / `rediss://` URL either way), spells
the cells' keys for it (`keys`), bounds every call by a deadline, applies the
Redis circuit breaker the same way for every caller, and turns redis-py's
errors into the service's own (`failures.classify`).

The gateway is built unconnected and learns its topology in `connect`. A
topology it could not learn at start-up (every seed node unreachable) is not
guessed: the gateway is not ready (`topology_known`), keeps asking on each
`ping`, and a Cluster's MOVED answer makes it ask again at once.

On a Cluster, announcements use sharded pub/sub (SPUBLISH / SSUBSCRIBE): a
refresh travels only inside the shard that owns its cell.

With a tracer, each round trip made inside a recorded trace is a client span
(`db.system` redis, the commands' names, never their arguments), and an
announcement carries the trace context of the refresh it announces. A call
outside any trace (the usage flusher, the watched-cell renewer) makes none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from weathernote.breaker import CircuitBreaker, State
from weathernote.errors import RedisKeyError, RedisUnavailable
from weathernote.ops import tracing
from weathernote.ops.tracing import Span, SpanKind, Tracer
from weathernote.redis.failures import classify, is_redirection
from weathernote.redis.keys import CLUSTER_SPELLING, SEED_SPELLING, CellKeys
from weathernote.redis.pubsub import PlainPubSub, PubSubBackend, ShardedPubSub, with_traceparent
from weathernote.redis.scripts import Script
from weathernote.redis.topology import cluster_client, host_port, is_cluster, standalone
from weathernote.redis.wire import Command, MultiplexedConnection

log = logging.getLogger(__name__)

T = TypeVar("T")
AnyRedis = Redis | RedisCluster
AnyPipeline = Pipeline | ClusterPipeline
Operation = Callable[[AnyRedis], Awaitable[T]]

# connections per Cluster node; a call uses at most one per node
_CLUSTER_CONNECTIONS = 128


class RedisGateway:
    """Every Redis call of the service, for a single server or a Cluster.

    Use `call` for one command, `pipeline` for several in one round trip,
    `commands` for raw commands in one round trip (the hot path's), `script`
    for Lua scripts, `get_many` for entry reads, `announce` to publish a
    refresh and `pubsub` for the hub's listening side.

    On a single server, `commands`, `get_many` and scripts travel over one
    multiplexed connection (`wire`) that every request of the process shares;
    the rest, and everything on a Cluster, over redis-py's client.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        seed_nodes: Sequence[str] = (),
        pubsub_keepalive: float = 5.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.url = url
        self.tracer = tracer  # None: tracing is off, and no call pays for it
        self.timeout = timeout
        self.pubsub_keepalive = pubsub_keepalive  # silence after which a pub/sub connection must answer a PING
        self.breaker = breaker
        # more nodes to ask when the URL's is down at start-up ("host:port" each)
        self.seed_nodes = [node for node in seed_nodes if node]
        # One deadline for a whole call, retries and redirections included: a slow or
        # failing-over Redis costs a request at most this long.
        self.deadline = timeout * 3
        self.client: AnyRedis = standalone(url, timeout)
        self.wire = _wire(url, timeout)
        self.cluster = False
        self.keys: CellKeys = SEED_SPELLING
        self.topology_known = False
        self._scripts: list[Script] = []
        self._client_errors_logged: set[str] = set()  # once per kind
        self._slots: asyncio.Semaphore | None = None
        self._detecting = asyncio.Lock()
        self._redetection: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Learn the topology (a Cluster if a node says it is one); unreachable, it stays unknown."""
        await self._detect()

    async def _detect(self) -> None:
        async with self._detecting:
            if self.topology_known:
                return
            seeds = [self.node_url(*host_port(node)) for node in self.seed_nodes]
            clustered = await is_cluster([self.url, *seeds], self.timeout, self.deadline)
            if clustered is None:
                log.warning("Redis topology unknown: not ready until a node answers")
                return
            if clustered:
                await self._become_cluster()
            self.topology_known = True

    async def _become_cluster(self) -> None:
        log.info("Redis Cluster detected: keys carry hash tags, announcements use sharded pub/sub")
        cluster = await cluster_client(
            self.url, self.seed_nodes, self.timeout, self.deadline, max_connections=_CLUSTER_CONNECTIONS
        )
        previous, wire = self.client, self.wire
        self.client, self.wire, self.cluster, self.keys = cluster, None, True, CLUSTER_SPELLING
        # A Cluster client's pools refuse (rather than wait) past their size: calls wait here
        # instead, within their deadline, as they do for a single server's blocking pool.
        self._slots = asyncio.Semaphore(_CLUSTER_CONNECTIONS)
        if wire is not None:
            await wire.aclose()
        await previous.aclose()

    def call(self, operation: Operation[T], *, bounded: bool = True, names: list[str] | None = None) -> Awaitable[T]:
        """Run `operation` on the client within the breaker and the deadline (`bounded=False`: it bounds its
        own wait, as the wire's do); `names`, the commands it sends, for its span (else noted as it runs)."""
        if self.tracer is not None and (span := _redis_span(self.tracer, self.url)) is not None:
            noted = [] if names is None else names
            operation = _noting(operation, noted) if names is None else operation
            return _traced(span, noted, self._call(operation, bounded))
        return self._call(operation, bounded)  # the coroutine itself: untraced, no frame in between

    async def _call(self, operation: Operation[T], bounded: bool) -> T:
        if not self.breaker.allow():
            raise RedisUnavailable("circuit breaker open")
        try:
            if not bounded:
                result = await operation(self.client)
            else:
                async with asyncio.timeout(self.deadline):
                    if self._slots is None:
                        result = await operation(self.client)
                    else:
                        async with self._slots:
                            result = await operation(self.client)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        except Exception as exc:
            # redis-py's Cluster client can fail with its own bugs under concurrency (AttributeError,
            # RuntimeError on a closed transport: redis-py #4287); a caller must still degrade
            self._note_client_error(exc)
            raise self._failed(exc) from exc
        except BaseException:
            self.breaker.abandon()  # cancelled: nothing learned about Redis
            raise
        self.breaker.success()
        return result

    def _failed(self, exc: BaseException) -> RedisKeyError | RedisUnavailable:
        error = classify(exc)
        if not self.cluster and is_redirection(exc):
            self._redetect(exc)
        if isinstance(error, RedisUnavailable):
            self._count_failure(exc)
        else:
            self.breaker.success()  # the server answered
        return error

    def _redetect(self, exc: BaseException) -> None:
        """A Cluster answered as if it were a single server: learn the topology again, once at a time."""
        if self._redetection is not None and not self._redetection.done():
            return
        log.warning("Redis answered %s: it is a Cluster; detecting the topology again", str(exc).split(" ")[0])
        self.topology_known = False
        self._redetection = asyncio.get_running_loop().create_task(self._detect(), name="redis-redetection")

    def _note_client_error(self, exc: Exception) -> None:
        kind = type(exc).__name__
        if kind not in self._client_errors_logged:
            self._client_errors_logged.add(kind)
            log.warning("Redis client error %s (%s): treated as Redis unavailable", kind, str(exc)[:200])

    def _count_failure(self, exc: BaseException) -> None:
        opened = self.breaker.state is not State.OPEN
        self.breaker.failure()
        if opened and self.breaker.state is State.OPEN:
            # once per opening, with what made it open: the breaker's own line says only that it did
            log.warning("Redis failing (%s: %s): its circuit breaker opens", type(exc).__name__, str(exc)[:200])

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`; a key of another type reads as missing (MGET's nil), never an error."""
        if self.wire is not None:
            [values] = await self.commands([("MGET", *keys)])
            if isinstance(values, RedisKeyError):
                raise values
            return cast(list[bytes | None], values)
        if self.cluster:
            # grouped by slot; one cell's keys share one (hash tags), so a cell is one command
            values = await self.call(lambda client: client.mget_nonatomic(list(keys)), names=["MGET"])  # type: ignore[union-attr]
        else:
            values = await self.call(lambda client: client.mget(list(keys)), names=["MGET"])
        return cast(list[bytes | None], values)  # without decode_responses: bytes or None

    async def pipeline(self, build: Callable[[AnyPipeline], None], *, transaction: bool = False) -> list[Any]:
        """Commands added by `build`, sent in one round trip (per node on a Cluster).

        With `transaction`, every key must share one slot. A command's error about
        its key comes back in its place as a `RedisKeyError`; a server error raises.
        """

        names: list[str] | None = None if self.tracer is None else []

        async def run(client: AnyRedis) -> list[Any]:
            async with client.pipeline(transaction=transaction) as pipe:
                build(pipe if names is None else cast(AnyPipeline, _Noted(pipe, names)))
                replies = list(await pipe.execute(raise_on_error=False))
            for reply in replies:
                # a server error in any reply fails the whole call, before the breaker hears of success
                if isinstance(reply, BaseException) and isinstance(classify(reply), RedisUnavailable):
                    raise reply
            return replies

        results = await self.call(run, names=names)
        if any(isinstance(result, NoScriptError) for result in results):
            # a restarted, flushed or newly promoted node: load our scripts there, once
            await self.call(self._load_scripts)
            results = await self.call(run, names=None if names is None else [])
        return [classify(result) if isinstance(result, BaseException) else result for result in results]

    async def commands(self, commands: Sequence[Command]) -> list[Any]:
        """Raw commands in one round trip; each reply in its place, a command's error about its key
        as a `RedisKeyError`. A server error raises. On a Cluster every key must share one slot."""
        wire = self.wire
        if wire is None:
            return await self.pipeline(lambda pipe: _add_commands(pipe, commands))

        async def run(_: AnyRedis) -> list[Any]:
            replies = await wire.execute(commands)
            for reply in replies:
                if isinstance(reply, ResponseError) and isinstance(classify(reply), RedisUnavailable):
                    raise reply
            return replies

        # the wire bounds its own wait: a reply later than the Redis timeout drops the connection
        names = None if self.tracer is None else [str(command[0]) for command in commands]
        replies = await self.call(run, bounded=False, names=names)
        if not any(isinstance(reply, ResponseError) for reply in replies):
            return replies
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self.call(self._load_scripts)
            replies = await self.call(run, bounded=False, names=names)
        return [classify(reply) if isinstance(reply, ResponseError) else reply for reply in replies]

    async def _load_scripts(self, client: AnyRedis) -> None:
        for script in self._scripts:
            await client.script_load(script.source)

    def announce(self, pipe: AnyPipeline, channel: str, message: bytes) -> None:
        """Add the announcement of a refresh to `pipe`: sharded on a Cluster, plain on one server;
        traced, with the refresh's trace context, for its deliveries to link to."""
        if self.tracer is not None:
            message = with_traceparent(message, tracing.current_traceparent())
        pipe.execute_command("SPUBLISH" if self.cluster else "PUBLISH", channel, message)

    def pubsub(self) -> PubSubBackend:
        """A listening side of its own for the topology as known now (one connection per shard on a Cluster)."""
        if isinstance(self.client, RedisCluster):
            return ShardedPubSub(self.client, self.node_url, self.timeout, self.pubsub_keepalive)
        return PlainPubSub(self.url, self.timeout, self.pubsub_keepalive)

    def script(self, source: str) -> Script:
        script = Script(self, source)
        self._scripts.append(script)
        return script

    async def ping(self) -> bool:
        """Does Redis answer, and is its topology known? Also the breaker's probe, so recovery needs no user traffic."""
        if not self.topology_known:
            await self._detect()
        try:
            await self.call(lambda client: client.ping())
        except (RedisUnavailable, RedisKeyError):
            return False
        return self.topology_known

    def node_url(self, host: str, port: int) -> str:
        """The configured URL (scheme, credentials, options) pointed at one node."""
        parts = urlsplit(self.url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = (credentials + "@" if credentials else "") + f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def aclose(self) -> None:
        if self._redetection is not None:
            self._redetection.cancel()
        if self.wire is not None:
            await self.wire.aclose()
        await self.client.aclose()


def _redis_span(tracer: Tracer, url: str) -> Span | None:
    """A client span for one round trip, under the current span; None outside a recorded trace."""
    if not tracing.recording():
        return None
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {"db.system": "redis", "db.system.name": "redis"}
    attributes["server.address"] = parts.hostname or ""
    if parts.port:
        attributes["server.port"] = parts.port
    # not made current: nothing happens under a round trip, and the refresh stays the current span
    return tracer.start_span("redis", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False)


async def _traced(span: Span, names: list[str], call: Coroutine[Any, Any, T]) -> T:
    """Await `call` under `span`, named after the commands it sent once it is done."""
    try:
        return await call
    except BaseException as exc:
        tracing.failed(span, exc)
        raise
    finally:
        operation = " ".join(dict.fromkeys(names)) or "redis"
        span.update_name(operation if len(operation) <= 64 else operation[:61] + "...")
        span.set_attribute("db.operation.name", operation)
        if len(names) > 1:
            span.set_attribute("db.operation.batch.size", len(names))
        span.end()


def _noting(operation: Operation[T], names: list[str]) -> Operation[T]:
    return lambda client: operation(cast(AnyRedis, _Noted(client, names)))


class _Noted:
    """A client or pipeline that notes the name of each command sent through it (for a span), nothing else."""

    __slots__ = ("_names", "_target")

    def __init__(self, target: Any, names: list[str]) -> None:
        self._target = target
        self._names = names

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name == "execute_command":
            return lambda *args, **options: self._note(str(args[0]), value(*args, **options))
        if callable(value) and not name.startswith("_"):
            self._names.append(name.upper())
        return value

    def _note(self, name: str, result: Any) -> Any:
        self._names.append(name.upper())
        return result


def _wire(url: str, timeout: float) -> MultiplexedConnection | None:
    """The single server's multiplexed connection, for the URLs it handles."""
    return MultiplexedConnection(url, timeout) if MultiplexedConnection.supports(url) else None


def _add_commands(pipe: AnyPipeline, commands: Sequence[Command]) -> None:
    for command in commands:
        pipe.execute_command(*command)


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
