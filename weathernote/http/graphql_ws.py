"""GraphQL over WebSocket: the `graphql-transport-ws` protocol and the legacy `graphql-ws`.

Our own handler rather than Strawberry's so that a refresh is rendered once per
cell and document and then only framed per subscriber (Strawberry executes
the selection again for every subscriber), and so that the payload's
`extensions` reach the operation. A planned subscription, once its first
payload is sent, is served by callbacks (`fanout.Feed`): no task waits for it.
Documents the planner does not understand still run through Strawberry's
generic subscription execution, in a task each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from graphql import GraphQLError, OperationDefinitionNode, OperationType
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry import Schema
from strawberry.types import ExecutionResult

from weathernote.cache.service import UpstreamUnavailable
from weathernote.errors import BadRequest
from weathernote.fairuse.admission import Admission, rate_limited_error
from weathernote.graphql.context import Context, check_days
from weathernote.graphql.documents.persisted import PersistedQueries, PersistedQueryError
from weathernote.graphql.errors import BAD_REQUEST, error_dict, internal_error, upstream_unavailable
from weathernote.graphql.fastpath import Bound, PayloadRenderer, Plan, Planner
from weathernote.http.fanout import Feed, Feeds, run_now
from weathernote.http.observability import access_log
from weathernote.ops import metrics, requestlog
from weathernote.ops.requestlog import RequestInfo

log = logging.getLogger(__name__)

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
GRAPHQL_WS = "graphql-ws"
SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)


@dataclass(frozen=True, slots=True)
class Limits:
    connection_init_timeout: float = 10.0
    keepalive_interval: float = 15.0
    max_operations: int = 100


class ProtocolError(BadRequest):
    """A message that breaks the WebSocket sub-protocol: the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Emitter(Protocol):
    """Where one operation's results go: `emit` writes one and waits; `push` (a feed's outlet) never waits."""

    async def emit(self, payload: str) -> None: ...

    def push(self, payload: str) -> None: ...


class Operations:
    """Runs one operation of a WebSocket connection, whatever the protocol."""

    def __init__(
        self, schema: Schema, planner: Planner, renderer: PayloadRenderer, persisted: PersistedQueries
    ) -> None:
        self.schema = schema
        self.planner = planner
        self.feeds = Feeds(renderer)
        self.persisted = persisted

    async def run(
        self, payload: dict[str, Any], context: Context, emitter: Emitter
    ) -> list[dict[str, Any]] | Feed | None:
        """Emit each result, or the first one and return the feed that pushes the rest (`leave` it when done).

        Errors (GraphQL formatted, coded) are returned if the operation never started.
        """
        query = payload.get("query")
        variables = payload.get("variables") or {}
        operation_name = payload.get("operationName")
        extensions = payload.get("extensions")
        if (
            not (query is None or isinstance(query, str))
            or not isinstance(variables, dict)
            or not (operation_name is None or isinstance(operation_name, str))
            or not (extensions is None or isinstance(extensions, dict))
        ):
            return [
                error_dict("subscribe payload: `query` a string, `variables` and `extensions` objects", BAD_REQUEST)
            ]
        try:
            query, _ = await self.persisted.resolve(query, extensions)
        except PersistedQueryError as exc:
            return [error_dict(exc.message, exc.code or BAD_REQUEST)]
        if query is None:
            return [error_dict("subscribe payload needs a `query` (or a known persisted query hash)", BAD_REQUEST)]
        operation, errors = self.planner.operation(query, operation_name, variables)
        if operation is None:
            return [dict(error.formatted) for error in errors]
        plan = self.planner.plan(query, operation_name)
        requestlog.note(operation=plan.label if plan else "other")
        if plan is not None and plan.is_subscription:
            bound = plan.bind(variables, context.grid)
            arguments = plan.arguments(self.schema._schema, bound.variables) if bound else None
            if bound is not None and arguments is not None and _valid_days(arguments[0]):
                return await self._subscribe_planned(plan, bound, arguments[0], context, emitter)
        return await self._run_generic(query, operation, variables, operation_name, context, emitter)

    async def _subscribe_planned(
        self, plan: Plan, bound: Bound, arguments: dict[str, Any], context: Context, emitter: Emitter
    ) -> Feed | None:
        assert context.live is not None
        feed = await self.feeds.join(plan, bound, arguments, context.live)
        try:
            readings = await feed.read()  # the feed listens already: a refresh landing meanwhile is not lost
            await emitter.emit(await feed.render(readings))
        except UpstreamUnavailable:
            await self.feeds.leave(feed, None)
            error = upstream_unavailable()
            error.path = [plan.reads[0].response_key]
            await emitter.emit(orjson.dumps({"data": None, "errors": [error.formatted]}).decode())
            return None
        except BaseException:
            await self.feeds.leave(feed, None)
            raise
        feed.add(emitter, readings)
        return feed

    async def leave(self, feed: Feed, emitter: Emitter) -> None:
        """The end of a subscription `run` handed to a feed."""
        await self.feeds.leave(feed, emitter)

    async def _run_generic(
        self,
        query: str,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
        operation_name: str | None,
        context: Context,
        emitter: Emitter,
    ) -> list[dict[str, Any]] | None:
        """Strawberry's own execution, of a document the Planner checked but could not plan."""
        context.document, _ = self.planner.checked(query)
        if operation.operation is OperationType.SUBSCRIPTION:
            stream = await self.schema.subscribe(
                query, variable_values=variables, context_value=context, operation_name=operation_name
            )
            if isinstance(stream, ExecutionResult):
                return _formatted(stream)
            async for result in stream:
                await emitter.emit(_payload(result))
            return None
        result = await self.schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
        await emitter.emit(_payload(result))
        return None


def _valid_days(arguments: dict[str, Any]) -> bool:
    """The resolver's own check: days it refuses take the generic path, which answers them."""
    days = arguments.get("days")
    if days is None:
        return True
    try:
        check_days(days)
    except GraphQLError:
        return False
    return True


def _formatted(result: ExecutionResult) -> list[dict[str, Any]]:
    return [dict(error.formatted) for error in result.errors or ()]


def _payload(result: ExecutionResult) -> str:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return orjson.dumps(body).decode()


_KEEPALIVE = {True: {"type": "ka"}, False: {"type": "ping"}}  # by legacy
_GONE = (WebSocketDisconnect, RuntimeError, OSError)  # the socket closed under us: nothing to answer


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
        await self.connection.send_text(self.frame(payload))

    def push(self, payload: str) -> None:
        self.connection.push(self, payload)


class Connection:
    """One WebSocket connection speaking one of the two protocols.

    Frames a feed pushes are written at once, from the callback that brought
    them; while the socket cannot take more, each operation keeps only its
    latest frame (`_waiting`), written when the socket drains. So a reader that
    stalls never grows memory nor delays anyone else, and is sent the latest.
    """

    __slots__ = (
        "_timer",
        "_waiting",
        "_writing",
        "acknowledged",
        "admission",
        "connection_params",
        "context_factory",
        "init_received",
        "legacy",
        "limits",
        "operations",
        "protocol",
        "running",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        protocol: str,
        operations: Operations,
        context_factory: Callable[[WebSocket], Context],
        limits: Limits,
        admission: Admission,
    ) -> None:
        self.websocket = websocket
        self.admission = admission
        self.protocol = protocol
        self.legacy = protocol == GRAPHQL_WS
        self.operations = operations
        self.context_factory = context_factory
        self.limits = limits
        self.acknowledged = False
        self.init_received = False
        # by id: the task of an operation starting or running, or the operation a feed serves
        self.running: dict[str, asyncio.Task[None] | _Operation] = {}
        self.connection_params: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle
        self._writing: asyncio.Task[None] | None = None  # a write waiting for the socket to drain
        self._waiting: dict[_Operation, str] | None = None  # meanwhile, each operation's latest payload

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
        except _GONE:
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
            if self.init_received:
                raise ProtocolError(4429, "too many initialisation requests")
            self.init_received = True
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
        decision, _ = await self.admission.check(self.websocket, transport="ws")
        if not decision.allowed:
            await self.send_error(operation_id, [rate_limited_error(decision)])
            return
        operation = _Operation(self, operation_id)
        self.running[operation_id] = asyncio.create_task(self._operation(operation, payload))

    async def _operation(self, operation: _Operation, payload: dict[str, Any]) -> None:
        """The operation's task: the whole operation, or until a feed serves it."""
        info = operation.info
        requestlog.current.set(info)  # this task's own context
        metrics.SUBSCRIPTIONS.inc()
        try:
            context = self.context_factory(self.websocket)
            result = await self.operations.run(payload, context, operation)
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
        except _GONE:
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
        if self._waiting:
            self._waiting.pop(operation, None)
        await self.operations.leave(operation.feed, operation)
        self._finish(operation)

    @staticmethod
    def _finish(operation: _Operation) -> None:
        info = operation.info
        metrics.SUBSCRIPTIONS.dec()
        metrics.REQUESTS.labels("ws", info.operation or "other", info.outcome).inc()
        access_log.write("operation", info.fields())

    def push(self, operation: _Operation, payload: str) -> None:
        """Write `operation`'s frame now, or keep it (latest wins) while an earlier write waits for the socket."""
        if self._writing is None:
            self._write(operation.frame(payload))
        else:
            if self._waiting is None:
                self._waiting = {}
            self._waiting[operation] = payload

    def _write(self, text: str) -> None:
        try:
            writing = run_now(self.send_text(text))
        except _GONE:
            return  # closed: serve() ends the operations
        if writing is not None:
            self._writing = writing
            writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Task[None]) -> None:
        self._writing = None
        if writing.cancelled() or writing.exception() is not None:
            self._waiting = None  # closed: nothing more is written
        else:  # each write that completes at once leaves the socket free for the next
            while self._waiting and self._writing is None:
                operation = next(iter(self._waiting))
                self._write(operation.frame(self._waiting.pop(operation)))

    async def send_error(self, operation_id: str, errors: list[dict[str, Any]]) -> None:
        payload: Any = errors if not self.legacy else (errors[0] if len(errors) == 1 else {"errors": errors})
        await self.send({"type": "error", "id": operation_id, "payload": payload})

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(orjson.dumps(message).decode())

    async def send_text(self, text: str) -> None:
        # No lock: uvicorn writes each frame whole, so concurrent sends never interleave.
        await self.websocket.send_text(text)

    async def close(self, code: int, reason: str = "") -> None:
        if self.websocket.application_state is WebSocketState.CONNECTED:
            # a close frame's reason holds at most 123 bytes; ours never echo client input
            reason = reason.encode()[:123].decode(errors="ignore")
            with contextlib.suppress(*_GONE):
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
        with contextlib.suppress(*_GONE):
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


def negotiate(websocket: WebSocket) -> str | None:
    """The first protocol in the client's order that we speak."""
    for offered in websocket.scope.get("subprotocols", []):
        if offered in SUBPROTOCOLS:
            return str(offered)
    return None


class GraphQLWebSocket:
    """The WebSocket endpoint at /graphql; tracks connections so shutdown can close them with 1001."""

    def __init__(
        self,
        operations: Operations,
        context_factory: Callable[[WebSocket], Context],
        limits: Limits,
        admission: Admission,
    ) -> None:
        self.operations = operations
        self.context_factory = context_factory
        self.limits = limits
        self.admission = admission
        self.connections: set[Connection] = set()
        self.accepting = True

    async def handle(self, websocket: WebSocket) -> None:
        protocol = negotiate(websocket)
        if not self.accepting:
            await websocket.close(1001)
            return
        await websocket.accept(subprotocol=protocol)
        if protocol is None:
            await websocket.close(4406, "subprotocol not acceptable")
            return
        connection = Connection(websocket, protocol, self.operations, self.context_factory, self.limits, self.admission)
        self.connections.add(connection)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        try:
            await connection.serve()
        finally:
            metrics.WEBSOCKET_CONNECTIONS.dec()
            self.connections.discard(connection)

    async def close_all(self, code: int = 1001) -> None:
        """Going away: clients reconnect to another instance."""
        self.accepting = False
        await asyncio.gather(
            *(connection.close(code, "server shutting down") for connection in list(self.connections)),
            return_exceptions=True,
        )
