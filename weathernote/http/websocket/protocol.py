"""One WebSocket connection speaking `graphql-transport-ws` or the legacy `graphql-ws`.

Our own handler rather than Strawberry's so that a refresh is rendered once per
cell and document and then only framed per subscriber (Strawberry executes
the selection again for every subscriber), and so that the payload's
`extensions` reach the operation. Each message is checked against the
protocol; every operation is admitted like a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketState

from weathernote.errors import BadRequest
from weathernote.fairuse import Admission, Identity
from weathernote.graphql import Context, Operations
from weathernote.graphql.errors import BAD_REQUEST, error_dict, internal_error, rate_limited_error
from weathernote.graphql.operations import Prepared
from weathernote.http.observability import access_log, handshake_parent, stream_operation
from weathernote.http.websocket.writer import GONE, FrameWriter
from weathernote.live import Feed
from weathernote.ops import metrics, requestlog
from weathernote.ops.requestlog import RequestInfo
from weathernote.ops.tracing import Tracer
from weathernote.tasks import run_now

log = logging.getLogger(__name__)

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)
_KEEPALIVE = {True: {"type": "ka"}, False: {"type": "ping"}}  # by legacy

ContextFactory = Callable[[WebSocket, Identity], Context]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do and how long it may take."""

    connection_init_timeout: float = 10.0
    keepalive_interval: float = 15.0
    max_operations: int = 100
    max_connections: int = 16384  # per process
    max_connections_per_address: int = 256  # per address (IPv6: per prefix) and process


def retry_reason(seconds: float) -> str:
    """The close reason of a start refused for now: machine-readable, well under the 123-byte limit."""
    return orjson.dumps({"code": "RATE_LIMITED", "retryAfter": math.ceil(seconds * 10) / 10}).decode()


class ProtocolError(BadRequest):
    """A message that breaks the WebSocket sub-protocol: the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Operation:
    """One operation of a connection: its results framed with its id; a feed's outlet once one serves it."""

    __slots__ = ("connection", "feed", "id", "info", "prefix")

    def __init__(self, connection: Connection, operation_id: str) -> None:
        self.connection = connection
        self.id = operation_id
        data_type = "data" if connection.legacy else "next"
        self.prefix = f'{{"id":{orjson.dumps(operation_id).decode()},"type":"{data_type}","payload":'
        self.info = RequestInfo(requestlog.new_request_id(), "ws")
        self.feed: Feed | None = None

    def frame(self, payload: str) -> str:
        return self.prefix + payload + "}"

    async def emit(self, payload: str) -> None:
        await self.connection.writer.send_text(self.frame(payload))

    def push(self, payload: str) -> None:
        self.connection.writer.push(self, payload)


class Connection:
    """One WebSocket connection: its messages, its operations and its timers."""

    __slots__ = (
        "_timer",
        "acknowledged",
        "admission",
        "connection_params",
        "context",
        "identity",
        "init_received",
        "legacy",
        "limits",
        "operations",
        "parent",
        "running",
        "tracer",
        "websocket",
        "writer",
    )

    def __init__(
        self,
        websocket: WebSocket,
        protocol: str,
        operations: Operations,
        context_factory: ContextFactory,
        limits: Limits,
        admission: Admission,
        identity: Identity,
        tracer: Tracer | None = None,
    ) -> None:
        self.websocket = websocket
        self.tracer = tracer  # traced: each operation is a span, under the handshake's caller's trace if it sent one
        self.parent = handshake_parent(tracer, websocket.headers)
        self.writer = FrameWriter(websocket)
        self.admission = admission
        self.identity = identity
        self.legacy = protocol == GRAPHQL_WS
        self.operations = operations
        self.context = context_factory(websocket, identity)
        self.limits = limits
        self.acknowledged = False
        self.init_received = False
        # by id: the task of an operation starting or running, or the operation a feed serves
        self.running: dict[str, asyncio.Task[None] | _Operation] = {}
        self.connection_params: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle

    async def serve(self) -> None:
        # Timers rather than tasks: at tens of thousands of idle connections,
        # every task per connection shows in memory.
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.limits.connection_init_timeout, self._init_deadline)
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    raise ProtocolError(4400, "binary frames are not part of the protocol")
                await self._dispatch(text)
        except ProtocolError as exc:
            await self.close(exc.code, exc.reason)
        except GONE:
            pass  # e.g. uvicorn refused a frame
        finally:
            self._timer.cancel()
            await self._end_operations()

    async def _dispatch(self, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolError(4400, "invalid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError(4400, "a message is an object with a string `type`")
        kind = message["type"]
        if kind == "connection_init":
            await self._init(message)
        elif kind == "ping" and not self.legacy:
            await self.send({"type": "pong"})
        elif kind == "pong" and not self.legacy:
            pass
        elif kind == ("start" if self.legacy else "subscribe"):
            await self._start(message)
        elif kind == ("stop" if self.legacy else "complete"):
            operation_id = message.get("id")
            running = self.running.pop(operation_id, None) if isinstance(operation_id, str) else None
            if isinstance(running, asyncio.Task):
                running.cancel()
            elif running is not None:
                await self._end(running)
        elif kind == "connection_terminate" and self.legacy:
            await self.close(1000, "terminated")
        else:
            raise ProtocolError(4400, "unexpected message type")

    async def _init(self, message: dict[str, Any]) -> None:
        if self.init_received:
            raise ProtocolError(4429, "too many initialisation requests")
        self.init_received = True
        wait = self.admission.pace_start("ws")
        if wait:
            # a reconnect storm: come back later (the reason carries when), rather than slow everyone
            raise ProtocolError(4429, retry_reason(wait))
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise ProtocolError(4400, "connection_init payload must be an object")
        self.connection_params = payload or {}
        await self.send({"type": "connection_ack"})
        self.acknowledged = True
        self._timer.cancel()
        if self.legacy:
            await self.send(_KEEPALIVE[self.legacy])  # legacy clients expect one right after the ack
        self._schedule_keepalive()

    async def _start(self, message: dict[str, Any]) -> None:
        if not self.acknowledged:
            raise ProtocolError(4401, "unauthorized: connection_init first")
        operation_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(operation_id, str) or not operation_id or not isinstance(payload, dict):
            raise ProtocolError(4400, "subscribe needs a string `id` and an object `payload`")
        if operation_id in self.running:
            if not self.legacy:
                raise ProtocolError(4409, "subscriber for that id already exists")
            # The legacy protocol has no close code for it: refuse this start, keep the running one.
            await self.send_error(operation_id, [error_dict("Subscriber for this id already exists", BAD_REQUEST)])
            return
        if len(self.running) >= self.limits.max_operations:
            await self.send_error(operation_id, [error_dict("Subscription limit reached", BAD_REQUEST)])
            return
        operation = _Operation(self, operation_id)
        token = requestlog.current.set(operation.info)
        try:
            prepared = await self.operations.prepare(payload, self.context)
            if isinstance(prepared, list):
                operation.info.outcome = "bad_request"
                metrics.SUBSCRIPTIONS.inc()
                self._finish(operation)
                await self.send_error(operation_id, prepared)
                return
            decision, _ = await self.admission.check(self.identity, cost=prepared.cost, transport="ws")
        finally:
            requestlog.current.reset(token)
        if not decision.allowed:
            await self.send_error(operation_id, [rate_limited_error(decision.retry_after_seconds)])
            return
        self.running[operation_id] = asyncio.create_task(self._operation(operation, prepared))

    async def _operation(self, operation: _Operation, prepared: Prepared) -> None:
        """The operation's task: the whole operation, or until a feed serves it."""
        info = operation.info
        requestlog.current.set(info)  # this task's own context
        metrics.SUBSCRIPTIONS.inc()
        try:
            with stream_operation(self.tracer, "ws", prepared, self.parent):
                result = await self.operations.run(prepared, self.context, operation)
            if isinstance(result, Feed):
                operation.feed = result
                self.running[operation.id] = operation  # from here on, callbacks serve it: this task ends
                return
            if result is not None:
                info.outcome = "bad_request"
                await self.send_error(operation.id, result)
            else:
                await self.send({"type": "complete", "id": operation.id})
        except asyncio.CancelledError:
            raise
        except GONE:
            return  # the socket went away; cleanup happens in serve()
        except Exception:
            info.outcome = "error"
            log.exception("operation %s failed", operation.id)
            await self.send_error(operation.id, [dict(internal_error().formatted)])
        finally:
            if operation.feed is None:
                self._finish(operation)
                if self.running.get(operation.id) is asyncio.current_task():
                    del self.running[operation.id]

    async def _end(self, operation: _Operation) -> None:
        """The end of an operation a feed serves."""
        assert operation.feed is not None
        self.writer.forget(operation)
        await self.operations.leave(operation.feed, operation, self.context)
        self._finish(operation)

    @staticmethod
    def _finish(operation: _Operation) -> None:
        info = operation.info
        metrics.SUBSCRIPTIONS.dec()
        metrics.REQUESTS.labels("ws", info.operation or "other", info.outcome).inc()
        access_log.write("operation", info.fields())

    async def send_error(self, operation_id: str, errors: list[dict[str, Any]]) -> None:
        payload: Any = errors if not self.legacy else (errors[0] if len(errors) == 1 else {"errors": errors})
        await self.send({"type": "error", "id": operation_id, "payload": payload})

    async def send(self, message: dict[str, Any]) -> None:
        await self.writer.send_text(orjson.dumps(message).decode())

    async def close(self, code: int, reason: str = "") -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            # a close frame's reason holds at most 123 bytes; ours never echo client input
            reason = reason.encode()[:123].decode(errors="ignore")
            with contextlib.suppress(*GONE):
                await self.websocket.close(code, reason)

    def _init_deadline(self) -> None:
        if not self.init_received:
            run_now(self.close(4408, "connection initialisation timeout"))

    def _schedule_keepalive(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.limits.keepalive_interval, self._keepalive)

    def _keepalive(self) -> None:
        run_now(self._send_keepalive())  # a task only if the socket cannot take it now
        self._schedule_keepalive()

    async def _send_keepalive(self) -> None:
        with contextlib.suppress(*GONE):
            await self.send(_KEEPALIVE[self.legacy])

    async def _end_operations(self) -> None:
        running = list(self.running.values())
        self.running.clear()
        tasks = [task for task in running if isinstance(task, asyncio.Task)]
        for task in tasks:
            task.cancel()
        # awaited, so every subscription leaves the hub before the connection is gone
        await asyncio.gather(*tasks, return_exceptions=True)
        for operation in running:
            if isinstance(operation, _Operation):
                await self._end(operation)
