"""The error codes of the public contract, as GraphQL errors, and the one rule for ours.

Every error a client receives carries `extensions.code`. The codes before
execution are Apollo's, so that its clients (and others that know them) can
tell a malformed document from a refused variable without reading messages.
A failure of ours is logged once, with its traceback, and masked
(`mask_internal`), whichever path executed the document.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from graphql import GraphQLError

from weathernote.errors import ShareSpent, UpstreamError
from weathernote.ops import requestlog

log = logging.getLogger(__name__)

# a client's value out of range, or a variable that does not coerce to its type
BAD_USER_INPUT = "BAD_USER_INPUT"
RATE_LIMITED = "RATE_LIMITED"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
# no operation of that name, or several operations and no name
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
# not a well-formed request of its transport (HTTP body, WebSocket message)
BAD_REQUEST = "BAD_REQUEST"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
_INTERNAL_MESSAGE = "Internal server error."


def bad_user_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": BAD_USER_INPUT})


def upstream_unavailable() -> GraphQLError:
    return GraphQLError(
        "The weather provider is unavailable and nothing is cached for this place; retry shortly.",
        extensions={"code": UPSTREAM_UNAVAILABLE},
    )


def share_spent(retry_after: float) -> GraphQLError:
    """A field that needed the upstream when its client had spent its share of the budget."""
    seconds = max(1, math.ceil(retry_after))
    return GraphQLError(
        f"This client has used its share of the weather provider's budget; retry in {seconds} s.",
        extensions={"code": RATE_LIMITED, "retryAfter": seconds},
    )


def reads_refused(cells: int, retry_after: int) -> GraphQLError:
    """A box whose reads (one a cell) are more than what is left of its client's limits."""
    return GraphQLError(
        f"This box reads {cells} cells, more than this client may read now; retry in {retry_after} s.",
        extensions={"code": RATE_LIMITED, "retryAfter": retry_after},
    )


def cell_error(error: UpstreamError, lat: float, lon: float) -> GraphQLError:
    """One cell of a box that has nothing to show: the field's error, naming the cell."""
    coded_error = share_spent(error.retry_after) if isinstance(error, ShareSpent) else upstream_unavailable()
    coded_error.extensions = {**(coded_error.extensions or {}), "cell": {"lat": lat, "lon": lon}}
    return coded_error


def coded(error: GraphQLError, code: str) -> GraphQLError:
    """`error` with `code`, unless it carries one already (a limit's QUERY_TOO_COMPLEX stays).

    Changes the error in place: the errors given here are fresh from graphql-core
    (or cached with the very document that produced them).
    """
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": code}
    return error


def error_dict(message: str, code: str) -> dict[str, object]:
    """A formatted GraphQL error that no document node caused (a transport's refusal)."""
    return {"message": message, "extensions": {"code": code}}


def rate_limited_error(retry_after_seconds: int) -> dict[str, object]:
    """The refusal of a client over its limits: when it may try again."""
    return {
        "message": f"Too many requests: retry in {retry_after_seconds} s.",
        "extensions": {"code": RATE_LIMITED, "retryAfter": retry_after_seconds},
    }


def is_internal(error: GraphQLError) -> bool:
    """Raised by our code rather than by GraphQL or on purpose: a bug, to log and to mask."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def internal_error() -> GraphQLError:
    """What a client sees of a failure of ours that no field caused."""
    return GraphQLError(_INTERNAL_MESSAGE, extensions={"code": INTERNAL_SERVER_ERROR})


def mask_internal(errors: Iterable[GraphQLError]) -> None:
    """Log each of our failures once, with its traceback and request id, and mask it.

    A masked error keeps where it happened (locations, path) and says nothing
    else: "Internal server error.", INTERNAL_SERVER_ERROR. Masked in place, since
    Strawberry passes a result's own errors to `Schema.process_errors` and then
    returns those very objects: nothing that holds one can still show the
    original, and a masked error is no longer internal, so applying the rule
    twice logs nothing more. Our coded errors and GraphQL's own stay readable and
    are not logged: a client's bad input is not an error of the server's.
    """
    for error in errors:
        if not is_internal(error):
            continue
        info = requestlog.current.get()
        log.error(
            "internal error at %s: %s",
            error.path,
            error.message,
            exc_info=error.original_error,
            extra={"request_id": info.request_id if info else None},
        )
        error.message = _INTERNAL_MESSAGE
        error.extensions = {"code": INTERNAL_SERVER_ERROR}
        error.original_error = None
