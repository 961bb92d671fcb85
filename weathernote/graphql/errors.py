"""The error codes of the public contract, as GraphQL errors."""

from __future__ import annotations

from graphql import GraphQLError

BAD_USER_INPUT = "BAD_USER_INPUT"
RATE_LIMITED = "RATE_LIMITED"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"


def bad_user_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": BAD_USER_INPUT})


def upstream_unavailable() -> GraphQLError:
    return GraphQLError(
        "The weather provider is unavailable and nothing is cached for this place; retry shortly.",
        extensions={"code": UPSTREAM_UNAVAILABLE},
    )
