"""The service's one error hierarchy.

Every failure the service knows how to answer is a `WeatherNoteError`; anything
else reaching a transport is a bug, masked as an internal error and logged.

    WeatherNoteError
    ├── InvalidInput            a client's value out of range (BAD_USER_INPUT)
    ├── UpstreamError           Open-Meteo gave no usable answer (network, status, body)
    ├── UpstreamSkipped         no call made: the budget, the pace or the upstream breaker said no
    ├── UpstreamUnavailable     nothing to serve for a cell, not even stale (UPSTREAM_UNAVAILABLE)
    ├── CacheError
    │   ├── RedisUnavailable    the server did not answer, or its breaker is open
    │   ├── RedisKeyError       the server answered with an error about one key (WRONGTYPE, …)
    │   └── UndecodableEntry    an entry read back is not one this release can use
    ├── DocumentError           a GraphQL document refused before execution (persisted queries too)
    ├── BadRequest              a request that is not well-formed (HTTP, REST, a WebSocket message)
    ├── ContractError           an upstream answer without the shape we rely on (becomes UpstreamError)
    └── EmbeddedRedisError      the embedded server could not start
"""

from __future__ import annotations


class WeatherNoteError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidInput(WeatherNoteError, ValueError):
    """A value from a client that is not acceptable (coordinates, days, hours)."""


class UpstreamError(WeatherNoteError):
    """Open-Meteo could not give a usable answer: network, status or body."""

    def __init__(self, reason: str, status: int | None = None, cause: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.cause = cause  # timeout, transport, rate_limited, status, malformed

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class UpstreamSkipped(WeatherNoteError):
    """No upstream call was made, by decision rather than failure.

    `cause` is "budget" (a window is spent), "breaker" (the upstream breaker is
    open), "pace" (spending runs ahead of the day) or "value" (the budget keeps
    more requested cells fresh).
    """

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class UpstreamUnavailable(WeatherNoteError):
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
