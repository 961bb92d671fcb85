"""Running the app under uvicorn."""

from __future__ import annotations

import math

import uvicorn

from weathernote.settings import Settings


def run(settings: Settings) -> None:
    uvicorn.run(
        "weathernote.http.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
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
