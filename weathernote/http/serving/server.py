"""Running the app under uvicorn."""

from __future__ import annotations

import asyncio
import functools
import math
import resource
from typing import cast

import uvicorn

from weathernote.http.serving.protocol import HeaderDeadlineProtocol
from weathernote.settings import Settings


def raise_open_files_limit() -> None:
    """The soft limit on open files raised to the hard one: each WebSocket holds one (workers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings) -> None:
    raise_open_files_limit()
    # a factory rather than the class: it reaches worker processes whole (pickled with the config)
    protocol = functools.partial(HeaderDeadlineProtocol, header_timeout=settings.http_header_timeout_seconds)
    uvicorn.run(
        "weathernote.http.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # websockets' sans-I/O implementation: ~8 KB less per connection than its legacy one
        # (bench/subscriptions_fanout.py). wsproto saves 3 KB more but drops a socket that sends
        # invalid UTF-8 without a close frame (tests/system/test_fuzz.py), so it is not used.
        ws="websockets-sansio",
        # requests whose headers do not arrive in time are answered 408 and closed (slow clients)
        http=cast(type[asyncio.Protocol], protocol),
        # many small JSON messages: compression costs more CPU and memory than it saves
        ws_per_message_deflate=False,
        ws_max_size=settings.ws_max_message_bytes,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
        # X-Forwarded-For is ours to judge (WEATHERNOTE_TRUSTED_PROXIES); uvicorn's own
        # default would believe it from any loopback peer.
        proxy_headers=False,
        access_log=False,  # weathernote.access writes one structured line per request
        log_config=None,  # keep the JSON logging `weathernote` configured
    )
