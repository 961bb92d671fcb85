"""One multiplexed connection to a single Redis server: every caller's commands pipelined on one socket.

redis-py checks a connection out of a pool for each call, then packs, sends and
parses through several layers: on a cached request that was about 45 % of the
process's CPU. Here all callers of a process share one socket. A call packs its
commands with hiredis and waits for as many replies; what every caller sent
during one turn of the event loop goes out in one write (a system call costs
more here than a request's own work). Redis answers a connection in order, so
the hiredis reader hands each reply to the oldest caller still waiting:
concurrent requests pipeline each other, and nothing is checked out or returned.

A reply later than `timeout` means the connection is stuck (a stalled server,
a dropped route): it is dropped, every waiting call fails with redis-py's
`TimeoutError`, and the next call dials again. A call cancelled meanwhile (its
request gone) leaves its replies to be read and discarded, so the order holds.

Only plain and TLS TCP URLs are handled (`redis://`, `rediss://` with the
`ssl_*` options); anything else (a Unix socket, other options) is left to
redis-py's client by the gateway, which owns the choice.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    InvalidResponse,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

Command = Sequence[str | bytes | int | float]

_SUPPORTED_OPTIONS = frozenset(
    {
        "host",
        "port",
        "username",
        "password",
        "db",
        "connection_class",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_certfile",
        "ssl_keyfile",
    }
)
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class _Waiter:
    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


def _pack(command: Command) -> bytes:
    # hiredis's stubs type its argument as a 1-tuple; it takes any number of arguments
    packed: bytes = hiredis.pack_command(cast(Any, tuple(command)))
    return packed


def _reply(value: Any) -> Any:
    """redis-py's exception class for the errors the gateway tells apart by class."""
    if isinstance(value, ResponseError) and str(value).startswith("NOSCRIPT"):
        return NoScriptError(str(value))
    return value


class _Protocol(asyncio.Protocol):
    """The socket's side: writes packed commands, matches replies to their callers in order."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._lost: Exception | None = None
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def send(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if self.closed or self.transport is None:
            future.set_exception(ConnectionError("connection to Redis closed"))
            return future
        now = self.loop.time()
        self.waiters.append(_Waiter(future, len(commands), now))
        if self._timer is None:
            self._timer = self.loop.call_at(now + self.timeout, self._check_overdue)
        if not self._unsent:
            self.loop.call_soon(self._flush)
        self._unsent.extend([_pack(command) for command in commands])
        return future

    def _flush(self) -> None:
        """Everything sent during one turn of the loop, in one write (a system call costs more than a request)."""
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiters[0]
                waiter.replies.append(_reply(reply))
                if len(waiter.replies) == waiter.expected:
                    self.waiters.popleft()
                    if not waiter.future.done():  # done: its caller was cancelled
                        waiter.future.set_result(waiter.replies)
        except (InvalidResponse, IndexError) as exc:  # a reply nobody asked for is as bad as garbage
            self._abort(InvalidResponse(f"Redis sent an invalid reply ({type(exc).__name__})"))

    def _check_overdue(self) -> None:
        self._timer = None
        if not self.waiters or self.closed:
            return
        oldest = self.waiters[0].sent_at
        if self.loop.time() - oldest >= self.timeout:
            self._abort(RedisTimeoutError(f"no reply from Redis within {self.timeout} s"))
        else:
            self._timer = self.loop.call_at(oldest + self.timeout, self._check_overdue)

    def _abort(self, error: Exception) -> None:
        self._lost = error
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, failing every waiter
        else:
            self.connection_lost(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = self._lost or ConnectionError(f"connection to Redis lost ({exc or 'closed by the server'})")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class MultiplexedConnection:
    """One socket to a single Redis server, shared by every caller of the process.

    `execute` sends commands in one write and returns their replies in order:
    an error about one command is its reply (a `ResponseError`), not raised.
    A lost or stuck connection fails its waiting calls with redis-py's
    `ConnectionError` or `TimeoutError`, which the gateway maps like any other.
    """

    def __init__(self, url: str, timeout: float) -> None:
        options = cast(dict[str, Any], parse_url(url))
        if not _SUPPORTED_OPTIONS.issuperset(options) or "host" not in options:
            raise ValueError("only redis:// and rediss:// URLs to a TCP host are multiplexed")
        self.host: str = options["host"]
        self.port: int = int(options.get("port") or 6379)
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.db = int(options.get("db") or 0)
        self.ssl = _ssl_context(options) if options.get("connection_class") is SSLConnection else None
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @staticmethod
    def supports(url: str) -> bool:
        try:
            options = parse_url(url)
        except ValueError:
            return False
        return "host" in options and _SUPPORTED_OPTIONS.issuperset(options)

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to `commands`, sent in one write on the shared connection."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(commands)

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent callers share one dial
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.timeout):
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self.timeout),
                        self.host,
                        self.port,
                        ssl=self.ssl,
                        server_hostname=self.host if self.ssl else None,
                    )
                    await self._handshake(protocol)
            except OSError as exc:
                raise ConnectionError(f"cannot connect to Redis ({exc})") from exc
            except TimeoutError as exc:
                raise RedisTimeoutError(f"no connection to Redis within {self.timeout} s") from exc
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        commands: list[Command] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if not commands:
            return
        for reply in await protocol.send(commands):
            if isinstance(reply, ResponseError):
                protocol.close()
                if str(reply).startswith(("WRONGPASS", "NOAUTH", "ERR invalid password")):
                    raise AuthenticationError(str(reply))
                raise reply

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a `rediss://` URL, as redis-py reads them: certificates checked unless told not to."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    requirement = options.get("ssl_cert_reqs") or "required"
    verify = _CERT_REQS.get(str(requirement).lower(), ssl.CERT_REQUIRED)
    check_hostname = options.get("ssl_check_hostname")
    context.check_hostname = verify != ssl.CERT_NONE and check_hostname not in (False, "false", "False", "0")
    context.verify_mode = verify
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context
