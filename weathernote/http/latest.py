"""Writing a streaming connection's results without waiting and without queueing: latest wins.

Both streaming transports (WebSocket frames, SSE events) write each result at once, from the
callback that brought it. While the client cannot take more (a write waits for it to drain),
each operation keeps only its latest payload, written when the client drains. So a reader that
stalls never grows memory nor delays anyone else, and is sent the latest.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

FrameT = TypeVar("FrameT")
FrameT_co = TypeVar("FrameT_co", covariant=True)


class Framed(Protocol[FrameT_co]):
    """An operation whose payloads are framed for its connection (with its id, as its event)."""

    def frame(self, payload: str) -> FrameT_co: ...


class LatestWins(Generic[FrameT]):
    """The writes of one connection; a transport says how a frame starts out (`_start`)."""

    __slots__ = ("_waiting", "_writing")

    def __init__(self) -> None:
        self._writing: asyncio.Task[None] | None = None  # a write waiting for the client to drain
        self._waiting: dict[Framed[FrameT], str] | None = None  # meanwhile, each operation's latest payload

    def _start(self, frame: FrameT) -> asyncio.Task[None] | None:
        """Begin writing `frame`: the write still under way, or None (written at once, or the client is gone)."""
        raise NotImplementedError

    @property
    def writing(self) -> bool:
        """A write waits for the client to drain."""
        return self._writing is not None

    def push(self, operation: Framed[FrameT], payload: str) -> None:
        """Write `operation`'s payload now, or keep it (latest wins) while an earlier write waits."""
        if self._writing is None:
            self._write(operation.frame(payload))
        else:
            if self._waiting is None:
                self._waiting = {}
            self._waiting[operation] = payload

    def forget(self, operation: Framed[FrameT]) -> None:
        """`operation` ended: a payload it kept waiting is not written."""
        if self._waiting:
            self._waiting.pop(operation, None)

    def _write(self, frame: FrameT) -> None:
        writing = self._start(frame)
        if writing is not None:
            self._writing = writing
            writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Task[None]) -> None:
        self._writing = None
        if writing.cancelled() or writing.exception() is not None:
            self._waiting = None  # closed: nothing more is written
            return
        # each write that completes at once leaves the connection free for the next
        while self._waiting and self._writing is None:
            operation = next(iter(self._waiting))
            self._write(operation.frame(self._waiting.pop(operation)))
