"""The hot path: plan a document once, reuse what it renders for a cell.

Most requests are the same few documents asking for cells already cached, and
every subscriber of a cell receives the same refresh. A `Plan` is computed
once per document: which root fields read which parts, and which variables
only carry coordinates. Binding a plan to a request's variables yields the
reads (one per root field) and a key in which every coordinate variable is
replaced by its cell, so all phones in one cell share it. Responses (and
subscription payloads) rendered for (document, key, entry versions) are then
reused as bytes. Anything the planner does not understand takes the ordinary
path: full execution per request or per subscriber.
"""

from __future__ import annotations

import itertools
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from graphql import (
    BooleanValueNode,
    DocumentNode,
    ExecutionResult,
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
    execute,
    get_operation_ast,
    located_error,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.language import Visitor, visit

from weathernote.graphql.documents.limits import DocumentChecker, DocumentLimits
from weathernote.graphql.errors import BAD_USER_INPUT, OPERATION_RESOLUTION_FAILURE, coded, mask_internal
from weathernote.graphql.selection import forecast_parts_for
from weathernote.model.cells import Cell, Grid, InvalidCoordinates
from weathernote.model.entries import Part
from weathernote.ops import metrics

if TYPE_CHECKING:
    from weathernote.cache.service import Reading

_COORDINATES = ("lat", "lon")

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # per cache: responses, subscription payloads, documents
# what an entry costs beside what its owner weighs: its key's tuple, versions and slot
ENTRY_OVERHEAD_BYTES = 512
# a parsed document (with its plan) holds 50 to 170 bytes per character of its text,
# the most for short texts; charged generously, since comments are charged too
DOCUMENT_BYTES_PER_CHAR = 128

V = TypeVar("V")


class _NotPlannable(Exception):
    pass


# root field -> whether it reads the current entry (else: forecast parts by selection)
_ROOT_FIELDS = {
    OperationType.QUERY: {"current": True, "forecast": False},
    OperationType.SUBSCRIPTION: {"weatherUpdates": True, "forecastUpdates": False},
}


@dataclass(frozen=True, slots=True)
class RootRead:
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
    reads: tuple[tuple[Cell, frozenset[Part]], ...]
    variables: dict[str, Any]  # coordinates replaced by their cell's
    key: bytes


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

    def arguments(self, schema: GraphQLSchema, variables: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """Coerced arguments of each root field (Python values), or None if they do not coerce."""
        values = get_variable_values(schema, self.operation.variable_definitions or (), dict(variables))
        if isinstance(values, list):
            return None
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
            plan: Plan | None = _plan_operation(entry.document, operation)
        except _NotPlannable:
            plan = None
        entry.plans[operation_name] = plan
        return plan

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


def _plan_operation(document: DocumentNode, operation: OperationDefinitionNode) -> Plan:
    if operation.operation not in _ROOT_FIELDS:
        raise _NotPlannable
    root_fields = _ROOT_FIELDS[operation.operation]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    reads = []
    coordinate_uses: dict[str, set[str]] = {}
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            raise _NotPlannable
        reads_current = root_fields.get(selection.name.value)
        if reads_current is None:
            raise _NotPlannable
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
                raise _NotPlannable
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


def _names(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode]) -> Iterator[str]:
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


def kept_json(value: Any, option: int = 0) -> bytes:
    """`value` as JSON bytes sized to their length, for anything a cache keeps.

    orjson returns its output inside the buffer it grew (4 KB at least): a
    50-byte key kept as returned holds 4 KB of memory that `len` and
    `sys.getsizeof` do not show, and a byte budget would be off by 80 times.
    """
    return bytes(memoryview(orjson.dumps(value, option=option)))


class BoundedCache(Generic[V]):
    """A least-recently-used map bounded in bytes, its size exported as a gauge.

    A count says nothing of memory here: a rendered response can be a few hundred
    bytes or, for a 16-day forecast with every hour and field, half a megabyte.
    Each entry is charged what its owner says it weighs plus a fixed overhead.
    """

    def __init__(self, kind: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._gauge = metrics.RENDER_CACHE_BYTES.labels(kind)
        self._gauge.set(0)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        size += ENTRY_OVERHEAD_BYTES
        previous = self._items.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        if size <= self.max_bytes:  # larger would evict everything else and still not fit
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted
        self._gauge.set(self.bytes)


BuildRoot = Callable[[str, Cell, Mapping[Part, "Reading"], Mapping[str, Any]], Any]


class PayloadRenderer:
    """Subscription payloads, rendered once per plan, cell-normalised variables and entry versions.

    Every subscriber of a cell with the same document gets the same payload
    string; only the first of them pays for executing the selection.
    """

    def __init__(self, schema: GraphQLSchema, build_root: BuildRoot, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.schema = schema
        self.build_root = build_root
        self.cache: BoundedCache[str] = BoundedCache("subscription", max_bytes)

    async def render(
        self, plan: Plan, bound: Bound, arguments: Mapping[str, Any], readings: Mapping[Part, Reading]
    ) -> str:
        versions = tuple(
            (part.value, reading.entry.fetched_at_ms, reading.cached, reading.stale)
            for part, reading in sorted(readings.items(), key=lambda item: item[0].value)
        )
        key = (plan.serial, bound.key, versions)
        cached: str | None = self.cache.get(key)
        if cached is not None:
            return cached
        [read] = plan.reads  # a subscription has exactly one root field
        try:
            root = self.build_root(read.node.name.value, bound.reads[0][0], readings, arguments)
        except Exception as exc:
            # where the resolver's failure would be: at its field, then masked and logged like it
            result = ExecutionResult(None, [located_error(exc, [read.node], [read.response_key])])
        else:
            executed = execute(
                self.schema,
                plan.document,
                root_value=root,
                variable_values=bound.variables,
                operation_name=plan.operation.name.value if plan.operation.name else None,
            )
            result = await executed if isawaitable(executed) else executed
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            mask_internal(result.errors)
            body["errors"] = [error.formatted for error in result.errors]
        payload = orjson.dumps(body).decode()
        self.cache.put(key, payload, sys.getsizeof(payload) + len(bound.key))
        metrics.RENDERS.labels("subscription").inc()
        return payload
