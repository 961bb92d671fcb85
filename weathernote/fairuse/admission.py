"""Admission of a request or WebSocket operation: who is it, and may they go on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import HTTPConnection

from weathernote.demand.usage import Usage
from weathernote.fairuse.identity import Identifier, Identity
from weathernote.fairuse.limiter import Decision, RateLimiter
from weathernote.graphql.errors import RATE_LIMITED
from weathernote.ops import metrics, requestlog


class Admission:
    def __init__(self, identifier: Identifier, limiter: RateLimiter, usage: Usage) -> None:
        self.identifier = identifier
        self.limiter = limiter
        self.usage = usage

    def identity(self, connection: HTTPConnection) -> Identity:
        peer = connection.client.host if connection.client else None
        return self.identifier.identify(peer, connection.headers)

    async def check(
        self, connection: HTTPConnection, cost: int = 1, transport: str = "http", read_keys: Sequence[str] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """The limiter's decision, and `read_keys` read in the same round trip (None if not read)."""
        identity = self.identity(connection)
        requestlog.note(client=identity.client[:12])
        self.usage.request(identity.client, cost)
        decision, values = await self.limiter.check(identity, cost, read_keys)
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(transport, decision.scope).inc()
            requestlog.note(outcome="rate_limited")
        return decision, values

    def headers(self, decision: Decision) -> dict[str, str]:
        return self.limiter.headers(decision)


def rate_limited_error(decision: Decision) -> dict[str, Any]:
    return {
        "message": f"Too many requests: retry in {decision.retry_after_seconds} s.",
        "extensions": {"code": RATE_LIMITED, "retryAfter": decision.retry_after_seconds},
    }


def rate_limited_body(decision: Decision) -> bytes:
    return orjson.dumps({"errors": [rate_limited_error(decision)]})
