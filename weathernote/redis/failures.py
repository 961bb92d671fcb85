"""redis-py's errors as the service's own: one key's problem, or the server's.

A command error about one key (a key of another type, a value that is not a
number) is `RedisKeyError`: the caller overwrites or ignores that key, and the
breaker counts the server as healthy. Everything else (no answer, a failover,
refused writes, a server busy or out of memory) is `RedisUnavailable`, which
the breaker counts.
"""

from __future__ import annotations

from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from weathernote.errors import RedisKeyError, RedisUnavailable

# Errors the server answers about its own state, not about a key: the breaker's business.
# MOVED/ASK reach us only from a Cluster node talked to as a single server (the gateway then
# detects the topology again); CROSSSLOT is a bug of ours about several keys, not one key's problem.
_SERVER_STATE_ERRORS = (
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
    AskError,
    ClusterCrossSlotError,
)
_SERVER_STATE_PREFIXES = (
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "OOM",
    "BUSY",
    "NOAUTH",
    "MOVED",
    "ASK",
    "CROSSSLOT",
)


def classify(exc: BaseException) -> RedisKeyError | RedisUnavailable:
    """The service's error for a redis-py error: one key's problem, or the server's."""
    if isinstance(exc, ResponseError) and not isinstance(exc, _SERVER_STATE_ERRORS):
        message = str(exc)
        # a script's error carries the command's: "Error running script ... WRONGTYPE ..."
        if not message.startswith(_SERVER_STATE_PREFIXES):
            return RedisKeyError(message[:200])
    return RedisUnavailable(type(exc).__name__)


def is_redirection(exc: BaseException) -> bool:
    """A Cluster node's MOVED/ASK: we talk to a Cluster as if it were a single server."""
    return isinstance(exc, AskError) or str(exc).startswith(("MOVED", "ASK"))
