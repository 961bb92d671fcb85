"""Writing a WebSocket's frames without waiting and without queueing: latest wins per operation."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocket, WebSocketDisconnect

from weathernote.http.latest import LatestWins
from weathernote.tasks import run_now

GONE = (WebSocketDisconnect, RuntimeError, OSError)  # the socket closed under us: nothing to answer


class FrameWriter(LatestWins[str]):
    """A WebSocket's writes: each frame written at once, from the callback that brought it.

    While the socket cannot take more, each operation keeps only its latest
    payload, written when the socket drains (`LatestWins`).
    """

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__()
        self.websocket = websocket

    async def send_text(self, text: str) -> None:
        # No lock: uvicorn writes each frame whole, so concurrent sends never interleave.
        await self.websocket.send_text(text)

    def _start(self, frame: str) -> asyncio.Task[None] | None:
        try:
            return run_now(self.send_text(frame))
        except GONE:
            return None  # closed: the connection ends its operations
