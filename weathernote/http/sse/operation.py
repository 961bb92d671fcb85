"""The operations of one event stream: each admitted operation run, its results framed as events, ended once."""

from __future__ import annotations

import asyncio
import logging

from weathernote.graphql import Context, Operations
from weathernote.graphql.errors import internal_error
from weathernote.graphql.operations import Prepared
from weathernote.http.observability import access_log, stream_operation
from weathernote.http.sse.protocol import complete_event, data_field, errors_payload, next_framing
from weathernote.http.sse.stream import EventStream
from weathernote.live import Feed
from weathernote.ops import metrics, requestlog
from weathernote.ops.requestlog import RequestInfo
from weathernote.ops.tracing import Tracer

log = logging.getLogger(__name__)


class StreamOperation:
    """One operation of a stream: its results as `next` events (with its id on a single connection).

    An `Emitter` of `graphql.Operations`: `emit` writes and waits, `push` (a feed's
    outlet) never waits.
    """

    __slots__ = ("context", "feed", "id", "info", "prefix", "stream", "suffix", "task")

    def __init__(self, stream: EventStream, operation_id: str | None, context: Context, info: RequestInfo) -> None:
        self.stream = stream
        self.id = operation_id
        self.context = context
        self.info = info
        self.prefix, self.suffix = next_framing(operation_id)
        self.feed: Feed | None = None
        self.task: asyncio.Task[None] | None = None

    def frame(self, payload: str) -> bytes:
        return self.prefix + data_field(payload) + self.suffix

    async def emit(self, payload: str) -> None:
        await self.stream.write(self.frame(payload))

    def push(self, payload: str) -> None:
        self.stream.push(self, payload)


class Running:
    """The operations running on one stream, by id.

    An operation runs in a task until it completes (a query: one `next`, then
    `complete`) or until a feed serves it (a subscription: callbacks push each
    refresh, no task waits). Each ends once: completed, stopped, or with its
    stream. A distinct connection's stream ends with its one operation.
    `record` says whether each operation writes its own log line (a single
    connection's do; a distinct connection is one request, logged as such).
    """

    def __init__(
        self, operations: Operations, stream: EventStream, *, distinct: bool, record: bool, tracer: Tracer | None = None
    ) -> None:
        self.operations = operations
        self.tracer = tracer  # traced: each operation is a span under its request's
        self.stream = stream
        self.distinct = distinct
        self.record = record
        self.by_id: dict[str | None, StreamOperation] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, operation_id: str | None) -> bool:
        return operation_id in self.by_id

    def start(self, operation: StreamOperation, prepared: Prepared) -> None:
        self.by_id[operation.id] = operation
        operation.task = asyncio.create_task(self._run(operation, prepared))

    async def refuse(self, operation: StreamOperation, errors: list[dict[str, object]]) -> None:
        """An operation refused before it ran (its document): one `next` of its errors, then `complete`."""
        operation.info.outcome = "bad_request"
        await operation.emit(errors_payload(errors))
        await self.stream.write(complete_event(operation.id))
        self._done(operation)

    async def _run(self, operation: StreamOperation, prepared: Prepared) -> None:
        info = operation.info
        requestlog.current.set(info)  # this task's own context
        try:
            with stream_operation(self.tracer, "sse", prepared):
                result = await self.operations.run(prepared, operation.context, operation)
            if isinstance(result, Feed):
                operation.feed = result  # from here on, callbacks serve it: this task ends
                operation.task = None
                if operation.id not in self.by_id:  # stopped meanwhile
                    await self._leave(operation)
                return
            if result is not None:
                info.outcome = "bad_request"
                await operation.emit(errors_payload(result))
            await self.stream.write(complete_event(operation.id))
        except asyncio.CancelledError:
            raise
        except Exception:
            info.outcome = "error"
            log.exception("SSE operation %s failed", operation.id)
            await operation.emit(errors_payload([dict(internal_error().formatted)]))
            await self.stream.write(complete_event(operation.id))
        finally:
            if operation.feed is None:
                self._done(operation)

    async def stop(self, operation_id: str | None) -> bool:
        """End one operation (the client asked, or its stream ended); False if none runs with that id."""
        operation = self.by_id.pop(operation_id, None)
        if operation is None:
            return False
        if operation.task is not None:
            operation.task.cancel()
            await asyncio.gather(operation.task, return_exceptions=True)
        elif operation.feed is not None:
            await self._leave(operation)
        return True

    async def stop_all(self) -> None:
        # awaited, so every subscription leaves the hub before the stream is gone
        for operation_id in list(self.by_id):
            await self.stop(operation_id)

    async def _leave(self, operation: StreamOperation) -> None:
        assert operation.feed is not None
        self.stream.forget(operation)
        await self.operations.leave(operation.feed, operation, operation.context)
        self._done(operation)

    def _done(self, operation: StreamOperation) -> None:
        if self.by_id.get(operation.id) is operation:
            del self.by_id[operation.id]
        if self.record:
            record(operation.info)
        if self.distinct:
            self.stream.end()


def record(info: RequestInfo) -> None:
    """One operation's log line and request metrics (a single connection's: each operation is its own)."""
    metrics.REQUESTS.labels("sse", info.operation or "other", info.outcome).inc()
    access_log.write("operation", info.fields())
