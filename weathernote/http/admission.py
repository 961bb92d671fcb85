"""Admission of a request or WebSocket operation: who is it, and may they go on."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection

from weathernote.graphql.errors import RATE_LIMITED
from weathernote.identity import Identifier, Identity
from weathernote.ratelimit import Decision, RateLimiter


class Admission:
    def __init__(self, identifier: Identifier, limiter: RateLimiter) -> None:
        self.identifier = identifier
        self.limiter = limiter

    def identity(self, connection: HTTPConnection) -> Identity:
        peer = connection.client.host if connection.client else None
        return self.identifier.identify(peer, connection.headers)

    async def check(self, connection: HTTPConnection, cost: int = 1) -> Decision:
        return await self.limiter.check(self.identity(connection), cost)

    def headers(self, decision: Decision) -> dict[str, str]:
        return self.limiter.headers(decision)


def rate_limited_error(decision: Decision) -> dict[str, Any]:
    return {
        "message": f"Too many requests: retry in {decision.retry_after_seconds} s.",
        "extensions": {"code": RATE_LIMITED, "retryAfter": decision.retry_after_seconds},
    }


def rate_limited_body(decision: Decision) -> bytes:
    return orjson.dumps({"errors": [rate_limited_error(decision)]})
