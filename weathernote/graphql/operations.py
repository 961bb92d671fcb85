"""One GraphQL operation of a streaming transport (WebSocket today), whatever its protocol.

A planned subscription, once its first payload is sent, is served by callbacks
(`live.Feeds`): rendered once per cell, document and version, no task waiting
for it. Documents the planner does not understand still run through
Strawberry's generic execution, in the transport's task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from graphql import OperationDefinitionNode, OperationType
from strawberry import Schema
from strawberry.types import ExecutionResult

from weathernote.errors import ShareSpent, UpstreamUnavailable
from weathernote.graphql.context import Context
from weathernote.graphql.documents import Bound, PersistedQueries, PersistedQueryError, Plan, Planner
from weathernote.graphql.errors import BAD_REQUEST, error_dict, share_spent, upstream_unavailable
from weathernote.graphql.projection import valid_days
from weathernote.graphql.rendering import PayloadRenderer
from weathernote.live import Feed, Feeds
from weathernote.ops import requestlog


class Emitter(Protocol):
    """Where one operation's results go: `emit` writes one and waits; `push` (a feed's outlet) never waits."""

    async def emit(self, payload: str) -> None: ...

    def push(self, payload: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """An operation checked and planned, with what admission charges it, not yet run."""

    query: str
    operation: OperationDefinitionNode
    variables: dict[str, Any]
    operation_name: str | None
    plan: Plan | None
    bound: Bound | None  # a planned subscription bound to its variables
    cost: int
    register: str | None  # a new persisted query's hash, kept once admitted


class Operations:
    """Runs one operation of a streaming connection: checks, plans, subscribes or executes."""

    def __init__(
        self, schema: Schema, planner: Planner, renderer: PayloadRenderer, persisted: PersistedQueries, feeds: Feeds
    ) -> None:
        self.schema = schema
        self.planner = planner
        self.renderer = renderer
        self.persisted = persisted
        self.feeds = feeds

    async def prepare(self, payload: dict[str, Any], context: Context) -> Prepared | list[dict[str, Any]]:
        """The operation checked and planned, with what admission charges it; or the coded errors
        that keep it from running at all. Nothing is stored yet."""
        query = payload.get("query")
        variables = payload.get("variables") or {}
        operation_name = payload.get("operationName")
        extensions = payload.get("extensions")
        if (
            not (query is None or isinstance(query, str))
            or not isinstance(variables, dict)
            or not (operation_name is None or isinstance(operation_name, str))
            or not (extensions is None or isinstance(extensions, dict))
        ):
            return [
                error_dict("subscribe payload: `query` a string, `variables` and `extensions` objects", BAD_REQUEST)
            ]
        try:
            resolved = await self.persisted.resolve(query, extensions)
        except PersistedQueryError as exc:
            return [error_dict(exc.message, exc.code or BAD_REQUEST)]
        query = resolved.query
        if query is None:
            return [error_dict("subscribe payload needs a `query` (or a known persisted query hash)", BAD_REQUEST)]
        operation, errors = self.planner.operation(query, operation_name, variables)
        if operation is None:
            return [dict(error.formatted) for error in errors]
        plan = self.planner.plan(query, operation_name)
        bound = plan.bind(variables, context.grid) if plan is not None and plan.is_subscription else None
        return Prepared(
            query=query,
            operation=operation,
            variables=variables,
            operation_name=operation_name,
            plan=plan,
            bound=bound,
            cost=bound.cost if bound is not None else self.planner.cost(query, operation_name),
            register=resolved.register,
        )

    async def run(self, prepared: Prepared, context: Context, emitter: Emitter) -> list[dict[str, Any]] | Feed | None:
        """An admitted operation: emit each result, or the first one and return the feed that pushes
        the rest (`leave` it when done). Errors (GraphQL formatted, coded) are returned if it never started."""
        if prepared.register is not None:  # admitted and valid: a new APQ text is kept
            await self.persisted.register(prepared.register, prepared.query)
        plan, bound = prepared.plan, prepared.bound
        requestlog.note(operation=plan.label if plan else "other")
        if plan is not None and bound is not None:
            values = plan.values(self.schema._schema, bound.variables)
            arguments = plan.arguments(self.schema._schema, values) if values is not None else None
            if arguments is not None and valid_days(arguments[0]):
                return await self._subscribe_planned(plan, bound, arguments[0], context, emitter)
        return await self._run_generic(prepared, context, emitter)

    async def _subscribe_planned(
        self, plan: Plan, bound: Bound, arguments: dict[str, Any], context: Context, emitter: Emitter
    ) -> Feed | None:
        cell, parts = bound.reads[0]

        async def render(readings: Any) -> str:
            return await self.renderer.render(plan, bound, arguments, readings)

        feed = await self.feeds.join((plan.serial, bound.key), cell, parts, render, context.payer.client)
        try:
            # the feed listens already: a refresh landing meanwhile is not lost
            readings = await feed.read(context.payer)
            await emitter.emit(await feed.render(readings))
        except (UpstreamUnavailable, ShareSpent) as exc:
            await self.feeds.leave(feed, None, context.payer.client)
            error = share_spent(exc.retry_after) if isinstance(exc, ShareSpent) else upstream_unavailable()
            error.path = [plan.reads[0].response_key]
            await emitter.emit(orjson.dumps({"data": None, "errors": [error.formatted]}).decode())
            return None
        except BaseException:
            await self.feeds.leave(feed, None, context.payer.client)
            raise
        feed.add(emitter, readings)
        return feed

    async def leave(self, feed: Feed, emitter: Emitter, context: Context) -> None:
        """The end of a subscription `run` handed to a feed."""
        await self.feeds.leave(feed, emitter, context.payer.client)

    async def _run_generic(self, prepared: Prepared, context: Context, emitter: Emitter) -> list[dict[str, Any]] | None:
        """Strawberry's own execution, of a document the Planner checked but could not plan."""
        query, operation, variables, operation_name = (
            prepared.query,
            prepared.operation,
            prepared.variables,
            prepared.operation_name,
        )
        context.document, _ = self.planner.checked(query)
        if operation.operation is OperationType.SUBSCRIPTION:
            stream = await self.schema.subscribe(
                query, variable_values=variables, context_value=context, operation_name=operation_name
            )
            if isinstance(stream, ExecutionResult):
                return _formatted(stream)
            async for result in stream:
                await emitter.emit(_payload(result))
            return None
        result = await self.schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
        await emitter.emit(_payload(result))
        return None


def _formatted(result: ExecutionResult) -> list[dict[str, Any]]:
    return [dict(error.formatted) for error in result.errors or ()]


def _payload(result: ExecutionResult) -> str:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return orjson.dumps(body).decode()
