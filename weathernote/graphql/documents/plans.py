"""What a document reads, worked out once: its root fields, the parts each needs, its coordinates.

Most requests are the same few documents asking for cells already cached, and
every subscriber of a cell receives the same refresh. A `Plan` is computed
once per document: which root fields read which parts, and which variables
only carry coordinates. Binding a plan to a request's variables yields the
reads (one per root field) and a key in which every coordinate variable is
replaced by its cell, so all phones in one cell share it: responses (and
subscription payloads) rendered for (document, key, entry versions) are then
reused as bytes. Anything the planner does not understand takes the ordinary
path: full execution per request or per subscriber.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import Visitor, visit

from weathernote.bounded import kept_json
from weathernote.graphql.selection import forecast_parts_for
from weathernote.model import Cell, Grid, InvalidCoordinates, Part

_COORDINATES = ("lat", "lon")


class NotPlannable(Exception):
    """A document the planner does not understand: the ordinary path runs it."""

    pass


# root field -> whether it reads the current entry (else: forecast parts by selection)
_ROOT_FIELDS = {
    OperationType.QUERY: {"current": True, "forecast": False},
    OperationType.SUBSCRIPTION: {"weatherUpdates": True, "forecastUpdates": False},
}


# root fields over a box of cells: charged one read here (without their variables), the rest of
# their cells by their resolver (graphql.context.Context.area), and run by the ordinary path
AREA_FIELDS = frozenset({"currentArea", "weatherUpdatesInArea"})


@dataclass(frozen=True, slots=True)
class RootRead:
    """One root field of a plan: where its coordinates come from and the parts it reads."""

    node: FieldNode
    lat: float | str  # a literal, or the name of the variable carrying it
    lon: float | str
    parts: frozenset[Part]

    @property
    def response_key(self) -> str:
        """Where the field's value and errors sit in a response: its alias, else its name."""
        return self.node.alias.value if self.node.alias else self.node.name.value


@dataclass(frozen=True, slots=True)
class Bound:
    """A plan bound to one request's variables: its reads and the cell-normalised key."""

    reads: tuple[tuple[Cell, frozenset[Part]], ...]
    variables: dict[str, Any]  # coordinates replaced by their cell's
    key: bytes

    @property
    def cost(self) -> int:
        """What admission charges: the distinct (cell, part) entries the operation reads, one at least."""
        return len({(cell.label, part) for cell, parts in self.reads for part in parts}) or 1


_serials = itertools.count()


class Plan:
    """What a document reads, worked out once."""

    def __init__(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        reads: tuple[RootRead, ...],
        coordinate_variables: Mapping[str, str],
    ) -> None:
        self.serial = next(_serials)  # what render caches key on: they never keep a document alive
        self.document = document
        self.operation = operation
        self.reads = reads
        self.coordinate_variables = coordinate_variables  # variable -> "lat" | "lon"
        # then a bound plan's variables coerce (bind took numbers for them all): no need to check them again
        self.coordinates_only = all(
            definition.variable.name.value in coordinate_variables
            for definition in operation.variable_definitions or ()
        )
        # a bounded label for metrics and logs: which root fields, never client-chosen names
        self.label = "+".join(sorted({read.node.name.value for read in reads})) or "other"

    @property
    def is_subscription(self) -> bool:
        return self.operation.operation is OperationType.SUBSCRIPTION

    def values(self, schema: GraphQLSchema, variables: Mapping[str, Any]) -> VariableValues | None:
        """The operation's variables coerced, or None if they do not coerce."""
        values = get_variable_values(schema, self.operation.variable_definitions or (), dict(variables))
        return None if isinstance(values, list) else values

    def arguments(self, schema: GraphQLSchema, values: VariableValues) -> list[dict[str, Any]] | None:
        """Coerced arguments of each root field (Python values), or None if they do not coerce."""
        root = schema.get_root_type(self.operation.operation)
        assert root is not None
        try:
            return [get_argument_values(root.fields[read.node.name.value], read.node, values) for read in self.reads]
        except GraphQLError:
            return None

    def bind(self, variables: Mapping[str, Any] | None, grid: Grid) -> Bound | None:
        """The reads for these variables, or None when the ordinary path must decide."""
        variables = variables or {}
        normalized = dict(variables)
        reads = []
        for read in self.reads:
            lat, lon = _value(read.lat, variables), _value(read.lon, variables)
            if lat is None or lon is None:
                return None
            try:
                cell = grid.cell(lat, lon)
            except InvalidCoordinates:
                return None
            for source, axis in ((read.lat, "lat"), (read.lon, "lon")):
                if isinstance(source, str) and source in self.coordinate_variables:
                    normalized[source] = getattr(cell, axis)
            reads.append((cell, read.parts))
        try:
            key = kept_json(normalized, orjson.OPT_SORT_KEYS)
        except TypeError:
            return None
        return Bound(tuple(reads), normalized, key)


def _value(source: float | str, variables: Mapping[str, Any]) -> float | None:
    value = variables.get(source) if isinstance(source, str) else source
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def plan_operation(document: DocumentNode, operation: OperationDefinitionNode) -> Plan:
    if operation.operation not in _ROOT_FIELDS:
        raise NotPlannable
    root_fields = _ROOT_FIELDS[operation.operation]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    reads = []
    coordinate_uses: dict[str, set[str]] = {}
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            raise NotPlannable
        reads_current = root_fields.get(selection.name.value)
        if reads_current is None:
            raise NotPlannable
        if reads_current:
            parts = frozenset({Part.CURRENT})
        else:
            parts = forecast_parts_for(set(_names(selection.selection_set, fragments)))
            if not parts and operation.operation is OperationType.SUBSCRIPTION:
                parts = frozenset({Part.DAILY})  # something must announce the refreshes
        arguments = {arg.name.value: arg.value for arg in selection.arguments or ()}
        sources: list[str | float] = []
        for axis in _COORDINATES:
            node = arguments.get(axis)
            if isinstance(node, VariableNode):
                sources.append(node.name.value)
                coordinate_uses.setdefault(node.name.value, set()).add(axis)
            elif isinstance(node, (FloatValueNode, IntValueNode)):
                sources.append(float(node.value))
            else:
                raise NotPlannable
        reads.append(RootRead(selection, sources[0], sources[1], parts))
    usage_counts = _variable_usages(operation, fragments)
    per_axis_counts = {name: 0 for name in coordinate_uses}
    for read in reads:
        for source in (read.lat, read.lon):
            if isinstance(source, str):
                per_axis_counts[source] += 1
    # A variable may stand for its cell only if coordinates are all it carries.
    coordinate_variables = {
        name: next(iter(axes))
        for name, axes in coordinate_uses.items()
        if len(axes) == 1 and usage_counts.get(name) == per_axis_counts[name]
    }
    return Plan(document, operation, tuple(reads), coordinate_variables)


def read_cost(document: DocumentNode, operation: OperationDefinitionNode) -> int:
    """What admission charges an operation the planner could not bind: an upper bound of the entries
    its root fields read (aliases and fragments counted, @skip and @include not trusted); a box one,
    its resolver charging its other cells once it knows them."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    reads_current = {**_ROOT_FIELDS[OperationType.QUERY], **_ROOT_FIELDS[OperationType.SUBSCRIPTION]}
    cost = 0
    for field in _root_fields(operation.selection_set, fragments, set()):
        if field.name.value in AREA_FIELDS:
            cost += 1
            continue
        current = reads_current.get(field.name.value)
        if current is None:
            continue  # introspection, __typename: nothing read
        if current:
            cost += 1
            continue
        try:
            cost += max(1, len(forecast_parts_for(set(_names(field.selection_set, fragments)))))
        except NotPlannable:
            cost += 2
    return max(1, cost)


def _root_fields(
    selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode], visiting: set[str]
) -> Iterator[FieldNode]:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _root_fields(selection.selection_set, fragments, visiting)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in visiting:
                yield from _root_fields(fragment.selection_set, fragments, visiting | {name})


def _names(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]) -> Iterator[str]:
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if not included(selection.directives):
            continue
        if isinstance(selection, FieldNode):
            yield selection.name.value
        elif isinstance(selection, InlineFragmentNode):
            yield from _names(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None:
                raise NotPlannable
            yield from _names(fragment.selection_set, fragments)


def included(directives: Any) -> bool:
    """Whether literal @skip/@include keep a selection; NotPlannable for what depends on a variable
    or any other directive (@defer, say)."""
    for directive in directives or ():
        name = directive.name.value
        if name not in ("skip", "include"):
            raise NotPlannable
        [argument] = directive.arguments
        if not isinstance(argument.value, BooleanValueNode):
            raise NotPlannable  # depends on a variable: let the ordinary path decide
        if argument.value.value is (name == "skip"):
            return False
    return True


def _variable_usages(operation: Any, fragments: Mapping[str, FragmentDefinitionNode]) -> dict[str, int]:
    counts: dict[str, int] = {}

    class Counter(Visitor):
        """Counts the uses of each variable in a selection."""

        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            counts[node.name.value] = counts.get(node.name.value, 0) + 1

    visit(operation.selection_set, Counter())
    for fragment in fragments.values():
        visit(fragment.selection_set, Counter())
    return counts
