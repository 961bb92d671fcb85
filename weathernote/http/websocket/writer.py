"""Writing a connection's frames without waiting and without queueing: latest wins per operation."""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from weathernote.tasks import run_now

GONE = (WebSocketDisconnect, RuntimeError, OSError)  # the socket closed under us: nothing to answer


class Framed(Protocol):
    """An operation whose payloads are framed with its id."""

    def frame(self, payload: str) -> str: ...


class FrameWriter:
    """A WebSocket's writes: each frame written at once, from the callback that brought it.

    While the socket cannot take more (a write waits for it to drain), each
    operation keeps only its latest payload, written when the socket drains. So
    a reader that stalls never grows memory nor delays anyone else, and is sent
    the latest.
    """

    __slots__ = ("_waiting", "_writing", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._writing: asyncio.Task[None] | None = None  # a write waiting for the socket to drain
        self._waiting: dict[Framed, str] | None = None  # meanwhile, each operation's latest payload

    async def send_text(self, text: str) -> None:
        # No lock: uvicorn writes each frame whole, so concurrent sends never interleave.
        await self.websocket.send_text(text)

    def push(self, operation: Framed, payload: str) -> None:
        """Write `operation`'s frame now, or keep it (latest wins) while an earlier write waits for the socket."""
        if self._writing is None:
            self._write(operation.frame(payload))
        else:
            if self._waiting is None:
                self._waiting = {}
            self._waiting[operation] = payload

    def forget(self, operation: Framed) -> None:
        """`operation` ended: a payload it kept waiting is not written."""
        if self._waiting:
            self._waiting.pop(operation, None)

    def _write(self, text: str) -> None:
        try:
            writing = run_now(self.send_text(text))
        except GONE:
            return  # closed: the connection ends its operations
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
