"""Subscription payloads rendered once per document, cell and entry version, then shared as strings."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from inspect import isawaitable
from typing import Any

import orjson
from graphql import ExecutionResult, GraphQLSchema, execute, located_error

from weathernote.bounded import BoundedCache
from weathernote.cache import Reading
from weathernote.graphql.documents import DEFAULT_CACHE_BYTES, Bound, Plan
from weathernote.graphql.errors import mask_internal
from weathernote.graphql.projection import Projector
from weathernote.model import Part
from weathernote.ops import metrics


class PayloadRenderer:
    """Subscription payloads, rendered once per plan, cell-normalised variables and entry versions.

    Every subscriber of a cell with the same document gets the same payload
    string; only the first of them pays for rendering it (by projection, or
    by execution where the projection leaves it to execution).
    """

    def __init__(self, schema: GraphQLSchema, projector: Projector, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.schema = schema
        self.projector = projector
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
        data = self.projector.data(plan, bound, [readings])
        if data is not None:
            payload = orjson.dumps({"data": data}).decode()
        else:
            payload = await self._execute(plan, bound, arguments, readings)
        self.cache.put(key, payload, sys.getsizeof(payload) + len(bound.key))
        metrics.RENDERS.labels("subscription").inc()
        return payload

    async def _execute(
        self, plan: Plan, bound: Bound, arguments: Mapping[str, Any], readings: Mapping[Part, Reading]
    ) -> str:
        """The payload by execution, for what the projection leaves to it (and the errors it reports)."""
        [read] = plan.reads  # a subscription has exactly one root field
        try:
            root = self.projector.build_root(read.node.name.value, bound.reads[0][0], readings, arguments)
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
        return orjson.dumps(body).decode()
