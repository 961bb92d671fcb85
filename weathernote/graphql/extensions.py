"""The schema's extension pipeline: the one way into an execution."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from weathernote.graphql.context import Context


class UncheckedDocument(RuntimeError):
    """An execution whose context carries no document the Planner passed: a transport's bug."""


class CheckedDocument(SchemaExtension):
    """Strawberry runs the document the Planner passed (graphql.documents.Planner.checked), and nothing else.

    The Planner parses and validates each text once, under the document limits;
    a transport puts the document it passed on the context. Strawberry then
    neither parses nor validates again (nor keeps a second copy of each
    document in its caches, bounded by count, not size), and the query text it
    was given is not read at all. An execution without such a document is
    refused, before anything is parsed, as an internal error (logged and masked
    like any other): a document that skipped the limits cannot run, whichever
    transport forgot them.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context.context
        if not isinstance(context, Context) or context.document is None:
            raise UncheckedDocument("no document checked by the Planner on the context")
        self.execution_context.graphql_document = context.document
        yield

    def on_validate(self) -> Iterator[None]:
        self.execution_context.pre_execution_errors = []  # the Planner found none
        yield


def schema_extensions() -> list[type[SchemaExtension]]:
    return [CheckedDocument]
