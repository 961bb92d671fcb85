"""One way into a document: the planned path answers what Strawberry answers, failures alike.

A planned document skips Strawberry's resolvers for its reads (HTTP reads what
the plan says before executing) or for all of its root (a subscription payload
is rendered from objects the plan builds). Both must agree with Strawberry's
own execution of the same document over the same readings. Documents come from
`schema.graphql` through hypothesis-graphql, with coordinates and counts drawn
from small pools, so that most of them are planned and some are refused; their
literal arguments are sometimes lifted into variables, which the planner
replaces by their cell's. Each part read has its own version and flags, so a
plan that reads other parts than the resolvers would shows in `cached`, `stale`
or `fetchedAt`. A failure of ours is logged once and masked on every path, and
Strawberry runs no document the Planner did not pass. Everything runs in this
process: no Redis, no server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import graphql
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries
from strawberry.types import ExecutionResult

from weathernote.cache import Reading, WeatherService
from weathernote.graphql import PayloadRenderer, Projector
from weathernote.graphql.context import Context
from weathernote.graphql.documents import Planner
from weathernote.graphql.errors import INTERNAL_SERVER_ERROR, QUERY_TOO_COMPLEX
from weathernote.graphql.extensions import UncheckedDocument
from weathernote.graphql.projection import valid_days
from weathernote.graphql.schema import build_root, schema
from weathernote.http.graphql_http import JSON, render
from weathernote.model.cells import Cell, Grid, InvalidCoordinates
from weathernote.model.entries import Entry, Part
from weathernote.upstream.contract import parse_locations

ROOT = Path(__file__).resolve().parents[2]
SDL = (ROOT / "schema.graphql").read_text()
SCHEMA = graphql.build_schema(SDL)  # as clients see it: what documents are generated from
GRID = Grid()
FETCHED_AT_MS = 1_750_077_900_000  # 2025-06-16T12:45Z, the fixture's current step

# Coordinates near the fixture's place, either side of a cell's edge, at the grid's ends,
# and out of range (refused by both paths, so not planned).
COORDINATES = (52.52, 52.55, 13.42, 13.449, -13.4, 0.0, 89.96, -90.0, 180.0, -179.95, 95.5, -200.0)
# days and hours: in range, at the ends of their ranges, and past them
COUNTS = (1, 2, 7, 16, 24, 48, 168, 384, 0, 17, 385, -1)


def _models() -> dict[Part, Any]:
    body = json.loads((ROOT / "tests" / "fixtures" / "open-meteo-forecast-example.json").read_bytes())
    # the example asked for other hourly variables; add the one it lacks (as test_upstream_contract does)
    body["hourly"]["wind_speed_10m"] = [float(i % 30) for i in range(len(body["hourly"]["time"]))]
    body["hourly_units"]["wind_speed_10m"] = "km/h"
    [models] = parse_locations(body, 1, list(Part), days=7)
    return models


MODELS = _models()
# per part: its age, whether Redis answered it and whether it is stale; all different
FLAGS = {Part.CURRENT: (0, True, False), Part.DAILY: (60_000, False, False), Part.HOURLY: (120_000, True, True)}


def readings(cell: Cell, parts: frozenset[Part], models: Mapping[Part, Any] = MODELS) -> dict[Part, Reading]:
    found = {}
    for part in parts:
        age, cached, stale = FLAGS[part]
        fetched_at = FETCHED_AT_MS - age
        entry = Entry.from_model(part, cell, models[part], fetched_at, fetched_at + 900_000, fetched_at + 900_000)
        found[part] = Reading(entry, cached=cached, stale=stale)
    return found


PART_SETS = [frozenset({Part.CURRENT})] + [
    frozenset(parts) for n in (1, 2) for parts in itertools.combinations((Part.DAILY, Part.HOURLY), n)
]


def _every_cell() -> list[Cell]:
    cells = {}
    for lat, lon in itertools.product(COORDINATES, repeat=2):
        try:
            cell = GRID.cell(lat, lon)
        except InvalidCoordinates:
            continue
        cells[cell.label] = cell
    return list(cells.values())


# what Strawberry's resolvers may ask for: every part set of every cell the pools can name
EVERYTHING = {(cell.label, parts): readings(cell, parts) for cell in _every_cell() for parts in PART_SETS}


class FirstPayload(Context):
    """A context whose live feed is one reading of what `prefetched` holds: a subscription's first payload."""

    async def updates(self, cell: Cell, parts: frozenset[Part]) -> AsyncIterator[Mapping[Part, Reading]]:
        yield await self.read(cell, parts)


def context(prefetched: Mapping[tuple[str, frozenset[Part]], Mapping[Part, Reading]]) -> FirstPayload:
    # No service: every read must come from `prefetched`. One it lacks fails as an
    # internal error, so a plan that reads other parts than the resolvers shows.
    return FirstPayload(service=cast(WeatherService, None), grid=GRID, prefetched=dict(prefetched))


# ---------------------------------------------------------------------------
# documents


def _coordinate() -> st.SearchStrategy[graphql.ValueNode]:
    values = st.sampled_from(COORDINATES)
    return st.one_of(
        values.map(lambda value: graphql.FloatValueNode(value=repr(value))),
        values.filter(float.is_integer).map(lambda value: graphql.IntValueNode(value=str(int(value)))),
    )


SCALARS = {
    "Float": _coordinate(),
    "Int": st.sampled_from(COUNTS).map(lambda value: graphql.IntValueNode(value=str(value))),
}
# hypothesis-graphql generates queries only: a schema whose query type is our Subscription
# type yields subscription selections, printed as subscriptions
SUBSCRIPTION_SCHEMA = graphql.GraphQLSchema(query=SCHEMA.subscription_type)


def _as_subscription(document: graphql.DocumentNode) -> str:
    [operation] = document.definitions
    assert isinstance(operation, graphql.OperationDefinitionNode)
    return graphql.print_ast(
        graphql.DocumentNode(
            definitions=(
                graphql.OperationDefinitionNode(
                    operation=graphql.OperationType.SUBSCRIPTION,
                    variable_definitions=(),
                    selection_set=operation.selection_set,
                ),
            )
        )
    )


# the fields a plan reads (a box's are never planned: the ordinary path runs them)
QUERIES = queries(SDL, fields=["current", "forecast"], custom_scalars=SCALARS, allow_null=True)
# a subscription has one root field
SUBSCRIPTIONS = st.sampled_from(["weatherUpdates", "forecastUpdates"]).flatmap(
    lambda field: queries(
        SUBSCRIPTION_SCHEMA, fields=[field], custom_scalars=SCALARS, allow_null=True, print_ast=_as_subscription
    )
)


@st.composite
def lifted(draw: st.DrawFn, documents: st.SearchStrategy[str]) -> tuple[str, dict[str, Any]]:
    """A document with some of its literal arguments turned into variables, and their values."""
    document = graphql.parse(draw(documents))
    type_info = graphql.TypeInfo(SCHEMA)
    definitions: list[graphql.VariableDefinitionNode] = []
    variables: dict[str, Any] = {}

    class Lift(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> graphql.ArgumentNode | None:
            argument = type_info.get_argument()
            if argument is None or not draw(st.booleans()):
                return None
            name = f"v{len(definitions)}"
            definitions.append(
                graphql.VariableDefinitionNode(
                    variable=graphql.VariableNode(name=graphql.NameNode(value=name)),
                    type=graphql.parse_type(str(argument.type)),
                )
            )
            variables[name] = graphql.value_from_ast_untyped(node.value)
            return graphql.ArgumentNode(name=node.name, value=graphql.VariableNode(name=graphql.NameNode(value=name)))

    changed = graphql.visit(document, graphql.TypeInfoVisitor(type_info, Lift()))
    [operation] = changed.definitions
    with_variables = graphql.OperationDefinitionNode(
        operation=operation.operation,
        variable_definitions=tuple(definitions),
        selection_set=operation.selection_set,
    )
    return graphql.print_ast(graphql.DocumentNode(definitions=(with_variables,))), variables


# ---------------------------------------------------------------------------
# the two paths

PLANNER = Planner(schema._schema)
PROJECTOR = Projector(schema._schema, build_root)
RENDERER = PayloadRenderer(schema._schema, PROJECTOR)


def strawberry_body(result: ExecutionResult) -> dict[str, Any]:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return body


async def strawberry_answer(query: str, variables: dict[str, Any], subscription: bool) -> dict[str, Any]:
    """Strawberry's own execution, its resolvers free to read any part of any cell."""
    ctx = context(EVERYTHING)
    ctx.document, _ = PLANNER.checked(query)
    if not subscription:
        return strawberry_body(await schema.execute(query, variable_values=variables, context_value=ctx))
    stream = await schema.subscribe(query, variable_values=variables, context_value=ctx)
    assert not isinstance(stream, ExecutionResult), stream
    first = await anext(stream)
    await stream.aclose()
    return strawberry_body(first)


@dataclasses.dataclass
class Planned:
    """The planned path's answer, and whether the projection built it (else execution did)."""

    body: dict[str, Any]
    projected: bool


async def planned_answer(query: str, variables: dict[str, Any]) -> Planned | None:
    """The answer of the planned path (None when it declines): what the transports run for a plan."""
    plan = PLANNER.plan(query, None)
    if plan is None:
        return None
    bound = plan.bind(variables, GRID)
    if bound is None:
        return None
    prefetched = [readings(cell, parts) for cell, parts in bound.reads]
    if plan.is_subscription:
        # as graphql.Operations decides
        values = plan.values(schema._schema, bound.variables)
        arguments = plan.arguments(schema._schema, values) if values is not None else None
        if arguments is None or not valid_days(arguments[0]):
            return None
        payload = await RENDERER.render(plan, bound, arguments[0], prefetched[0])
        projected = PROJECTOR.data(plan, bound, prefetched) is not None
        return Planned(cast(dict[str, Any], orjson.loads(payload)), projected)
    # as graphql_http.GraphQLEndpoint.finish runs a plan: projected from its reads where the projection
    # can, else executed with its reads prefetched, coordinates cell-normalised
    data = PROJECTOR.data(plan, bound, prefetched)
    if data is not None:
        return Planned({"data": data}, projected=True)
    ctx = context({(cell.label, parts): found for (cell, parts), found in zip(bound.reads, prefetched)})
    ctx.document, _ = PLANNER.checked(query)
    result = await schema.execute(query, variable_values=bound.variables, context_value=ctx)
    _, body = render(result, JSON)
    return Planned(body, projected=False)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same documents on every run
        database=None,  # nothing written into the repository
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


class Tally:
    """How many documents were seen, planned and projected: each share must be fair, or agreement proves nothing."""

    def __init__(self) -> None:
        self.seen = 0
        self.planned = 0
        self.projected = 0


async def agree(query: str, variables: dict[str, Any], subscription: bool, tally: Tally | None = None) -> bool:
    """Whether the planned path took the document; if it did, it answered what Strawberry answers."""
    planned = await planned_answer(query, variables)
    if planned is None:
        return False
    expected = await strawberry_answer(query, variables, subscription)
    # byte for byte: the same fields in the same order, the same errors where they happened
    assert orjson.dumps(planned.body) == orjson.dumps(expected), (query, variables, planned.projected)
    if tally is not None:
        tally.planned += 1
        tally.projected += planned.projected
    return True


@pytest.mark.parametrize(
    ("documents", "subscription"), [(QUERIES, False), (SUBSCRIPTIONS, True)], ids=["query", "subscription"]
)
def test_the_planned_path_agrees_with_strawberry(documents: st.SearchStrategy[str], subscription: bool) -> None:
    tally = Tally()
    loop = asyncio.new_event_loop()  # hypothesis calls the check synchronously, once per document

    @fuzz(150)
    @given(lifted(documents))
    def check(document: tuple[str, dict[str, Any]]) -> None:
        query, variables = document
        tally.seen += 1
        loop.run_until_complete(agree(query, variables, subscription, tally))

    try:
        check()
    finally:
        loop.close()
    assert tally.planned >= 0.4 * tally.seen, f"only {tally.planned} of {tally.seen} documents planned"
    assert tally.projected >= 0.8 * tally.planned, f"only {tally.projected} of {tally.planned} planned ones projected"


# What the generator never writes: aliases, fragments, literal @skip/@include, a variable for both axes,
# a fragment spread twice, __typename.
WRITTEN = [
    (
        "{ a: current(lat: 52.52, lon: 13.42) { temperature } b: current(lat: 52.55, lon: 13.449, units: IMPERIAL) { temperature cell { lat lon } } }",
        {},
        False,
    ),
    (
        "query Q($d: Int) { forecast(lat: 52.52, lon: 13.42, days: $d) { ...F daily @include(if: false) { date } } } fragment F on Forecast { days hourly(hours: 30) { time } }",
        {"d": 3},
        False,
    ),
    ("query ($x: Float!) { forecast(lat: $x, lon: $x) { cell { lat lon } fetchedAt } }", {"x": 52.55}, False),
    (
        "subscription ($lat: Float!) { w: weatherUpdates(lat: $lat, lon: 13.42) { __typename cell { lat } temperature } }",
        {"lat": 52.55},
        True,
    ),
    (
        "subscription { forecastUpdates(lat: 52.52, lon: 13.42, days: 2) { ... on Forecast { daily { date } } hourly(hours: 48) @skip(if: true) { time } stale } }",
        {},
        True,
    ),
    ("subscription { forecastUpdates(lat: 52.52, lon: 13.42) { cell { lat } cached } }", {}, True),
    (
        "query ($h: Int) { f: forecast(lat: 52.52, lon: 13.42, days: 2) { ...H daily { condition { ...C } } ...H } } "
        "fragment H on Forecast { __typename hourly(hours: $h) { time weatherCode t: temperature } } "
        "fragment C on Condition { code description }",
        {"h": 36},
        False,
    ),
    ("subscription ($d: Int) { forecastUpdates(lat: 52.52, lon: 13.42, days: $d) { days } }", {"d": 16}, True),
]


@pytest.mark.parametrize(("query", "variables", "subscription"), WRITTEN)
async def test_written_documents_are_planned_and_agree(
    query: str, variables: dict[str, Any], subscription: bool
) -> None:
    tally = Tally()
    assert await agree(query, variables, subscription, tally), "planned"
    assert tally.projected == 1, "and projected: aliases, fragments and literal directives need no execution"


# Planned, but left to execution: a directive that depends on a variable, an argument the resolver refuses.
DECLINED = [
    ("query ($s: Boolean!) { current(lat: 52.52, lon: 13.42) { temperature @skip(if: $s) humidity } }", {"s": True}),
    ("{ forecast(lat: 52.52, lon: 13.42, days: 2) { hourly(hours: 49) { time } } }", {}),
    ("query ($h: Int) { forecast(lat: 52.52, lon: 13.42, days: 1) { days hourly(hours: $h) { time } } }", {"h": 0}),
]


@pytest.mark.parametrize(("query", "variables"), DECLINED)
async def test_what_the_projection_declines_execution_answers(query: str, variables: dict[str, Any]) -> None:
    tally = Tally()
    assert await agree(query, variables, False, tally), "planned"
    assert tally.projected == 0, "left to execution"


# ---------------------------------------------------------------------------
# failures of ours, and documents the Planner did not pass

# an entry whose time does not parse: building the field's object fails, whichever path builds it
BROKEN = {**MODELS, Part.CURRENT: dataclasses.replace(MODELS[Part.CURRENT], time="soon")}
CELL = GRID.cell(52.52, 13.42)
NOW = frozenset({Part.CURRENT})


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Error lines about GraphQL executions: ours, and any Strawberry would write itself."""
    return [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("weathernote.graphql", "strawberry"))
    ]


def is_masked(body: Mapping[str, Any], path: list[str] | None) -> bool:
    [error] = body["errors"]
    return (
        body["data"] is None
        and error["message"] == "Internal server error."
        and error["extensions"] == {"code": INTERNAL_SERVER_ERROR}
        and error.get("path") == path
    )


def unlocated(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{key: value for key, value in error.items() if key != "locations"} for error in body["errors"]]


def one_traceback(caplog: pytest.LogCaptureFixture, kind: type[BaseException]) -> bool:
    records = logged(caplog)
    caplog.clear()
    return len(records) == 1 and records[0].exc_info is not None and isinstance(records[0].exc_info[1], kind)


async def test_a_failure_of_ours_is_logged_once_and_masked_on_every_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    broken = {(CELL.label, NOW): readings(CELL, NOW, BROKEN)}
    planner = Planner(schema._schema)
    renderer = PayloadRenderer(schema._schema, Projector(schema._schema, build_root))
    subscription = "subscription { w: weatherUpdates(lat: 52.52, lon: 13.42) { temperature } }"

    plan = planner.plan(subscription, None)
    assert plan is not None
    bound = plan.bind({}, GRID)
    assert bound is not None
    values = plan.values(schema._schema, bound.variables)
    assert values is not None
    [arguments] = plan.arguments(schema._schema, values) or []
    payload = await renderer.render(plan, bound, arguments, broken[(CELL.label, NOW)])
    assert is_masked(orjson.loads(payload), ["w"]) and one_traceback(caplog, ValueError)
    again = await renderer.render(plan, bound, arguments, broken[(CELL.label, NOW)])
    assert again == payload and not logged(caplog), "rendered once: the next subscriber's copy logs nothing"

    # over HTTP (Strawberry, the plan's reads prefetched)
    query = "query { w: current(lat: 52.52, lon: 13.42) { temperature } }"
    http = context(broken)
    http.document, _ = planner.checked(query)
    _, body = render(await schema.execute(query, context_value=http), JSON)
    assert is_masked(body, ["w"]) and one_traceback(caplog, ValueError)
    assert unlocated(body) == unlocated(orjson.loads(payload)), "the planned payload's error, in another document"

    # a subscription Strawberry runs: the field's generator fails, so the error has no path
    generic = context(broken)
    generic.document, _ = planner.checked(subscription)
    stream = await schema.subscribe(subscription, context_value=generic)
    assert not isinstance(stream, ExecutionResult)
    first = await anext(stream)
    await stream.aclose()
    assert is_masked(strawberry_body(first), None) and one_traceback(caplog, ValueError)


async def test_strawberry_runs_only_a_document_the_planner_passed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    planner = Planner(schema._schema)
    query = "{ current(lat: 52.52, lon: 13.42) { temperature } }"
    nothing_checked = context(EVERYTHING)
    assert is_masked(strawberry_body(await schema.execute(query, context_value=nothing_checked)), None)
    assert one_traceback(caplog, UncheckedDocument)

    # a document over the limits is never handed over: there is none to hand
    aliases = "{ " + " ".join(f"a{i}: current(lat: 1, lon: 2) {{ cached }}" for i in range(16)) + " }"
    document, errors = planner.checked(aliases)
    assert document is None and [error.extensions for error in errors] == [{"code": QUERY_TOO_COMPLEX}]

    # the checked document runs, whatever text Strawberry is given
    checked = context(EVERYTHING)
    checked.document, _ = planner.checked(query)
    result = strawberry_body(await schema.execute("not even GraphQL", context_value=checked))
    assert result == {"data": {"current": {"temperature": 26.0}}} and not logged(caplog)

    # over WebSocket the refusal ends the operation: the connection masks and logs what escapes
    stream = await schema.subscribe(
        "subscription { weatherUpdates(lat: 1, lon: 2) { cached } }", context_value=context(EVERYTHING)
    )
    assert not isinstance(stream, ExecutionResult)
    with pytest.raises(UncheckedDocument):
        await anext(stream)
