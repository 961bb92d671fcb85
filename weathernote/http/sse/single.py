"""Single connection mode at /graphql/stream: one stream carries every operation of a reservation.

`PUT` reserves (201, the token as text/plain); `GET` or `POST` with
`Accept: text/event-stream` and the token (`X-GraphQL-Event-Stream-Token`, or
the `token` search parameter) opens the reservation's one stream; `GET` or
`POST` of a GraphQL request with the token and `extensions.operationId`
submits an operation (202; its results are `next` events on the stream,
`{"id", "payload"}`, then `complete`); `DELETE ?operationId=` stops one (200).
Problems are answered over HTTP as GraphQL over HTTP answers them: a
malformed request 400 (413, 415, 408), a document that does not pass 400
with its coded errors, an operation over the client's rate limit 429, an
unknown token 404, a second stream or a running id 409, over a cap 429.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send

from weathernote.fairuse import Admission, Identity
from weathernote.graphql import Operations
from weathernote.graphql.errors import rate_limited_error
from weathernote.graphql.operations import Prepared
from weathernote.http.graphql_http import RequestError, response_type
from weathernote.http.sse.distinct import ContextFactory, payload_of, read_operation
from weathernote.http.sse.gate import StreamGate
from weathernote.http.sse.operation import Running, StreamOperation, record
from weathernote.http.sse.protocol import (
    NO_STORE,
    OPERATION_ID,
    refusal,
    refused,
    token_of,
    wants_event_stream,
)
from weathernote.http.sse.reservations import Reservation, Reservations
from weathernote.http.sse.stream import EventStream, StreamResponse
from weathernote.ops import metrics, requestlog
from weathernote.ops.requestlog import RequestInfo
from weathernote.ops.tracing import Tracer

_NO_RESERVATION = "no such reservation: PUT /graphql/stream for a token, and send it with every request"


class SingleConnection:
    """The endpoint of single connections: reservations, their streams, their operations."""

    def __init__(
        self,
        operations: Operations,
        context_factory: ContextFactory,
        admission: Admission,
        gate: StreamGate,
        reservations: Reservations,
        *,
        keepalive: float,
        max_operations: int,
        max_body_bytes: int,
        body_timeout: float,
        tracer: Tracer | None = None,
    ) -> None:
        self.operations = operations
        self.tracer = tracer  # None: tracing is off
        self.context_factory = context_factory
        self.admission = admission
        self.gate = gate
        self.reservations = reservations
        self.keepalive = keepalive
        self.max_operations = max_operations
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def handle(self, request: Request) -> Response:
        identity = self.admission.identity(request.client.host if request.client else None, request.headers)
        if request.method == "PUT":
            return self._reserve(request, identity)
        if request.method == "DELETE":
            return await self._stop(request, identity)
        if wants_event_stream(request.headers.get("accept")):
            return self._open(request, identity)
        return await self._submit(request, identity)

    def _reserve(self, request: Request, identity: Identity) -> Response:
        accept = request.headers.get("accept", "*/*")
        if not any(media in accept for media in ("*/*", "text/*", "text/plain")):
            return refusal(406, "a reservation's token is text/plain")
        token = self.reservations.reserve(identity)
        if token is None:
            seconds = max(1, round(self.reservations.ttl))
            metrics.RATE_LIMITED.labels("sse", "connections").inc()
            return refused(429, [rate_limited_error(seconds)], {"Retry-After": str(seconds)})
        return Response(token, status_code=201, media_type="text/plain; charset=utf-8", headers=NO_STORE)

    def _open(self, request: Request, identity: Identity) -> Response:
        reservation = self.reservations.find(token_of(request), identity, adopt=True)
        if reservation is None:
            return refusal(404, _NO_RESERVATION)
        if reservation.streaming:
            return refusal(409, "a stream is open for this reservation already")
        denied = self.gate.enter(identity)
        if denied is not None:
            return denied
        reservation.streaming = True

        async def serve(receive: Receive, send: Send) -> None:
            await self._serve(receive, send, identity, reservation)

        return StreamResponse(serve)

    async def _serve(self, receive: Receive, send: Send, identity: Identity, reservation: Reservation) -> None:
        stream = EventStream(send, self.keepalive)
        running = Running(self.operations, stream, distinct=False, record=True, tracer=self.tracer)
        self.reservations.attach(reservation, stream, running)
        self.gate.add(stream)
        try:
            await stream.open()
            pending, reservation.pending = reservation.pending, {}
            for operation_id, (prepared, context, info) in pending.items():
                running.start(StreamOperation(stream, operation_id, context, info), prepared)
            await stream.until_closed(receive)
        finally:
            await running.stop_all()
            self.reservations.release(reservation)
            self.gate.discard(stream)
            self.gate.leave(identity)
            await stream.close()

    async def _submit(self, request: Request, identity: Identity) -> Response:
        reservation = self.reservations.find(token_of(request), identity, adopt=True)
        if reservation is None:
            return refusal(404, _NO_RESERVATION)
        if response_type(request.headers.get("accept")) is None:
            return refusal(406, "the answer to a submitted operation is application/json")
        try:
            params = await read_operation(request, self.max_body_bytes, self.body_timeout)
        except RequestError as exc:
            return refusal(exc.status, exc.message, exc.code, exc.headers)
        operation_id = (params.extensions or {}).get(OPERATION_ID)
        if not isinstance(operation_id, str) or not operation_id:
            return refusal(400, "a submitted operation needs a string `extensions.operationId`")
        if reservation.holds(operation_id):
            return refusal(409, "an operation with this id runs already")
        if reservation.operations() >= self.max_operations:
            return refusal(400, "Subscription limit reached")
        context = self.context_factory(request, identity)
        info = RequestInfo(requestlog.new_request_id(), "sse")
        token = requestlog.current.set(info)
        try:
            prepared = await self.operations.prepare(payload_of(params), context)
            if not isinstance(prepared, Prepared):
                info.outcome = "bad_request"
                record(info)
                return refused(400, prepared)
            decision, _ = await self.admission.check(identity, cost=prepared.cost, transport="sse")
            headers = {**NO_STORE, **self.admission.headers(decision)}
            if not decision.allowed:
                record(info)
                return refused(429, [rate_limited_error(decision.retry_after_seconds)], headers)
        finally:
            requestlog.current.reset(token)
        # the reservation may have ended, or the id been taken, while the operation was checked
        if self.reservations.by_token.get(reservation.token) is not reservation:
            return refusal(404, _NO_RESERVATION)
        if reservation.holds(operation_id):
            return refusal(409, "an operation with this id runs already")
        if reservation.running is not None and reservation.stream is not None:
            reservation.running.start(StreamOperation(reservation.stream, operation_id, context, info), prepared)
        else:
            reservation.pending[operation_id] = (prepared, context, info)
        return Response(status_code=202, headers=headers)

    async def _stop(self, request: Request, identity: Identity) -> Response:
        reservation = self.reservations.find(token_of(request), identity, adopt=False)
        if reservation is None:
            return refusal(404, _NO_RESERVATION)
        operation_id = request.query_params.get(OPERATION_ID)
        if not operation_id:
            return refusal(400, "DELETE needs the `operationId` search parameter")
        if reservation.pending.pop(operation_id, None) is None and reservation.running is not None:
            await reservation.running.stop(operation_id)
        return Response(status_code=200, headers=NO_STORE)
