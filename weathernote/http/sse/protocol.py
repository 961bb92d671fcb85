"""The graphql-sse protocol's wire: events, keep-alive comments, stream headers, tokens, refusals.

https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md. A distinct
connection's events carry the execution result itself; a single connection's
carry `{"id": <operationId>, "payload": <result>}` (`complete`: `{"id": …}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from weathernote.graphql.errors import BAD_REQUEST, error_dict

EVENT_STREAM = "text/event-stream"
TOKEN_HEADER = "x-graphql-event-stream-token"
TOKEN_PARAM = "token"
OPERATION_ID = "operationId"
KEEPALIVE = b":\n\n"  # a comment: ignored by every client, read by every proxy as traffic
# what an event stream's answer says: never kept by a cache, never buffered by nginx
STREAM_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]
NO_STORE = {"Cache-Control": "no-cache, no-store"}
# the `data:` field is there even when empty: EventSource dispatches no event without one
_COMPLETE_DISTINCT = b"event: complete\ndata: \n\n"


def wants_event_stream(accept: str | None) -> bool:
    """Whether the client asks for an event stream (and does not refuse it with q=0)."""
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == EVENT_STREAM:
            return not any(param.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for param in params)
    return False


def data_field(payload: str) -> bytes:
    """`payload` as an event's data: one `data:` line per line (our JSON has none, but a line break must not end it)."""
    if "\n" in payload or "\r" in payload:
        payload = "\ndata: ".join(payload.splitlines())
    return payload.encode()


def next_framing(operation_id: str | None) -> tuple[bytes, bytes]:
    """What goes before and after a result in a `next` event of this operation."""
    if operation_id is None:
        return b"event: next\ndata: ", b"\n\n"
    return b'event: next\ndata: {"id":' + orjson.dumps(operation_id) + b',"payload":', b"}\n\n"


def complete_event(operation_id: str | None) -> bytes:
    if operation_id is None:
        return _COMPLETE_DISTINCT
    return b'event: complete\ndata: {"id":' + orjson.dumps(operation_id) + b"}\n\n"


def errors_payload(errors: list[dict[str, Any]]) -> str:
    """An execution result of errors only: refused before it ran, so no `data`."""
    return orjson.dumps({"errors": errors}).decode()


def token_of(request: Request) -> str | None:
    """The reservation token a request presents: its header, else its `token` search parameter."""
    return request.headers.get(TOKEN_HEADER) or request.query_params.get(TOKEN_PARAM) or None


def refusal(status: int, message: str, code: str = BAD_REQUEST, headers: Mapping[str, str] | None = None) -> Response:
    """An answer before any stream: a GraphQL error body, as GraphQL over HTTP answers it."""
    return refused(status, [error_dict(message, code)], headers)


def refused(status: int, errors: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps({"errors": errors})
    return Response(
        body,
        status_code=status,
        media_type="application/json; charset=utf-8",
        headers={**NO_STORE, **(headers or {})},
    )
