"""The service's one error hierarchy.

Every failure the service knows how to answer is a `WeatherNoteError`; anything
else reaching a transport is a bug, masked as an internal error and logged.

    WeatherNoteError
    ├── InvalidInput            a client's value out of range (BAD_USER_INPUT)
    ├── UpstreamError           no usable upstream data for a request
    │   ├── UpstreamFailed      Open-Meteo gave no usable answer (network, status, body): a FailureCause
    │   ├── UpstreamSkipped     no call made: the budget, the pace, the value, a share or the breaker said no
    │   ├── UpstreamUnavailable nothing to serve for a cell, not even stale (UPSTREAM_UNAVAILABLE)
    │   └── ShareSpent          nothing to serve, and the client spent its share of the budget (RATE_LIMITED)
    ├── CacheError
    │   ├── RedisUnavailable    the server did not answer, or its breaker is open
    │   ├── RedisKeyError       the server answered with an error about one key (WRONGTYPE, …)
    │   └── UndecodableEntry    an entry read back is not one this release can use
    ├── DocumentError           a GraphQL document refused before execution (persisted queries too)
    ├── BadRequest              a request that is not well-formed (HTTP, REST, a WebSocket message)
    ├── ContractError           an upstream answer without the shape we rely on (becomes UpstreamFailed)
    ├── EmbeddedRedisError      the embedded server could not start
    └── ConfigurationError      settings the service cannot run with
"""

from __future__ import annotations

import enum


class FailureCause(enum.StrEnum):
    """Why an upstream call failed (the `outcome` label of weathernote_upstream_calls_total)."""

    TIMEOUT = "timeout"
    TRANSPORT = "transport"
    RATE_LIMITED = "rate_limited"
    STATUS = "status"
    MALFORMED = "malformed"


class SkipCause(enum.StrEnum):
    """Why no upstream call was made (the `cause` label of weathernote_stale_served_total)."""

    BUDGET = "budget"  # a window of the shared budget is spent
    BREAKER = "breaker"  # the upstream's circuit breaker is open
    PACE = "pace"  # spending runs ahead of the day's even pace
    VALUE = "value"  # the budget keeps more requested cells fresh
    SHARE = "share"  # the asking client (or its address) has spent its share of the budget


class WeatherNoteError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidInput(WeatherNoteError, ValueError):
    """A value from a client that is not acceptable (coordinates, days, hours)."""


class UpstreamError(WeatherNoteError):
    """No usable upstream data for a request: a failed call, a call not made, or nothing to serve."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamFailed(UpstreamError):
    """Open-Meteo could not give a usable answer: network, status or body."""

    def __init__(self, reason: str, cause: FailureCause, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.cause = cause

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class UpstreamSkipped(UpstreamError):
    """No upstream call was made, by decision rather than failure; `retry_after` (seconds) when known."""

    def __init__(self, reason: str, cause: SkipCause, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.cause = cause
        self.retry_after = retry_after


class ShareSpent(UpstreamError):
    """A client (or its address) spent its share of the upstream budget, and nothing is cached for the cell:
    it may come back after `retry_after` seconds (RATE_LIMITED)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """The upstream failed and nothing is cached for the cell, not even stale."""


class CacheError(WeatherNoteError):
    """Redis could not do what was asked."""


class RedisUnavailable(CacheError):
    """Redis did not answer (or its circuit breaker is open): the server's problem."""


class RedisKeyError(CacheError):
    """Redis answered with an error about one key (a key of the wrong type, say): that key's problem."""


class UndecodableEntry(CacheError):
    """An entry read back from Redis that this release cannot use: another format, corrupt, wrong shape."""


class DocumentError(WeatherNoteError):
    """A GraphQL document refused before execution, with the code a client can act on."""

    def __init__(self, message: str, code: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class BadRequest(WeatherNoteError):
    """A request that is not well-formed; each transport says how it answers one."""


class ContractError(WeatherNoteError, ValueError):
    """An upstream answer that does not have the shape we rely on."""


class EmbeddedRedisError(WeatherNoteError, RuntimeError):
    """The embedded Redis-compatible server could not start."""


class ConfigurationError(WeatherNoteError, ValueError):
    """Settings the service cannot run with (a missing Redis URL or client-id secret)."""
