"""The multiplexed connection against real servers: order under concurrency, cancellation, stalls, drops, AUTH.

Which URLs it takes is tested in process in tests/unit/test_redis_wire.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from weathernote.breaker import CircuitBreaker, State
from weathernote.errors import RedisKeyError, RedisUnavailable
from weathernote.redis import RedisGateway
from weathernote.redis.embedded import EmbeddedRedis
from weathernote.redis.wire import MultiplexedConnection


@pytest.fixture
async def wire(redis_url: str, clean: object) -> AsyncIterator[MultiplexedConnection]:
    connection = MultiplexedConnection(redis_url, timeout=0.5)
    yield connection
    await connection.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> EmbeddedRedis:
    """A server of the test's own, to stop and kill."""
    server = EmbeddedRedis(tmp_path, persistent=False)
    server.start()
    yield server  # type: ignore[misc]
    os.kill(server._process.pid, signal.SIGCONT)  # type: ignore[union-attr]
    server.stop()


async def test_concurrent_callers_each_get_their_own_replies(wire: MultiplexedConnection) -> None:
    async def one(n: int) -> list[object]:
        return await wire.execute([("SET", f"k{n}", f"v{n}"), ("GET", f"k{n}"), ("INCRBY", "total", n)])

    results = await asyncio.gather(*(one(n) for n in range(500)))
    for n, (stored, value, _) in enumerate(results):
        assert stored == b"OK" and value == f"v{n}".encode()
    [total] = await wire.execute([("GET", "total")])
    assert int(total) == sum(range(500))


async def test_a_cancelled_caller_leaves_the_order_intact(wire: MultiplexedConnection) -> None:
    await wire.execute([("SET", "a", "1"), ("SET", "b", "2")])
    # BLPOP keeps its reply back for 0.2 s, so the cancellation lands while it is in flight
    slow = asyncio.ensure_future(wire.execute([("BLPOP", "nothing", "0.2"), ("GET", "a")]))
    await asyncio.sleep(0.05)
    after = asyncio.ensure_future(wire.execute([("GET", "b")]))
    await asyncio.sleep(0)
    slow.cancel()
    assert await after == [b"2"]
    assert await wire.execute([("GET", "a")]) == [b"1"]


async def test_errors_come_back_in_their_place(wire: MultiplexedConnection) -> None:
    await wire.execute([("RPUSH", "list", "x")])
    replies = await wire.execute([("GET", "list"), ("EVALSHA", "0" * 40, 0), ("PING",)])
    assert isinstance(replies[0], ResponseError) and str(replies[0]).startswith("WRONGTYPE")
    assert isinstance(replies[1], NoScriptError)
    assert replies[2] == b"PONG"


async def test_a_stalled_server_times_out_and_the_next_call_dials_again(own_redis: EmbeddedRedis) -> None:
    wire = MultiplexedConnection(own_redis.url, timeout=0.3)
    assert await wire.execute([("PING",)]) == [b"PONG"]
    pid = own_redis._process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    results = await asyncio.gather(*(wire.execute([("PING",)]) for _ in range(20)), return_exceptions=True)
    waited = time.monotonic() - started
    assert all(isinstance(result, RedisTimeoutError) for result in results), results
    assert waited < 1.5  # about the timeout, not a call's worth each
    os.kill(pid, signal.SIGCONT)
    assert await wire.execute([("PING",)]) == [b"PONG"]
    await wire.aclose()


async def test_a_dropped_connection_fails_its_calls_and_is_made_again(own_redis: EmbeddedRedis) -> None:
    wire = MultiplexedConnection(own_redis.url, timeout=2.0)
    await wire.execute([("CLIENT", "SETNAME", "wire")])
    blocked = asyncio.ensure_future(wire.execute([("BLPOP", "nothing", "5")]))
    await asyncio.sleep(0.1)
    with redis.Redis.from_url(own_redis.url) as other:
        assert other.client_kill_filter(skipme=True, _type="normal") >= 1
    with pytest.raises(ConnectionError):
        await blocked
    assert await wire.execute([("PING",)]) == [b"PONG"]
    await wire.aclose()


async def test_credentials_in_the_url_are_sent_and_wrong_ones_refused(own_redis: EmbeddedRedis) -> None:
    with redis.Redis.from_url(own_redis.url) as admin:
        admin.acl_setuser("reader", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"])
    host_port = own_redis.url.split("//", 1)[1].split("/", 1)[0]
    wire = MultiplexedConnection(f"redis://reader:s3cret@{host_port}/3", timeout=0.5)
    await wire.execute([("SET", "where", "db3")])
    with redis.Redis.from_url(f"redis://{host_port}/3") as admin:
        assert admin.get("where") == b"db3"
    await wire.aclose()
    wrong = MultiplexedConnection(f"redis://reader:wrong@{host_port}/0", timeout=0.5)
    with pytest.raises(redis.AuthenticationError):
        await wrong.execute([("PING",)])
    # through the gateway, refused credentials are Redis unavailable, not a crash
    gateway = RedisGateway(
        f"redis://reader:wrong@{host_port}/0", timeout=0.5, breaker=CircuitBreaker("redis", failures=1)
    )
    with pytest.raises(RedisUnavailable):
        await gateway.get_many(["a"])
    assert gateway.breaker.state is State.OPEN
    await gateway.aclose()


async def test_the_gateway_reads_over_the_wire_and_reloads_forgotten_scripts(redis_url: str, clean: object) -> None:
    gateway = RedisGateway(redis_url, timeout=0.5, breaker=CircuitBreaker("redis", failures=2))
    await gateway.connect()
    assert gateway.wire is not None  # a single server: the hot path is multiplexed
    script = gateway.script("return ARGV[1]")
    await gateway.call(lambda client: client.rpush("weather:lat:1.0:lon:1.0", "x"))
    await gateway.call(lambda client: client.script_flush())
    replies = await gateway.commands([script.command(["k"], ["a"]), ("GET", "weather:lat:1.0:lon:1.0")])
    assert replies[0] == b"a" and isinstance(replies[1], RedisKeyError)
    assert await gateway.get_many(["weather:lat:1.0:lon:1.0", "absent"]) == [None, None]
    assert gateway.breaker.state is State.CLOSED
    await gateway.aclose()
