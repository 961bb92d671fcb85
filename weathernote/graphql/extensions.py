"""The schema's extension pipeline: the transports' checked documents, and our masking rule."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from weathernote.graphql.context import Context
from weathernote.graphql.errors import internal_error, is_internal


class CheckedDocument(SchemaExtension):
    """Runs the document the transport already parsed and validated (graphql.fastpath.Planner).

    Strawberry would otherwise parse and validate every execution again, and its
    parser and validation caches would keep a second copy of every document,
    bounded by count, not by size. An execution without a checked document
    (none of ours) is parsed and validated by Strawberry as usual.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and context.document is not None:
            self.execution_context.graphql_document = context.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and context.document is not None:
            self.execution_context.pre_execution_errors = []  # the Planner found none
        yield


class MaskInternalErrors(MaskErrors):
    """Strawberry's masking under our one rule: an internal error keeps its place and its code only."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_internal)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return internal_error(error)


def schema_extensions() -> list[type[SchemaExtension]]:
    return [CheckedDocument, MaskInternalErrors]
