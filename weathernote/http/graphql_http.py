"""GraphQL over HTTP, per the GraphQL-over-HTTP specification.

Strawberry's own view always answers `application/json` with status 200; this
endpoint negotiates `application/graphql-response+json` too, and is the one
place where an HTTP request becomes a GraphQL operation. An error before
execution (parse, validation, operation, variables) leaves `data` out under
both media types; it answers 200 under `application/json` and 400 under
`application/graphql-response+json`, as the specification asks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from strawberry import Schema
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from weathernote.bounded import BoundedCache, kept_json
from weathernote.cache import WeatherService
from weathernote.clock import Clock
from weathernote.errors import BadRequest, ShareSpent, UpstreamUnavailable
from weathernote.fairuse import Admission, Decision, Identity
from weathernote.graphql import Context, Projector
from weathernote.graphql.documents import (
    DEFAULT_CACHE_BYTES,
    Bound,
    PersistedQueries,
    PersistedQueryError,
    Plan,
    Planner,
)
from weathernote.graphql.errors import (
    BAD_REQUEST,
    INTERNAL_SERVER_ERROR,
    QUERY_TOO_COMPLEX,
    RATE_LIMITED,
    UPSTREAM_UNAVAILABLE,
    rate_limited_error,
)
from weathernote.http import csp
from weathernote.http.caching import NO_STORE, Validity, entity_tag
from weathernote.http.observability import OPERATION_SPAN, name_operation
from weathernote.http.querystring import query_params
from weathernote.model import Grid
from weathernote.ops import metrics, requestlog

log = logging.getLogger(__name__)

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_MAX_BODY_BYTES = 256 * 1024
_SUBSCRIPTION_OVER_HTTP = "Subscriptions are served over WebSocket at /graphql."


class RequestError(BadRequest):
    """A request that is not a well-formed GraphQL-over-HTTP request."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, code: str = BAD_REQUEST
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.code = code


def response_type(accept: str | None) -> str | None:
    """The media type to answer with, or None when the client accepts neither.

    `*/*` and a missing Accept get `application/json`, which every legacy client
    understands; on equal quality `application/graphql-response+json` wins.
    """
    if not accept:
        return JSON
    best: tuple[float, bool, str] | None = None
    for item in accept.split(","):
        media, *params = (p.strip().lower() for p in item.split(";"))
        if media == GRAPHQL_RESPONSE:
            candidate = GRAPHQL_RESPONSE
        elif media in (JSON, "*/*", "application/*"):
            candidate = JSON
        else:
            continue
        quality = _quality(params)
        ranked = (quality, candidate == GRAPHQL_RESPONSE, candidate)
        if quality > 0 and (best is None or ranked > best):
            best = ranked
    return best[2] if best else None


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


class GraphQLParams:
    """One operation of a GraphQL-over-HTTP request, its fields' types checked."""

    __slots__ = ("extensions", "operation_name", "query", "variables")

    def __init__(self, raw: dict[str, Any]) -> None:
        query = raw.get("query")
        variables = raw.get("variables")
        operation_name = raw.get("operationName")
        extensions = raw.get("extensions")
        if query is not None and not isinstance(query, str):
            raise RequestError(400, "`query` must be a string")
        if variables is not None and not isinstance(variables, dict):
            raise RequestError(400, "`variables` must be an object")
        if operation_name is not None and not isinstance(operation_name, str):
            raise RequestError(400, "`operationName` must be a string")
        if extensions is not None and not isinstance(extensions, dict):
            raise RequestError(400, "`extensions` must be an object")
        self.query: str | None = query
        self.variables: dict[str, Any] | None = variables
        self.operation_name: str | None = operation_name
        self.extensions: dict[str, Any] | None = extensions


def _json_param(params: Mapping[str, str], name: str) -> Any:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise RequestError(400, f"`{name}` is not valid JSON") from None


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The body, refused from its Content-Length when too large, capped while it streams (chunked
    included) and read within `timeout` seconds: a slow or endless body costs nothing but its cap."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise RequestError(413, f"request body larger than {max_bytes} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise RequestError(413, f"request body larger than {max_bytes} bytes")
    except TimeoutError:
        raise RequestError(408, f"request body not received within {timeout:g} s") from None
    return bytes(body)


async def read_operations(
    request: Request, max_batch: int, max_body_bytes: int = _MAX_BODY_BYTES, body_timeout: float = 10.0
) -> tuple[list[GraphQLParams], bool]:
    """The request's operations, and whether it was a batch (a JSON array)."""
    if request.method == "GET":
        params = query_params(request)
        return [
            GraphQLParams(
                {
                    "query": params.get("query"),
                    "variables": _json_param(params, "variables"),
                    "operationName": params.get("operationName") or None,
                    "extensions": _json_param(params, "extensions"),
                }
            )
        ], False
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != JSON:
        raise RequestError(415, "POST bodies must be application/json")
    body = await read_body(request, max_body_bytes, body_timeout)
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(400, "request body is not valid JSON") from None
    if isinstance(raw, list):
        if not raw or len(raw) > max_batch:
            raise RequestError(400, f"a batch holds 1 to {max_batch} operations", code=QUERY_TOO_COMPLEX)
        if not all(isinstance(item, dict) for item in raw):
            raise RequestError(400, "every operation of a batch must be a JSON object")
        return [GraphQLParams(item) for item in raw], True
    if not isinstance(raw, dict):
        raise RequestError(400, "request body must be a JSON object")
    return [GraphQLParams(raw)], False


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def is_request_error(result: ExecutionResult) -> bool:
    """Errors before execution (syntax, validation, variables): no `data` at all."""
    if isinstance(result, PreExecutionError):
        return True
    return result.data is None and bool(result.errors) and all(e.path is None for e in result.errors or ())


def render(result: ExecutionResult, media: str) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {}
    request_error = is_request_error(result)
    if not request_error:
        body["data"] = result.data
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        body["extensions"] = result.extensions
    status = 400 if request_error and media == GRAPHQL_RESPONSE else 200
    return status, body


@dataclass(slots=True)
class Prepared:
    """An operation checked and planned, not yet read or executed."""

    params: GraphQLParams
    query: str | None = None
    plan: Plan | None = None
    bound: Bound | None = None
    answer: Answer | None = None  # already answered (an error before reading)
    cost: int = 1  # what admission charges: the distinct (cell, part) entries it reads
    register: str | None = None  # a new persisted query's hash, stored once the request is admitted

    def read_keys(self, weather: WeatherService) -> list[str]:
        if self.bound is None:
            return []
        return [key for cell, parts in self.bound.reads for key in weather.entry_keys(cell, list(parts))]


@dataclass(slots=True)
class Answer:
    """A rendered answer to one operation (kept in the render cache when every read was a hit)."""

    status: int
    body: bytes
    validity: Validity | None = None  # set when the answer is weather read from entries, without errors
    etag: str = ""


class GraphQLEndpoint:
    """Starlette endpoint for GET and POST /graphql."""

    def __init__(
        self,
        *,
        schema: Schema,
        planner: Planner,
        persisted: PersistedQueries,
        admission: Admission,
        weather: WeatherService,
        grid: Grid,
        clock: Clock,
        context_factory: Callable[[Request, Identity], Context],
        ide_html: bytes | None,
        max_batch: int = 10,
        max_body_bytes: int = _MAX_BODY_BYTES,
        body_timeout: float = 10.0,
        render_cache_bytes: int = DEFAULT_CACHE_BYTES,
        projector: Projector,
    ) -> None:
        self.schema = schema
        self.planner = planner
        self.persisted = persisted
        self.admission = admission
        self.weather = weather
        self.grid = grid
        self.clock = clock
        self.context_factory = context_factory
        self.ide_html = ide_html
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.renders: BoundedCache[Answer] = BoundedCache("response", render_cache_bytes)
        # (plan, bound key) whose variables coerced: checked once, not on every request
        self.coerced: BoundedCache[bool] = BoundedCache("coerced", render_cache_bytes // 16)
        self.projector = projector

    async def handle(self, request: Request) -> Response:
        if request.method == "GET" and self._wants_ide(request):
            return self._ide_page()
        media = response_type(request.headers.get("accept"))
        # a GET answer is weather an edge may keep (below), or nothing it may store
        headers: dict[str, str] = dict(NO_STORE) if request.method == "GET" else {}
        try:
            if media is None:
                raise RequestError(406, f"acceptable responses are {GRAPHQL_RESPONSE} and {JSON}")
            operations, batched = await read_operations(request, self.max_batch, self.max_body_bytes, self.body_timeout)
            prepared = [await self.prepare(request, params, media) for params in operations]
            if (span := request.scope.get(OPERATION_SPAN)) is not None:  # traced: its span says which operation
                name_operation(span, self.planner, prepared)
            # One Redis round trip decides the limit and reads what a lone operation needs.
            keys = prepared[0].read_keys(self.weather) if len(prepared) == 1 else []
            identity = self.admission.identity(request.client.host if request.client else None, request.headers)
            cost = sum(item.cost for item in prepared)
            decision, raws = await self.admission.check(identity, cost=cost, read_keys=keys)
            headers.update(self.admission.headers(decision))
            if not decision.allowed:
                return _response(429, _rate_limited_body(decision), media, headers)
            for item in prepared:  # admitted, and its document passed every check: a new APQ text is kept
                if item.register is not None and item.query is not None:
                    await self.persisted.register(item.register, item.query)
            answers = [await self.finish(request, identity, item, media, raws) for item in prepared]
        except RequestError as exc:
            body = orjson.dumps(error_body(exc.message, exc.code))
            return _response(exc.status, body, media or JSON, {**headers, **exc.headers})
        if batched:
            return _response(200, b"[" + b",".join(a.body for a in answers) + b"]", media, headers)
        [answer] = answers
        if request.method == "GET" and answer.validity is not None:
            headers.update(answer.validity.headers(answer.etag, self.clock.now_ms(), vary="Accept"))
            if answer.validity.unchanged_for(request.headers, answer.etag):
                return Response(status_code=304, headers=headers)
        return _response(answer.status, answer.body, media, headers)

    def _ide_page(self) -> Response:
        """GraphiQL, under its Content-Security-Policy (a new style nonce in every response)."""
        assert self.ide_html is not None
        html, headers = csp.ide_page(self.ide_html)
        return HTMLResponse(html, headers={**headers, "Cache-Control": "no-store"})

    def _wants_ide(self, request: Request) -> bool:
        params = query_params(request)
        if self.ide_html is None or "query" in params or "extensions" in params:
            return False
        return "text/html" in request.headers.get("accept", "")

    async def prepare(self, request: Request, params: GraphQLParams, media: str) -> Prepared:
        """Everything before reading: the query text, its plan and reads, and every refusal before execution."""
        try:
            resolved = await self.persisted.resolve(params.query, params.extensions)
        except PersistedQueryError as exc:
            if exc.status != 200:
                raise RequestError(exc.status, exc.message) from None
            return Prepared(params, answer=Answer(200, orjson.dumps(error_body(exc.message, exc.code or BAD_REQUEST))))
        query = resolved.query
        if query is None:
            raise RequestError(400, "no GraphQL query in the request")
        plan = self.planner.plan(query, params.operation_name)
        requestlog.note(operation=plan.label if plan else "other")
        bound = plan.bind(params.variables, self.grid) if plan and not plan.is_subscription else None
        # the hot path needs no second look: a plan bound to coordinates alone, or to variables it
        # bound to before (the key holds every variable, coordinates as their cell's)
        checked = (
            plan is not None
            and bound is not None
            and (plan.coordinates_only or self.coerced.get((plan.serial, bound.key)) is not None)
        )
        if not checked:
            operation, errors = self.planner.operation(query, params.operation_name, params.variables)
            if operation is None:
                return Prepared(params, answer=_refused(errors, media))
            if operation.operation is OperationType.SUBSCRIPTION:
                error = GraphQLError(_SUBSCRIPTION_OVER_HTTP, extensions={"code": BAD_REQUEST})
                return Prepared(params, answer=_refused((error,), media))
            if plan is not None and bound is not None:
                self.coerced.put((plan.serial, bound.key), True, len(bound.key))
        cost = bound.cost if bound is not None else self.planner.cost(query, params.operation_name)
        return Prepared(params, query=query, plan=plan, bound=bound, cost=cost, register=resolved.register)

    async def finish(
        self, request: Request, identity: Identity, prepared: Prepared, media: str, raws: list[bytes | None] | None
    ) -> Answer:
        if prepared.answer is not None:
            return prepared.answer
        assert prepared.query is not None
        context = self.context_factory(request, identity)
        params, plan, bound = prepared.params, prepared.plan, prepared.bound
        variables = params.variables
        render_key = None
        data = None
        if plan is not None and bound is not None:
            versions = await self._prefetch(context, bound, raws)
            variables = bound.variables
            if versions is not None:
                render_key = (plan.serial, bound.key, versions, media)
                rendered = self.renders.get(render_key)
                if rendered is not None:
                    return rendered
            found = [context.prefetched[(cell.label, parts)] for cell, parts in bound.reads]
            readings = [each for each in found if not isinstance(each, Exception)]
            if len(readings) == len(found):  # a failed read's error is execution's to place
                data = self.projector.data(plan, bound, readings)
        if data is not None:
            result = ExecutionResult(data=data, errors=None)
        else:
            context.document, _ = self.planner.checked(prepared.query)
            result = await self.schema.execute(
                prepared.query,
                variable_values=variables,
                context_value=context,
                operation_name=params.operation_name,
                operation_extensions=params.extensions,
            )
        metrics.RENDERS.labels("response").inc()
        if result.errors:
            requestlog.note(outcome=outcome_of(result.errors))
        status, body = render(result, media)
        answer = Answer(status, kept_json(body) if render_key is not None else orjson.dumps(body))
        if bound is not None and not result.errors:
            answer.validity = Validity.of(
                reading
                for readings in context.prefetched.values()
                if not isinstance(readings, Exception)
                for reading in readings.values()
            )
            answer.etag = entity_tag(answer.body) if answer.validity is not None else ""
            if render_key is not None:
                self.renders.put(render_key, answer, sys.getsizeof(answer.body) + len(bound.key))
        return answer

    async def _prefetch(
        self, context: Context, bound: Bound, raws: list[bytes | None] | None
    ) -> tuple[tuple[int, bool], ...] | None:
        """Read every entry the plan needs (or take what admission already read); when all
        came from the cache (fresh, or stale by the budget's choice), their versions and
        staleness."""
        versions: list[tuple[int, bool]] = []
        all_hits = True
        offset = 0
        for cell, parts in bound.reads:
            given = raws[offset : offset + len(parts)] if raws is not None else None
            offset += len(parts)
            try:
                readings = await context.service.read(cell, parts, given, payer=context.payer)
            except (UpstreamUnavailable, ShareSpent) as exc:
                context.prefetched[(cell.label, parts)] = exc
                all_hits = False
                continue
            context.prefetched[(cell.label, parts)] = readings
            for reading in readings.values():
                all_hits = all_hits and reading.cached
                versions.append((reading.entry.fetched_at_ms, reading.stale))
        return tuple(versions) if all_hits and versions else None


def outcome_of(errors: list[GraphQLError]) -> str:
    """The request outcome label for a result's errors: ours (masked, or uncoded) or the client's."""
    codes = {(error.extensions or {}).get("code") for error in errors}
    if RATE_LIMITED in codes:
        return "rate_limited"
    if UPSTREAM_UNAVAILABLE in codes:
        return "upstream_unavailable"
    if INTERNAL_SERVER_ERROR in codes or None in codes:
        return "error"
    return "bad_request"


def _refused(errors: tuple[GraphQLError, ...], media: str) -> Answer:
    """The answer to an operation refused before execution: its coded errors, no `data`."""
    requestlog.note(outcome="bad_request")
    status, body = render(PreExecutionError(data=None, errors=list(errors)), media)
    return Answer(status, orjson.dumps(body))


def _rate_limited_body(decision: Decision) -> bytes:
    return orjson.dumps({"errors": [rate_limited_error(decision.retry_after_seconds)]})


def _response(status: int, body: bytes, media: str, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=f"{media}; charset=utf-8", headers=headers)
