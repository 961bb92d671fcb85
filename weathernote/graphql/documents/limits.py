"""Refusing abusive documents cheaply: size, tokens, depth, aliases, introspection.

Checked once per distinct document (the result is cached with the parse), on
HTTP and WebSocket alike, before anything executes. Depth and alias counts
follow fragments and ignore introspection fields, as graphql-armor does, so
GraphiQL keeps working under the defaults (depth 6, aliases 15, tokens 1000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)

from weathernote.graphql.documents.rules import with_class_lookups
from weathernote.graphql.errors import (
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    QUERY_TOO_COMPLEX,
    coded,
)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """How large and deep a document may be, and what it may ask of the schema."""

    max_depth: int = 6
    max_aliases: int = 15
    max_tokens: int = 1000
    max_bytes: int = 16384
    introspection: bool = True
    field_suggestions: bool = True


def too_complex(message: str, node: Any = None) -> GraphQLError:
    return GraphQLError(message, node, extensions={"code": QUERY_TOO_COMPLEX})


def _measure(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    visiting: frozenset[str] = frozenset(),
) -> tuple[int, int]:
    """(depth, aliases) of a selection set, fragments expanded, introspection ignored."""
    if selection_set is None:
        return 0, 0
    depth = aliases = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            child_depth, child_aliases = _measure(selection.selection_set, fragments, visiting)
            depth = max(depth, 1 + child_depth)
            aliases += child_aliases + (1 if selection.alias else 0)
        else:
            if isinstance(selection, InlineFragmentNode):
                inner = selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in visiting:
                    continue  # unknown or cyclic: the spec's own rules report it
                inner, visiting = fragment.selection_set, visiting | {name}
            else:
                continue
            child_depth, child_aliases = _measure(inner, fragments, visiting)
            depth = max(depth, child_depth)
            aliases += child_aliases
    return depth, aliases


def complexity_rule(limits: DocumentLimits) -> type[ASTValidationRule]:
    class ComplexityRule(ASTValidationRule):
        """Reports an operation deeper, or with more aliases, than the limits allow."""

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            document = self.context.document
            fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
            depth, aliases = _measure(node.selection_set, fragments)
            if depth > limits.max_depth:
                self.report_error(too_complex(f"Query depth {depth} exceeds the maximum of {limits.max_depth}.", node))
            if aliases > limits.max_aliases:
                self.report_error(too_complex(f"{aliases} aliases exceed the maximum of {limits.max_aliases}.", node))

    return ComplexityRule


class DocumentChecker:
    """Parse and validate a query text under the limits; rules are built once."""

    def __init__(self, schema: GraphQLSchema, limits: DocumentLimits) -> None:
        self.schema = schema
        self.limits = limits
        rules = [*specified_rules, complexity_rule(limits)]
        if not limits.introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = with_class_lookups(rules)

    def check(self, query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
        """The parsed document (None if it does not parse) and its errors, each with its code."""
        if len(query.encode()) > self.limits.max_bytes:
            return None, (too_complex(f"The document exceeds {self.limits.max_bytes} bytes."),)
        try:
            document = parse(query, max_tokens=self.limits.max_tokens)
        except GraphQLError as error:
            if "tokens" in error.message and "Parsing aborted" in error.message:
                return None, (too_complex(f"The document exceeds {self.limits.max_tokens} tokens."),)
            return None, (coded(error, GRAPHQL_PARSE_FAILED),)
        errors = validate(self.schema, document, self.rules, hide_suggestions=not self.limits.field_suggestions)
        return document, tuple(coded(error, GRAPHQL_VALIDATION_FAILED) for error in errors)
