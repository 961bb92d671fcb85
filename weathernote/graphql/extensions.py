"""The schema's extension pipeline, built once so that its caches actually hit."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, SchemaExtension, ValidationCache

from weathernote.graphql.errors import internal_error, is_internal


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


class MaskInternalErrors(MaskErrors):
    """Strawberry's masking under our one rule: an internal error keeps its place and its code only."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_internal)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return internal_error(error)


def schema_extensions(document_cache_size: int = 1024) -> list[type[SchemaExtension] | object]:
    return [
        lambda: SafeParserCache(maxsize=document_cache_size),
        lambda: ValidationCache(maxsize=document_cache_size),
        MaskInternalErrors,
    ]
