"""Process lifecycle hooks that must run before uvicorn starts closing connections.

uvicorn closes WebSockets with 1012 as soon as it shuts down, before the
application hears about it; a draining server should say 1001 ("going away")
and stop being ready first. `weathernote.http.server` runs these hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Hook = Callable[[], Awaitable[None]]

_drain_hooks: list[Hook] = []


def on_drain(hook: Hook) -> None:
    _drain_hooks.append(hook)


def forget(hook: Hook) -> None:
    if hook in _drain_hooks:
        _drain_hooks.remove(hook)


async def drain() -> None:
    for hook in list(_drain_hooks):
        await hook()
