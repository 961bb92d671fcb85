"""One open event stream: written without queueing, kept alive by comments, ended by either side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from weathernote.http.latest import LatestWins
from weathernote.http.sse.protocol import KEEPALIVE, STREAM_HEADERS
from weathernote.tasks import run_now

_CLOSE_TIMEOUT = 5.0  # how long the end of a stream waits for a stalled client to take it


class EventStream(LatestWins[bytes]):
    """A `text/event-stream` answer, from its headers to its end.

    Writes go out at once, from the callback that brought them; while the
    client cannot take more, each operation keeps only its latest result
    (`LatestWins`, as the WebSocket writer does). A comment every `keepalive` seconds
    keeps proxies and clients from taking a quiet stream for a dead one.
    """

    __slots__ = ("_ended", "_send", "_timer", "gone", "keepalive")

    def __init__(self, send: Send, keepalive: float) -> None:
        super().__init__()
        self._send = send
        self.keepalive = keepalive
        self.gone = False  # the client hung up
        self._ended = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def open(self, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """The answer's head, then a comment: some clients and proxies pass nothing on until a first byte."""
        await self._send({"type": "http.response.start", "status": 200, "headers": [*STREAM_HEADERS, *headers]})
        await self.write(KEEPALIVE)
        self._schedule()

    async def write(self, data: bytes) -> None:
        """Write `data` (whole events), waiting while the client drains; nothing once it is gone."""
        if self.gone or self._ended.is_set():
            return
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
        except Exception:  # the connection closed under the write (a middleware may say so its own way)
            self._hang_up()

    def end(self) -> None:
        """Our side is done: `until_closed` returns."""
        self._ended.set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def until_closed(self, receive: Receive) -> None:
        """Until the client hangs up or `end` is called."""
        listener = asyncio.ensure_future(self._listen(receive))
        try:
            await self._ended.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def close(self) -> None:
        """The end of the answer (if the client is still there to read it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = None
        self._ended.set()
        if self.gone:
            return
        self.gone = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT):  # a stalled client does not hold shutdown
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the rest of a request's body: already read, or none
        self._hang_up()

    def _hang_up(self) -> None:
        self.gone = True
        self._waiting = None
        self._ended.set()

    def _start(self, frame: bytes) -> asyncio.Task[None] | None:
        return run_now(self.write(frame))

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.keepalive, self._keepalive)

    def _keepalive(self) -> None:
        if self.gone or self._ended.is_set():
            return
        if not self.writing:  # a stream busy writing is not quiet
            self._write(KEEPALIVE)
        self._schedule()


class StreamResponse(Response):
    """A Starlette response whose whole life is `serve(receive, send)`: it opens the stream and serves it."""

    def __init__(self, serve: Callable[[Receive, Send], Awaitable[None]]) -> None:
        super().__init__(status_code=200)
        self._serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(receive, send)
