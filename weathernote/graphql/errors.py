"""The error codes of the public contract, as GraphQL errors, and the one rule that masks ours.

Every error a client receives carries `extensions.code`. The codes before
execution are Apollo's, so that its clients (and others that know them) can
tell a malformed document from a refused variable without reading messages.
"""

from __future__ import annotations

from graphql import GraphQLError

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


def bad_user_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": BAD_USER_INPUT})


def upstream_unavailable() -> GraphQLError:
    return GraphQLError(
        "The weather provider is unavailable and nothing is cached for this place; retry shortly.",
        extensions={"code": UPSTREAM_UNAVAILABLE},
    )


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


def is_internal(error: GraphQLError) -> bool:
    """Raised by our code rather than by GraphQL or on purpose: a bug, to log and to mask."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def internal_error(error: GraphQLError | None = None) -> GraphQLError:
    """What a client sees of a failure of ours: where it happened, if known, and nothing else."""
    if error is None:
        return GraphQLError("Internal server error.", extensions={"code": INTERNAL_SERVER_ERROR})
    return GraphQLError(
        "Internal server error.", error.nodes, path=error.path, extensions={"code": INTERNAL_SERVER_ERROR}
    )


def masked(error: GraphQLError) -> GraphQLError:
    """Our coded errors and GraphQL's own stay readable; anything else says nothing."""
    return internal_error(error) if is_internal(error) else error
