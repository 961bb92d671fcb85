"""Baseline: the limit. A bare ASGI app that does the same Redis GET and returns the bytes."""

from __future__ import annotations

import os

from redis.asyncio import Redis

redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
KEY = os.environ.get("BENCH_KEY", "weather:lat:40.7:lon:-74.0")


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    body = await redis.get(KEY) or b"{}"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
