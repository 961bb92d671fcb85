"""Planned payloads built from the objects their root fields resolve to, without execution.

When the render caches miss, a planned operation's answer used to go through
Strawberry's execution: an extension pipeline, a resolver call, and graphql-core
completing every field through its general machinery (about 230 µs for the app's
CurrentWeather). Its data is already known once the entries are read: the root
field's object (`build_root`) and the selection. A `Projection` compiles a plan's
selection once against the schema into a tree of getters (aliases, fragments,
literal @skip/@include, `__typename`, and the field resolvers that need nothing
but their arguments) and then only reads attributes and serializes leaves.

What the compiler does not know (an abstract type, a directive that depends on a
variable, @defer, a resolver that wants its Info) makes the plan unprojectable,
and execution runs it. What execution would report as an error (a null in a
non-null field, a resolver refusing an argument) makes the projection give up,
and execution runs it and reports the error: both paths answer the same bytes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    Undefined,
)
from graphql.execution.values import VariableValues, get_argument_values

from weathernote.cache import Reading
from weathernote.graphql.context import check_days
from weathernote.graphql.documents import Bound, NotPlannable, Plan, included
from weathernote.model import Cell, Part

BuildRoot = Callable[[str, Cell, Mapping[Part, Reading], Mapping[str, Any]], Any]
# one field of a projected object: its value from the object and the operation's variables
Getter = Callable[[Any, VariableValues], Any]
_SCALAR_ARGUMENTS = frozenset({"Int", "Float", "String", "Boolean", "ID"})


class Unprojectable(Exception):
    """A selection the projection does not know how to answer: execution runs it."""


class _Null(Exception):
    """A null where the schema promises a value: execution reports it, with its path."""


class Projection:
    """A plan's selection compiled once: the response data from its root fields' objects."""

    def __init__(self, schema: GraphQLSchema, plan: Plan) -> None:
        fragments = {d.name.value: d for d in plan.document.definitions if isinstance(d, FragmentDefinitionNode)}
        compiler = _Compiler(fragments)
        root_type = schema.get_root_type(plan.operation.operation)
        if root_type is None:
            raise Unprojectable("no root type")
        self.keys = tuple(read.response_key for read in plan.reads)
        if len(set(self.keys)) != len(self.keys):
            raise Unprojectable("root fields merged under one response key")
        self.roots = tuple(
            compiler.completer(root_type.fields[read.node.name.value].type, [read.node]) for read in plan.reads
        )

    def data(self, roots: Sequence[Any], values: VariableValues) -> dict[str, Any]:
        """The response's `data`: each root field's object projected (raises where execution would report)."""
        return {key: complete(root, values) for key, complete, root in zip(self.keys, self.roots, roots, strict=True)}


class _Compiler:
    """Turns selections into getters against the schema's types, fragments flattened and merged."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments

    def completer(self, type_: GraphQLOutputType, nodes: list[FieldNode]) -> Getter:
        """How a value of `type_` selected by `nodes` becomes its response value."""
        if isinstance(type_, GraphQLNonNull):
            inner = self.completer(type_.of_type, nodes)

            def non_null(value: Any, values: VariableValues) -> Any:
                if value is None:
                    raise _Null
                return inner(value, values)

            return non_null
        if isinstance(type_, GraphQLList):
            item = self.completer(type_.of_type, nodes)
            return lambda value, values: None if value is None else [item(each, values) for each in value]
        if isinstance(type_, (GraphQLScalarType, GraphQLEnumType)):
            return _leaf(type_)
        if isinstance(type_, GraphQLObjectType):
            fields = self.fields(type_, [node.selection_set for node in nodes if node.selection_set])

            def object_(value: Any, values: VariableValues) -> Any:
                if value is None:
                    return None
                return {key: get(value, values) for key, get in fields}

            return object_
        raise Unprojectable(f"{type_} is abstract")

    def fields(self, type_: GraphQLObjectType, selections: list[SelectionSetNode]) -> tuple[tuple[str, Getter], ...]:
        grouped: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selections:
            self._collect(type_, selection_set, grouped, visited)
        return tuple((key, self.getter(type_, nodes)) for key, nodes in grouped.items())

    def _collect(
        self,
        type_: GraphQLObjectType,
        selection_set: SelectionSetNode,
        grouped: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        """graphql-core's field collection, for what a planned selection may hold."""
        for selection in selection_set.selections:
            if not included(selection.directives):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                grouped.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if selection.type_condition is not None and selection.type_condition.name.value != type_.name:
                    raise Unprojectable("a fragment on another type")
                self._collect(type_, selection.selection_set, grouped, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue  # execution collects each fragment once per selection
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is None or fragment.type_condition.name.value != type_.name:
                    raise Unprojectable("a fragment on another type")
                self._collect(type_, fragment.selection_set, grouped, visited)

    def getter(self, type_: GraphQLObjectType, nodes: list[FieldNode]) -> Getter:
        """One field of `type_`: where its value comes from, then how it completes."""
        name = nodes[0].name.value
        if name == "__typename":
            type_name = type_.name
            return lambda source, values: type_name
        field = type_.fields.get(name)
        definition = field.extensions.get("strawberry-definition") if field is not None else None
        if field is None or definition is None or definition.permission_classes or definition.extensions:
            raise Unprojectable(f"{type_.name}.{name} is not a plain field")
        complete = self.completer(field.type, nodes)
        resolver = definition.base_resolver
        if resolver is None:
            attribute = definition.python_name
            return lambda source, values: complete(getattr(source, attribute), values)
        if resolver.is_async or resolver.info_parameter or resolver.root_parameter or resolver.parent_parameter:
            raise Unprojectable(f"{type_.name}.{name} needs more than its arguments")
        python_names = {}
        for argument_name, argument in field.args.items():
            argument_definition = argument.extensions.get("strawberry-definition")
            if argument_definition is None or _named(argument.type) not in _SCALAR_ARGUMENTS:
                raise Unprojectable(f"{type_.name}.{name} takes a non-scalar argument")
            python_names[argument_name] = argument_definition.python_name
        function, node = resolver.wrapped_func, nodes[0]

        def resolved(source: Any, values: VariableValues) -> Any:
            arguments = get_argument_values(field, node, values)
            return complete(function(source, **{python_names[k]: v for k, v in arguments.items()}), values)

        return resolved


def _leaf(type_: GraphQLScalarType | GraphQLEnumType) -> Getter:
    serialize = type_.serialize

    def leaf(value: Any, values: VariableValues) -> Any:
        if value is None:
            return None
        serialized = serialize(value)
        if serialized is None or serialized is Undefined:
            raise _Null  # execution reports the failed serialization
        return serialized

    return leaf


def _named(type_: Any) -> str:
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        type_ = type_.of_type
    return str(type_.name)


class Projector:
    """Answers planned operations from their readings without execution, where their plans allow it.

    Each plan is compiled once (kept while the plan lives); `data` gives None
    whenever execution must answer instead.
    """

    def __init__(self, schema: GraphQLSchema, build_root: BuildRoot) -> None:
        self.schema = schema
        self.build_root = build_root
        self._projections: weakref.WeakKeyDictionary[Plan, Projection | None] = weakref.WeakKeyDictionary()

    def projection(self, plan: Plan) -> Projection | None:
        if plan in self._projections:
            return self._projections[plan]
        try:
            projection: Projection | None = Projection(self.schema, plan)
        except (Unprojectable, NotPlannable):
            projection = None
        self._projections[plan] = projection
        return projection

    def data(self, plan: Plan, bound: Bound, readings: Sequence[Mapping[Part, Reading]]) -> dict[str, Any] | None:
        """The response data of `plan` bound to `bound` over each root field's readings, or None
        when execution must answer (unprojectable, arguments that do not coerce, an error to report)."""
        projection = self.projection(plan)
        if projection is None:
            return None
        values = plan.values(self.schema, bound.variables)
        arguments = plan.arguments(self.schema, values) if values is not None else None
        if values is None or arguments is None or not all(map(valid_days, arguments)):
            return None
        try:
            roots = [
                self.build_root(read.node.name.value, cell, found, args)
                for read, (cell, _), found, args in zip(plan.reads, bound.reads, readings, arguments, strict=True)
            ]
            return projection.data(roots, values)
        except Exception:  # a null, a refused argument, a model that does not fit: execution reports it
            return None


def valid_days(arguments: Mapping[str, Any]) -> bool:
    """The resolver's own check: days it refuses take the generic path, which answers them."""
    days = arguments.get("days")
    if days is None:
        return True
    try:
        check_days(days)
    except GraphQLError:
        return False
    return True
