"""Draining on SIGTERM/SIGINT before uvicorn starts closing connections.

uvicorn closes WebSockets with 1012 as soon as it begins shutting down, before
the application hears of it. A draining server should first stop being ready
and close its sockets with 1001 ("going away", clients reconnect elsewhere),
optionally keep serving a moment so the load balancer notices, and only then
let uvicorn's own graceful shutdown run (no new connections, in-flight
requests finish). So the application wraps uvicorn's signal handler: drain
first, then hand the signal on. This works the same in every worker process.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: set[asyncio.Task[None]] = set()


def drain_on_signals(drain: Callable[[], Awaitable[None]], delay: float = 0.0) -> Callable[[], None]:
    """Install the wrapper; returns a function that restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals reach only the main thread (e.g. under a test client)
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    draining = False

    async def drain_then_forward(sig: int, frame: FrameType | None) -> None:
        try:
            await drain()
            await asyncio.sleep(delay)
        finally:
            handler = previous[sig]
            if callable(handler):
                handler(sig, frame)

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal draining
        if draining:  # a second signal: no more waiting
            handler = previous[sig]
            if callable(handler):
                handler(sig, frame)
            return
        draining = True

        def start() -> None:
            task = loop.create_task(drain_then_forward(sig, frame))
            _pending.add(task)
            task.add_done_callback(_pending.discard)

        loop.call_soon_threadsafe(start)

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
