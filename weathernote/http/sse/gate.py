"""The open event streams of a process: capped per address and in all, and ended together on shutdown."""

from __future__ import annotations

import math
from collections import Counter

import orjson
from starlette.responses import Response

from weathernote.fairuse import Admission, Identity
from weathernote.graphql.errors import rate_limited_error
from weathernote.http.sse.protocol import NO_STORE
from weathernote.http.sse.stream import EventStream
from weathernote.http.websocket import Limits
from weathernote.ops import metrics

RETRY_SECONDS = 30  # what a refused stream tells the client to wait, as a refused WebSocket handshake


class StreamGate:
    """Counts open streams (both modes) against the WebSocket side's kind of limits.

    A stream past either cap is refused before it opens: HTTP 429 with
    Retry-After, as a WebSocket handshake over its caps. So is one past the
    process's pace of connection starts (a reconnect storm), told when to come
    back. Draining, every stream ends (its clients reconnect elsewhere) and no
    new one opens (503).
    """

    def __init__(self, limits: Limits, admission: Admission) -> None:
        self.limits = limits
        self.admission = admission
        self.streams: set[EventStream] = set()
        self.open = 0
        self.per_address: Counter[str] = Counter()
        self.accepting = True

    def enter(self, identity: Identity) -> Response | None:
        """Count a stream of `identity` about to open (`leave` when it ends); or why it may not: nothing counted.

        Counted from before the stream opens, so that concurrent requests cannot slip past the caps together.
        """
        if not self.accepting:
            return Response(b"", status_code=503, headers={**NO_STORE, "Retry-After": "1"})
        if (
            self.open >= self.limits.max_connections
            or self.per_address[identity.address] >= self.limits.max_connections_per_address
        ):
            metrics.RATE_LIMITED.labels("sse", "connections").inc()
            return _too_many(RETRY_SECONDS)
        wait = self.admission.pace_start("sse")
        if wait:
            return _too_many(math.ceil(wait))
        self.open += 1
        self.per_address[identity.address] += 1
        return None

    def add(self, stream: EventStream) -> None:
        """An open stream, to end on shutdown (`discard` it when it ends)."""
        self.streams.add(stream)
        if not self.accepting:
            stream.end()

    def discard(self, stream: EventStream) -> None:
        self.streams.discard(stream)

    def leave(self, identity: Identity) -> None:
        self.open -= 1
        self.per_address[identity.address] -= 1
        if self.per_address[identity.address] <= 0:
            del self.per_address[identity.address]

    def close_all(self) -> None:
        """Going away: every stream ends (its operations with it), and clients reconnect elsewhere."""
        self.accepting = False
        for stream in list(self.streams):
            stream.end()


def _too_many(retry_after: int) -> Response:
    body = orjson.dumps({"errors": [rate_limited_error(retry_after)]})
    return Response(
        body,
        status_code=429,
        media_type="application/json; charset=utf-8",
        headers={**NO_STORE, "Retry-After": str(retry_after)},
    )
