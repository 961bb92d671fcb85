"""The one way into a GraphQL document: each distinct text checked (limits, parse, validation) and
planned once, the results kept within a byte budget."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    get_operation_ast,
)
from graphql.execution.values import get_variable_values

from weathernote.bounded import BoundedCache
from weathernote.graphql.documents.limits import DocumentChecker, DocumentLimits
from weathernote.graphql.documents.plans import NotPlannable, Plan, plan_operation, read_cost
from weathernote.graphql.errors import BAD_USER_INPUT, OPERATION_RESOLUTION_FAILURE, coded

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # per cache: responses, subscription payloads, documents
# a parsed document (with its plan) holds 50 to 170 bytes per character of its text,
# the most for short texts; charged generously, since comments are charged too
DOCUMENT_BYTES_PER_CHAR = 128


@dataclass(slots=True)
class _Checked:
    """A query text checked, and its operations' plans (by name, as the document defines them)."""

    document: DocumentNode | None  # only if it passed every check
    errors: tuple[GraphQLError, ...]
    plans: dict[str | None, Plan | None] = field(default_factory=dict)


class Planner:
    """Checks and plans each distinct query text once; keeps the results within a byte budget."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: DocumentLimits | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.schema = schema
        self.checker = DocumentChecker(schema, limits or DocumentLimits())
        self._documents: BoundedCache[_Checked] = BoundedCache("document", cache_bytes)

    def _entry(self, query: str) -> _Checked:
        entry = self._documents.get(query)
        if entry is None:
            document, errors = self.checker.check(query)
            entry = _Checked(None if errors else document, errors)
            self._documents.put(query, entry, DOCUMENT_BYTES_PER_CHAR * len(query))
        return entry

    def checked(self, query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
        """The document if it passed every check (None otherwise), and its coded errors.

        The one way into an execution: a transport puts this document on the
        context, and Strawberry runs nothing else (graphql.extensions.CheckedDocument).
        """
        entry = self._entry(query)
        return entry.document, entry.errors

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The document's plan, or None when the ordinary path must run it."""
        entry = self._entry(query)
        if entry.document is None:
            return None
        if operation_name in entry.plans:
            return entry.plans[operation_name]
        operation = get_operation_ast(entry.document, operation_name)
        if operation is None:
            return None  # not kept: a client may invent any number of names
        try:
            plan: Plan | None = plan_operation(entry.document, operation)
        except NotPlannable:
            plan = None
        entry.plans[operation_name] = plan
        return plan

    def cost(self, query: str, operation_name: str | None) -> int:
        """What admission charges the operation: the entries it reads (an upper bound), one at least."""
        entry = self._entry(query)
        if entry.document is None:
            return 1
        operation = get_operation_ast(entry.document, operation_name)
        return 1 if operation is None else read_cost(entry.document, operation)

    def operation(
        self, query: str, operation_name: str | None, variables: Mapping[str, Any] | None
    ) -> tuple[OperationDefinitionNode | None, tuple[GraphQLError, ...]]:
        """The operation a request runs, or the coded errors that keep it from running at all.

        Parse (GRAPHQL_PARSE_FAILED), validation (GRAPHQL_VALIDATION_FAILED, or a
        limit's QUERY_TOO_COMPLEX), which operation (OPERATION_RESOLUTION_FAILURE)
        and the variables' coercion (BAD_USER_INPUT): everything that fails before
        execution, so that no transport leaves it to Strawberry to report without a code.
        """
        document, errors = self.checked(query)
        if document is None:
            return None, errors
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                f"Unknown operation named '{operation_name}'."
                if operation_name
                else "Must provide operation name if query contains multiple operations."
            )
            return None, (GraphQLError(message, extensions={"code": OPERATION_RESOLUTION_FAILURE}),)
        values = get_variable_values(
            self.schema,
            operation.variable_definitions or (),
            dict(variables or {}),
            hide_suggestions=not self.checker.limits.field_suggestions,
        )
        if isinstance(values, list):
            return None, tuple(coded(error, BAD_USER_INPUT) for error in values)
        return operation, ()
