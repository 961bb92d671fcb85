"""The schema's extension pipeline, built once so that its caches actually hit."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, SchemaExtension, ValidationCache


class SafeParserCache(ParserCache):
    """ParserCache that leaves syntax errors to Strawberry's own parse.

    Strawberry 0.341's ParserCache raises syntax errors from inside its hook,
    outside Strawberry's error handling: over graphql-transport-ws the client
    then gets a bare `complete` instead of an error. Swallowing the error here
    makes Strawberry parse again and report it properly.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(context.query, **context.parse_options)
        except GraphQLError:
            context.graphql_document = None
        yield


def _is_internal(error: GraphQLError) -> bool:
    """Mask errors raised by our code; GraphQL's own and our coded errors stay readable."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def schema_extensions(document_cache_size: int = 1024) -> list[type[SchemaExtension] | object]:
    return [
        lambda: SafeParserCache(maxsize=document_cache_size),
        lambda: ValidationCache(maxsize=document_cache_size),
        lambda: MaskErrors(should_mask_error=_is_internal, error_message="Internal server error."),
    ]
