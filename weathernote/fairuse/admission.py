"""Admission of a request or WebSocket operation: who is it, and may they go on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from weathernote.demand import Usage
from weathernote.fairuse.identity import Identifier, Identity
from weathernote.fairuse.limiter import Decision, RateLimiter
from weathernote.fairuse.pacer import Pacer
from weathernote.ops import metrics, requestlog


class Admission:
    """The one gate every way in passes: identity, then the limits, counted as usage."""

    def __init__(self, identifier: Identifier, limiter: RateLimiter, usage: Usage, starts: Pacer) -> None:
        self.identifier = identifier
        self.limiter = limiter
        self.usage = usage
        self.starts = starts

    def pace_start(self, transport: str) -> float:
        """A streaming connection's start (a WebSocket `connection_init`): 0.0 to go on, else the
        seconds after which to try again (this process admits starts at a steady rate)."""
        wait = self.starts.admit()
        if wait:
            metrics.RATE_LIMITED.labels(transport, "starts").inc()
        return wait

    def identity(self, peer: str | None, headers: Mapping[str, str]) -> Identity:
        """Who asks: the peer's address (or the one a trusted proxy forwarded) and the client id, hashed."""
        return self.identifier.identify(peer, headers)

    async def check(
        self, identity: Identity, cost: int = 1, transport: str = "http", read_keys: Sequence[str] = ()
    ) -> tuple[Decision, list[bytes | None] | None]:
        """The limiter's decision, and `read_keys` read in the same round trip (None if not read)."""
        requestlog.note(client=identity.client[:12])
        self.usage.request(identity.client, cost)
        decision, values = await self.limiter.check(identity, cost, read_keys)
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(transport, decision.scope).inc()
            requestlog.note(outcome="rate_limited")
        return decision, values

    def headers(self, decision: Decision) -> dict[str, str]:
        return self.limiter.headers(decision)
