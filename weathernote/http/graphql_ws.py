"""GraphQL over WebSocket: the `graphql-transport-ws` protocol and the legacy `graphql-ws`.

Our own handler rather than Strawberry's so that a refresh is rendered once per
cell and document and then only framed per subscriber (Strawberry executes
the selection again for every subscriber), and so that the payload's
`extensions` reach the operation. Documents the planner does not understand
still run through Strawberry's generic subscription execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError, OperationDefinitionNode, OperationType
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry import Schema
from strawberry.types import ExecutionResult

from weathernote import metrics, requestlog
from weathernote.errors import BadRequest
from weathernote.graphql.context import Context, check_days
from weathernote.graphql.errors import BAD_REQUEST, error_dict, internal_error, upstream_unavailable
from weathernote.graphql.fastpath import Bound, PayloadRenderer, Plan, Planner
from weathernote.graphql.persisted import PersistedQueries, PersistedQueryError
from weathernote.http.admission import Admission, rate_limited_error
from weathernote.http.observability import access_log
from weathernote.requestlog import RequestInfo
from weathernote.service import UpstreamUnavailable

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


Emit = Callable[[str], Awaitable[None]]


class Operations:
    """Runs one operation of a WebSocket connection, whatever the protocol."""

    def __init__(
        self, schema: Schema, planner: Planner, renderer: PayloadRenderer, persisted: PersistedQueries
    ) -> None:
        self.schema = schema
        self.planner = planner
        self.renderer = renderer
        self.persisted = persisted

    async def run(self, payload: dict[str, Any], context: Context, emit: Emit) -> list[dict[str, Any]] | None:
        """Emit each result; return errors (GraphQL formatted, coded) if the operation never started."""
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
                await self._stream_planned(plan, bound, arguments[0], context, emit)
                return None
        return await self._run_generic(query, operation, variables, operation_name, context, emit)

    async def _stream_planned(
        self, plan: Plan, bound: Bound, arguments: dict[str, Any], context: Context, emit: Emit
    ) -> None:
        assert context.live is not None
        cell, parts = bound.reads[0]
        try:
            async with context.live.watch(cell, parts) as watch:
                async for readings in watch:
                    await emit(await self.renderer.render(plan, bound, arguments, readings))
        except UpstreamUnavailable:
            error = upstream_unavailable()
            error.path = [plan.reads[0].response_key]
            await emit(orjson.dumps({"data": None, "errors": [error.formatted]}).decode())

    async def _run_generic(
        self,
        query: str,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
        operation_name: str | None,
        context: Context,
        emit: Emit,
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
                await emit(_payload(result))
            return None
        result = await self.schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
        await emit(_payload(result))
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
_pending: set[asyncio.Future[None]] = set()


class Connection:
    """One WebSocket connection speaking one of the two protocols."""

    __slots__ = (
        "_timer",
        "acknowledged",
        "admission",
        "connection_params",
        "context_factory",
        "init_received",
        "legacy",
        "limits",
        "operations",
        "protocol",
        "tasks",
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
        self.tasks: dict[str, asyncio.Task[None]] = {}
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
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the socket closed under us (e.g. uvicorn refused a frame): nothing to answer
        finally:
            self._timer.cancel()
            await self._cancel_operations()

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
            task = self.tasks.pop(operation_id, None) if isinstance(operation_id, str) else None
            if task:
                task.cancel()
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
        if operation_id in self.tasks:
            if not self.legacy:
                raise ProtocolError(4409, "subscriber for that id already exists")
            # The legacy protocol has no close code for it: refuse this start, keep the running one.
            await self.send_error(operation_id, [error_dict("Subscriber for this id already exists", BAD_REQUEST)])
            return
        if len(self.tasks) >= self.limits.max_operations:
            await self.send_error(operation_id, [error_dict("Subscription limit reached", BAD_REQUEST)])
            return
        decision, _ = await self.admission.check(self.websocket, transport="ws")
        if not decision.allowed:
            await self.send_error(operation_id, [rate_limited_error(decision)])
            return
        task = asyncio.create_task(self._operation(operation_id, payload))
        self.tasks[operation_id] = task

    async def _operation(self, operation_id: str, payload: dict[str, Any]) -> None:
        data_type = "data" if self.legacy else "next"
        id_json = orjson.dumps(operation_id).decode()
        prefix = f'{{"id":{id_json},"type":"{data_type}","payload":'

        async def emit(result: str) -> None:
            await self.send_text(prefix + result + "}")

        info = RequestInfo(requestlog.new_request_id(), "ws")
        requestlog.current.set(info)  # this task's own context
        metrics.SUBSCRIPTIONS.inc()
        try:
            context = self.context_factory(self.websocket)
            errors = await self.operations.run(payload, context, emit)
            if errors is not None:
                info.outcome = "bad_request"
                await self.send_error(operation_id, errors)
            else:
                await self.send({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            raise
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket went away; cleanup happens in serve()
        except Exception:
            info.outcome = "error"
            log.exception("operation %s failed", operation_id)
            await self.send_error(operation_id, [dict(internal_error().formatted)])
        finally:
            metrics.SUBSCRIPTIONS.dec()
            metrics.REQUESTS.labels("ws", info.operation or "other", info.outcome).inc()
            access_log.write("operation", info.fields())
            if self.tasks.get(operation_id) is asyncio.current_task():
                del self.tasks[operation_id]

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
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code, reason)

    def _init_deadline(self) -> None:
        if not self.init_received:
            self._background(self.close(4408, "connection initialisation timeout"))

    def _schedule_keepalive(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.limits.keepalive_interval, self._keepalive)

    def _keepalive(self) -> None:
        self._background(self._send_keepalive())
        self._schedule_keepalive()

    async def _send_keepalive(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.send(_KEEPALIVE[self.legacy])

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        _pending.add(task)  # a strong reference until it is done
        task.add_done_callback(_pending.discard)

    async def _cancel_operations(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        # awaited, so every subscription leaves the hub before the connection is gone
        await asyncio.gather(*tasks, return_exceptions=True)


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
