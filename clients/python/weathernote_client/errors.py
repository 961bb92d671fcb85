"""What the client raises: one base class, and a subclass per thing a caller can act on.

A GraphQL error is told apart by its `extensions.code` (the server's public
contract), never by its message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
RATE_LIMITED = "RATE_LIMITED"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
BAD_USER_INPUT = "BAD_USER_INPUT"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class WeatherNoteClientError(Exception):
    """Anything the client raises; `code` is the server's `extensions.code` when it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RateLimited(WeatherNoteClientError):
    """Over the client's request limit, still after the retries: try again in `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, RATE_LIMITED)
        self.retry_after = retry_after


class UpstreamUnavailable(WeatherNoteClientError):
    """The weather provider failed and the server has nothing for this place, not even stale."""


class BadInput(WeatherNoteClientError):
    """A value the server refuses: a latitude, longitude, day or hour count out of range."""


class OperationRefused(WeatherNoteClientError):
    """The server will not run this client's operation (not in its safelist, invalid for its schema,
    too complex, or a malformed request): the client and the server disagree, and retrying will not help."""


class ServerError(WeatherNoteClientError):
    """The server failed (5xx, an internal error) or answered something that is not a GraphQL response."""


class ConnectionFailed(WeatherNoteClientError):
    """No answer from the server, still after the retries."""


def error_from_graphql(errors: Sequence[Any]) -> WeatherNoteClientError:
    """The exception for a response's `errors`, from the first error's code."""
    first = errors[0] if errors and isinstance(errors[0], Mapping) else {}
    message = str(first.get("message") or "unknown GraphQL error")
    extensions = first.get("extensions")
    extensions = extensions if isinstance(extensions, Mapping) else {}
    code = extensions.get("code")
    code = code if isinstance(code, str) else None
    if code == RATE_LIMITED:
        retry_after = extensions.get("retryAfter")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int | float) or retry_after < 0:
            retry_after = 1.0  # the contract promises a number; a second is a safe guess without one
        return RateLimited(message, float(retry_after))
    if code == UPSTREAM_UNAVAILABLE:
        return UpstreamUnavailable(message, code)
    if code == BAD_USER_INPUT:
        return BadInput(message, code)
    if code is None or code == INTERNAL_SERVER_ERROR:
        return ServerError(message, code)
    return OperationRefused(message, code)
