"""The hot path: plan a query document once, answer repeats from rendered bytes.

Most requests are the same few documents asking for cells already cached. A
`Plan` is computed once per document: which root fields read which parts,
and which variables only carry coordinates. Binding a plan to a request's
variables yields the reads (one per root field) and a key in which every
coordinate variable is replaced by its cell, so all phones in one cell share
it. The endpoint reads the entries, and when every read was a cache hit the
response rendered for (document, key, entry versions) is reused as bytes.
Anything the planner does not understand goes down the ordinary path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
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
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_operation_ast,
    parse,
    validate,
)
from graphql.language import Visitor, visit

from weathernote.cells import Cell, Grid, InvalidCoordinates
from weathernote.entries import Part
from weathernote.graphql.selection import forecast_parts_for

_COORDINATES = ("lat", "lon")


class _NotPlannable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RootRead:
    field: str  # "current" or "forecast"
    lat: float | str  # a literal, or the name of the variable carrying it
    lon: float | str
    parts: frozenset[Part]


@dataclass(frozen=True, slots=True)
class Bound:
    reads: tuple[tuple[Cell, frozenset[Part]], ...]
    variables: dict[str, Any]  # coordinates replaced by their cell's
    key: bytes


class Plan:
    def __init__(self, reads: tuple[RootRead, ...], coordinate_variables: Mapping[str, str]) -> None:
        self.reads = reads
        self.coordinate_variables = coordinate_variables  # variable -> "lat" | "lon"

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
            key = orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return None
        return Bound(tuple(reads), normalized, key)


def _value(source: float | str, variables: Mapping[str, Any]) -> float | None:
    value = variables.get(source) if isinstance(source, str) else source
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class Planner:
    def __init__(self, schema: GraphQLSchema, cache_size: int = 1024) -> None:
        self.schema = schema
        self.plan = lru_cache(maxsize=cache_size)(self._plan)

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parse(query)
        except GraphQLError:
            return None
        if validate(self.schema, document):
            return None
        try:
            return _plan_document(document, operation_name)
        except _NotPlannable:
            return None


def _plan_document(document: DocumentNode, operation_name: str | None) -> Plan:
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        raise _NotPlannable
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    reads = []
    coordinate_uses: dict[str, set[str]] = {}
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            raise _NotPlannable
        field = selection.name.value
        if field == "current":
            parts = frozenset({Part.CURRENT})
        elif field == "forecast":
            parts = forecast_parts_for(set(_names(selection.selection_set, fragments)))
        else:
            raise _NotPlannable
        arguments = {arg.name.value: arg.value for arg in selection.arguments}
        sources = []
        for axis in _COORDINATES:
            node = arguments.get(axis)
            if isinstance(node, VariableNode):
                sources.append(node.name.value)
                coordinate_uses.setdefault(node.name.value, set()).add(axis)
            elif isinstance(node, (FloatValueNode, IntValueNode)):
                sources.append(float(node.value))
            else:
                raise _NotPlannable
        reads.append(RootRead(field, sources[0], sources[1], parts))
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
    return Plan(tuple(reads), coordinate_variables)


def _names(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]
) -> Iterator[str]:
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if not _included(selection.directives):
            continue
        if isinstance(selection, FieldNode):
            yield selection.name.value
        elif isinstance(selection, InlineFragmentNode):
            yield from _names(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None:
                raise _NotPlannable
            yield from _names(fragment.selection_set, fragments)


def _included(directives: Any) -> bool:
    for directive in directives or ():
        name = directive.name.value
        if name not in ("skip", "include"):
            continue
        [argument] = directive.arguments
        if not isinstance(argument.value, BooleanValueNode):
            raise _NotPlannable  # depends on a variable: let the ordinary path decide
        if argument.value.value is (name == "skip"):
            return False
    return True


def _variable_usages(operation: Any, fragments: Mapping[str, FragmentDefinitionNode]) -> dict[str, int]:
    counts: dict[str, int] = {}

    class Counter(Visitor):
        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            counts[node.name.value] = counts.get(node.name.value, 0) + 1

    visit(operation.selection_set, Counter())
    for fragment in fragments.values():
        visit(fragment.selection_set, Counter())
    return counts


class RenderCache:
    """Rendered responses, most recently used kept, keyed by plan, variables and entry versions."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], tuple[int, bytes]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> tuple[int, bytes] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[Any, ...], value: tuple[int, bytes]) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
