"""The schema's extension pipeline: the transports' checked documents."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from weathernote.graphql.context import Context


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


def schema_extensions() -> list[type[SchemaExtension]]:
    return [CheckedDocument]
