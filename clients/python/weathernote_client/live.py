"""Live updates over `graphql-transport-ws`, through dropped sockets and server restarts.

One watch is one WebSocket and one subscription. When the socket drops, the
server closes it (1001 when an instance shuts down) or the server ends the
stream, the watch connects again after a jittered backoff and subscribes again,
for as long as it is iterated. The server then sends the cell's value at once,
usually the one delivered last: a `Watermark` keeps any update from reaching
the caller twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from weathernote_client.errors import (
    PERSISTED_QUERY_NOT_FOUND,
    RateLimited,
    ServerError,
    UpstreamUnavailable,
    WeatherNoteClientError,
    error_from_graphql,
)
from weathernote_client.operations import Operation
from weathernote_client.retry import RetryPolicy

log = logging.getLogger(__name__)

GRAPHQL_TRANSPORT_WS = Subprotocol("graphql-transport-ws")
# closes that say this client broke the protocol: connecting again would only repeat it
FATAL_CLOSE_CODES = frozenset({4400, 4401, 4406, 4409, 4429})
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# values that say how the server answered, not what the weather is
_DELIVERY_FIELDS = frozenset({"cached", "stale"})


class Versioned(Protocol):
    """A result that says when the server fetched it."""

    @property
    def fetched_at(self) -> dt.datetime | None: ...


T = TypeVar("T", bound=Versioned)


@dataclass(frozen=True, slots=True)
class LiveOperation(Generic[T]):
    """A subscription operation, the root field it selects and how to read that field."""

    operation: Operation
    root: str
    parse: Callable[[Any], T]


class Watermark:
    """The update delivered last. A later `fetchedAt` is new; an earlier one never is; an equal one is
    new only with other values (a forecast's `fetchedAt` is its oldest part's, which another part's
    refresh leaves as it was)."""

    def __init__(self) -> None:
        self._fetched_at: dt.datetime | None = None
        self._values: str | None = None

    def advance(self, fetched_at: dt.datetime | None, fields: Mapping[str, Any]) -> bool:
        """Whether this update is new; if so it becomes the last one."""
        values = json.dumps({k: v for k, v in fields.items() if k not in _DELIVERY_FIELDS}, sort_keys=True)
        if self._values is not None:
            if fetched_at is not None and self._fetched_at is not None and fetched_at < self._fetched_at:
                return False
            if fetched_at == self._fetched_at and values == self._values:
                return False
        self._fetched_at, self._values = fetched_at, values
        return True


class _Restart(Exception):
    """Leave this connection and start again after `delay` seconds (None: the policy's backoff)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


async def watch(
    url: str,
    headers: Mapping[str, str],
    live: LiveOperation[T],
    variables: Mapping[str, Any],
    policy: RetryPolicy,
) -> AsyncGenerator[T, None]:
    """Every new value of a subscription, across reconnects, until the caller stops iterating.

    Raises what retrying cannot mend: `BadInput`, `OperationRefused`, a protocol close,
    a result that does not read as `live.parse` expects.
    """
    watermark = Watermark()
    retries = 0
    while True:
        try:
            socket = await connect(
                url,
                subprotocols=[GRAPHQL_TRANSPORT_WS],
                additional_headers=dict(headers),
                open_timeout=HANDSHAKE_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
            )
            try:
                session = _Session(socket, live.operation, variables)
                await session.open()
                while True:
                    data = await session.next_data()
                    retries = 0
                    fields = data.get(live.root)
                    value = live.parse(fields)
                    if isinstance(fields, Mapping) and watermark.advance(value.fetched_at, fields):
                        yield value
            finally:
                await socket.close()  # 1000, also when the caller stops iterating or cancels
        except _Restart as restart:
            delay = policy.backoff(retries) if restart.delay is None else restart.delay
            reason = restart.reason
        except ConnectionClosed as closed:
            hint = _start_refused(closed)
            if hint is not None:  # a reconnect storm: the server says when to come back
                delay = policy.after(hint)
                reason = "the server paces connection starts"
            elif closed.rcvd is not None and closed.rcvd.code in FATAL_CLOSE_CODES:
                raise WeatherNoteClientError(
                    f"the server closed the connection: {closed.rcvd.code} {closed.rcvd.reason}"
                ) from None
            else:
                delay = policy.backoff(retries)
                reason = f"connection closed ({closed.rcvd.code if closed.rcvd else 'no close frame'})"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            delay = policy.backoff(retries)
            reason = f"cannot connect ({exc or type(exc).__name__})"
        log.info("%s: %s; subscribing again in %.1f s", url, reason, delay)
        retries += 1
        await asyncio.sleep(delay)


def _start_refused(closed: ConnectionClosed) -> float | None:
    """The seconds a 4429 close asks to wait when it paces starts (its reason `{"retryAfter": s}`);
    None for any other close (a 4429 for a second connection_init stays fatal)."""
    if closed.rcvd is None or closed.rcvd.code != 4429:
        return None
    try:
        retry_after = json.loads(closed.rcvd.reason)["retryAfter"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or not 0 <= retry_after <= 3600:
        return None
    return float(retry_after)


class _Session:
    """One connection's protocol: init, subscribe (by hash; by text when the server asks), data."""

    def __init__(self, socket: ClientConnection, operation: Operation, variables: Mapping[str, Any]) -> None:
        self.socket = socket
        self.operation = operation
        self.variables = dict(variables)
        self.subscription = 0
        self.with_text = False

    async def open(self) -> None:
        await self._send({"type": "connection_init", "payload": {}})
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            ack = await self._receive()
        if ack["type"] != "connection_ack":
            raise _Restart(f"expected connection_ack, got {ack['type']}")
        await self._subscribe()

    async def next_data(self) -> Mapping[str, Any]:
        """The next result's `data`; resubscribes by text if the server does not know the hash."""
        while True:
            message = await self._receive()
            if message.get("id") != str(self.subscription):
                continue  # a late message of the subscription this one replaced
            payload = message.get("payload")
            if message["type"] == "complete":
                raise _Restart("the server completed the subscription")
            if message["type"] == "error":
                await self._refused(payload if isinstance(payload, list) else [])
            elif message["type"] == "next" and isinstance(payload, Mapping):
                errors = payload.get("errors")
                if errors:
                    await self._refused(errors if isinstance(errors, list) else [])
                    continue
                data = payload.get("data")
                if not isinstance(data, Mapping):
                    raise ServerError(f"unexpected subscription payload: {payload!r}")
                return data

    async def _refused(self, errors: list[Any]) -> None:
        """Subscribe again by text, or start again later, or raise: by the errors' code."""
        error = error_from_graphql(errors)
        if error.code == PERSISTED_QUERY_NOT_FOUND and not self.with_text:
            self.with_text = True
            await self._subscribe()
        elif isinstance(error, RateLimited):
            raise _Restart("rate limited", error.retry_after)
        elif isinstance(error, UpstreamUnavailable | ServerError):
            raise _Restart(error.message)
        else:
            raise error

    async def _subscribe(self) -> None:
        self.subscription += 1
        payload: dict[str, Any] = {
            "operationName": self.operation.name,
            "variables": self.variables,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": self.operation.sha256}},
        }
        if self.with_text:
            payload["query"] = self.operation.body
        await self._send({"type": "subscribe", "id": str(self.subscription), "payload": payload})

    async def _receive(self) -> dict[str, Any]:
        """The next message that is not a ping or pong (pings are answered)."""
        while True:
            try:
                message = json.loads(await self.socket.recv())
            except ValueError:
                raise _Restart("a message that is not JSON") from None
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise _Restart("a message without a type")
            if message["type"] == "ping":
                await self._send({"type": "pong"})
            elif message["type"] != "pong":
                return message

    async def _send(self, message: Mapping[str, Any]) -> None:
        await self.socket.send(json.dumps(message, separators=(",", ":")))
