"""Background tasks: stopped the one way, and coroutines run eagerly.

Every long-lived task of the service (the hub's listener, the pre-warmer, the
usage flusher, the watched-cell renewer, the readiness probe) is stopped the
same way: cancelled, and awaited until it has finished, so that nothing it
holds outlives its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Coroutine, Generator
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has finished; its cancellation is not ours to re-raise."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_now(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coroutine` at once, up to its first wait: None if it finished, else the task that finishes it.

    What Python 3.12's eager tasks do, for 3.11: writing to a socket that takes
    the frame completes without a task, so a fan-out creates none. Its errors
    up to the first wait are raised here; the task is referenced until done.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    task = asyncio.ensure_future(_resume(coroutine, awaited))
    _unfinished.add(task)  # a strong reference until it is done
    task.add_done_callback(_unfinished.discard)
    return task


_unfinished: set[asyncio.Task[None]] = set()


@types.coroutine
def _resume(coroutine: Coroutine[Any, Any, None], awaited: Any) -> Generator[Any, None, None]:
    """Go on with a coroutine suspended on `awaited`, as the task running it would have."""
    while True:
        try:
            yield awaited
        except BaseException as exc:  # thrown in by the task: cancellation
            try:
                awaited = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaited = coroutine.send(None)
            except StopIteration:
                return
