"""Distinct connections mode: GET or POST /graphql with `Accept: text/event-stream`, one operation a stream.

What happens before the stream opens is answered over HTTP, as GraphQL over
HTTP answers it: a malformed request (400, 413, 415, 408), a stream over the
caps (429) and an operation over the client's rate limit (429 with
Retry-After and `RATE_LIMITED`, `retryAfter`). A document that does not pass
(parse, validation, limits, variables) is, as the protocol asks, one `next`
event with its coded errors and `complete`, so that an EventSource can read
why. Then a query's result is one `next` and `complete`; a subscription's
results are `next` events until the client hangs up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send

from weathernote.fairuse import Admission, Identity
from weathernote.graphql import Context, Operations
from weathernote.graphql.errors import rate_limited_error
from weathernote.graphql.operations import Prepared
from weathernote.http.graphql_http import GraphQLParams, RequestError, read_operations
from weathernote.http.sse.gate import StreamGate
from weathernote.http.sse.operation import Running, StreamOperation
from weathernote.http.sse.protocol import refusal, refused
from weathernote.http.sse.stream import EventStream, StreamResponse
from weathernote.ops import requestlog
from weathernote.ops.requestlog import RequestInfo
from weathernote.ops.tracing import Tracer

ContextFactory = Callable[[Request, Identity], Context]


def payload_of(params: GraphQLParams) -> dict[str, Any]:
    """A GraphQL-over-HTTP request's operation as a streaming transport's payload."""
    return {
        "query": params.query,
        "variables": params.variables,
        "operationName": params.operation_name,
        "extensions": params.extensions,
    }


async def read_operation(request: Request, max_body_bytes: int, body_timeout: float) -> GraphQLParams:
    """The request's one operation (GET parameters or a JSON body); a batch has no place on an event stream."""
    operations, batched = await read_operations(request, 1, max_body_bytes, body_timeout)
    if batched:
        raise RequestError(400, "an event stream carries one operation, not a batch")
    return operations[0]


class DistinctStreams:
    """The endpoint of distinct connections: each request one operation, its results its own stream."""

    def __init__(
        self,
        operations: Operations,
        context_factory: ContextFactory,
        admission: Admission,
        gate: StreamGate,
        *,
        keepalive: float,
        max_body_bytes: int,
        body_timeout: float,
        tracer: Tracer | None = None,
    ) -> None:
        self.operations = operations
        self.tracer = tracer  # None: tracing is off
        self.context_factory = context_factory
        self.admission = admission
        self.gate = gate
        self.keepalive = keepalive
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def handle(self, request: Request) -> Response:
        info = requestlog.current.get() or RequestInfo(requestlog.new_request_id(), "sse")
        info.transport = "sse"  # the request's one line and metrics are this stream's
        try:
            params = await read_operation(request, self.max_body_bytes, self.body_timeout)
        except RequestError as exc:
            return refusal(exc.status, exc.message, exc.code, exc.headers)
        identity = self.admission.identity(request.client.host if request.client else None, request.headers)
        denied = self.gate.enter(identity)
        if denied is not None:
            return denied
        try:
            context = self.context_factory(request, identity)
            prepared = await self.operations.prepare(payload_of(params), context)
            headers: dict[str, str] = {}
            if isinstance(prepared, Prepared):
                decision, _ = await self.admission.check(identity, cost=prepared.cost, transport="sse")
                headers = self.admission.headers(decision)
                if not decision.allowed:
                    self.gate.leave(identity)
                    return refused(429, [rate_limited_error(decision.retry_after_seconds)], headers)
        except BaseException:
            self.gate.leave(identity)
            raise

        async def serve(receive: Receive, send: Send) -> None:
            await self._serve(receive, send, identity, context, info, prepared, headers)

        return StreamResponse(serve)

    async def _serve(
        self,
        receive: Receive,
        send: Send,
        identity: Identity,
        context: Context,
        info: RequestInfo,
        prepared: Prepared | list[dict[str, Any]],
        headers: dict[str, str],
    ) -> None:
        stream = EventStream(send, self.keepalive)
        running = Running(self.operations, stream, distinct=True, record=False, tracer=self.tracer)
        self.gate.add(stream)
        try:
            await stream.open((name.lower().encode(), value.encode()) for name, value in headers.items())
            operation = StreamOperation(stream, None, context, info)
            if isinstance(prepared, Prepared):
                running.start(operation, prepared)
            else:
                await running.refuse(operation, prepared)
            await stream.until_closed(receive)
        finally:
            await running.stop_all()
            self.gate.discard(stream)
            self.gate.leave(identity)
            await stream.close()
