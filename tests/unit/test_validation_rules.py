"""The validation rules with their visitor methods looked up once per class
(graphql/documents/rules.py) find what graphql-core's own lookups find: the same errors, in the
same order, at the same places, for valid documents, broken ones and generated ones."""

from __future__ import annotations

from pathlib import Path

import graphql
from hypothesis import HealthCheck, given, settings
from hypothesis_graphql import queries

from weathernote.graphql.documents import DocumentLimits
from weathernote.graphql.documents.limits import complexity_rule
from weathernote.graphql.documents.rules import with_class_lookups

SCHEMA = graphql.build_schema((Path(__file__).parents[2] / "schema.graphql").read_text())
RULES = (*graphql.specified_rules, complexity_rule(DocumentLimits()), graphql.NoSchemaIntrospectionCustomRule)
CACHED = with_class_lookups(RULES)

DOCUMENTS = (
    "{ current(lat: 1, lon: 2) { temperature cached } }",
    "query Q($lat: Float!, $lon: Float!) { a: current(lat: $lat, lon: $lon) { ...F } } fragment F on CurrentWeather { temperature }",
    "{ current(lat: 1, lon: 2) { nope } }",
    "{ current(lat: 1) { temperature } }",
    '{ current(lat: "x", lon: 2) { temperature } }',
    "{ current(lat: 1, lon: 2) { condition } }",
    "query Q($unused: Int) { current(lat: 1, lon: 2) { temperature } }",
    "query Q { current(lat: $missing, lon: 2) { temperature } }",
    "query A { __typename } query A { __typename }",
    "{ __typename } query B { __typename }",
    "fragment A on CurrentWeather { ...B } fragment B on CurrentWeather { ...A } { current(lat: 1, lon: 2) { ...A } }",
    "fragment Unused on CurrentWeather { temperature } { __typename }",
    "{ current(lat: 1, lon: 2) { a: temperature a: humidity } }",
    "{ current(lat: 1, lon: 2) @skip(if: true) @skip(if: false) { temperature } }",
    "{ __schema { types { name } } }",
    "subscription { weatherUpdates(lat: 1, lon: 2) { temperature } forecastUpdates(lat: 1, lon: 2) { cached } }",
    "{ " + " ".join(f"a{i}: current(lat: 1, lon: 2) {{ temperature }}" for i in range(40)) + " }",
    "{ current(lat: 1, lon: 2) { temperature { deeper } } }",
    "mutation { nothing }",
    "{ current(lat: 1, lon: 2, lat: 3, bogus: 1) { temperature } }",
    "query Q($x: Float, $x: Float) { current(lat: $x, lon: 2) { temperature } }",
    "{ current(lat: 1, lon: 2) { ... on Forecast { cached } } }",
)


def errors(document: graphql.DocumentNode, rules: tuple[type[graphql.ASTValidationRule], ...]) -> list[object]:
    return [(e.message, e.locations, e.extensions) for e in graphql.validate(SCHEMA, document, rules)]


def test_hand_written_documents_get_the_same_errors() -> None:
    found = 0
    for text in DOCUMENTS:
        document = graphql.parse(text)
        plain = errors(document, RULES)
        found += bool(plain)
        assert errors(document, CACHED) == plain, text
    assert found >= len(DOCUMENTS) - 2, "the corpus must hold broken documents"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(SCHEMA, allow_null=True))
def test_generated_documents_get_the_same_errors(text: str) -> None:
    document = graphql.parse(text)
    assert errors(document, CACHED) == errors(document, RULES)
