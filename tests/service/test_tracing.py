"""OpenTelemetry end to end (issue 22, part 1): `weathernote serve` processes export over OTLP/HTTP to a
real receiver started here, which decodes each POST /v1/traces as the collector's protobuf
(`ExportTraceServiceRequest`): the spans of a query, of a miss with its upstream call, and of one
refresh delivered on another instance, with their parent and link relations; and nothing at all
when tracing is off or the sampler's ratio is 0.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.conftest import Server, Simulator, graphql, server_env, wait_until
from tests.wsclient import GraphQLSocket

CURRENT = "query Now($lat: Float!, $lon: Float!) { current(lat: $lat, lon: $lon) { temperature cached } }"
WEATHER = "subscription Live($lat: Float!, $lon: Float!) { weatherUpdates(lat: $lat, lon: $lon) { fetchedAt } }"
ROME = {"lat": 41.9, "lon": 12.5}
OSLO = {"lat": 59.9, "lon": 10.7}
LISBON = {"lat": 38.7, "lon": -9.1}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Exported:
    """One span as the receiver decoded it, with the service that sent it."""

    service: str
    span: SpanProto

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for item in self.span.attributes:
            kind = item.value.WhichOneof("value")
            value = getattr(item.value, kind) if kind else None
            values[item.key] = list(v.string_value for v in value.values) if kind == "array_value" else value
        return values


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf, decoded and kept."""

    spans: list[Exported] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def of(self, service: str, trace_id: str | None = None) -> list[Exported]:
        with self.lock:
            return [s for s in self.spans if s.service == service and (trace_id is None or s.trace_id == trace_id)]

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(Exported(names[0] if names else "", span))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    kept = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            kept.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    kept.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield kept
    server.shutdown()
    server.server_close()


def traced_env(redis_url: str, simulator: Simulator, receiver: Receiver, service: str, **otel: str) -> dict[str, str]:
    return {
        **server_env(redis_url, simulator, log_level="info"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        **otel,
    }


@pytest.fixture(scope="module")
def instance_a(redis_url: str, simulator: Simulator, receiver: Receiver) -> Iterator[Server]:
    server = Server(traced_env(redis_url, simulator, receiver, "wn-a"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def instance_b(redis_url: str, simulator: Simulator, receiver: Receiver) -> Iterator[Server]:
    server = Server(traced_env(redis_url, simulator, receiver, "wn-b"))
    yield server
    server.stop()


def spans_of(receiver: Receiver, service: str, trace_id: str, until: Any) -> list[Exported]:
    """The spans of a trace once `until(spans)` holds (the batch processor exports within its delay)."""
    wait_until(lambda: until(receiver.of(service, trace_id)), timeout=10)
    return receiver.of(service, trace_id)


def named(spans: list[Exported], name: str) -> Exported:
    [span] = [s for s in spans if s.name == name]
    return span


def ancestors(span: Exported, spans: list[Exported]) -> list[str]:
    """The names of a span's ancestors in `spans`, nearest first."""
    by_id = {s.span_id: s for s in spans}
    names = []
    while span.parent in by_id:
        span = by_id[span.parent]
        names.append(span.name)
    return names


def test_a_miss_traces_its_upstream_call_under_the_request(
    instance_a: Server, clean: Simulator, receiver: Receiver
) -> None:
    response = graphql(instance_a.url, CURRENT, ROME)
    body = response.json()
    assert body["data"]["current"]["cached"] is False
    trace_id = body["extensions"]["traceId"]
    assert len(trace_id) == 32 and int(trace_id, 16)

    spans = spans_of(receiver, "wn-a", trace_id, lambda found: any(s.name == "POST /graphql" for s in found))
    server = named(spans, "POST /graphql")
    assert server.span.kind == SpanProto.SPAN_KIND_SERVER and server.parent == ""
    assert server.attributes["http.request.method"] == "POST" and server.attributes["http.route"] == "/graphql"
    assert server.attributes["http.response.status_code"] == 200
    operation = named(spans, "query Now")
    assert operation.parent == server.span_id
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.name"] == "Now"
    refresh = named(spans, "refresh")
    assert refresh.attributes["weathernote.cells"] == 1 and refresh.attributes["weathernote.parts"] == ["current"]
    upstream = named(spans, "GET")
    assert upstream.span.kind == SpanProto.SPAN_KIND_CLIENT
    assert upstream.attributes["http.response.status_code"] == 200
    assert upstream.attributes["server.address"] == "127.0.0.1"
    assert "?" not in upstream.attributes["url.full"]  # the long lists of coordinates stay out
    assert ancestors(upstream, spans)[:1] == ["refresh"]
    assert ancestors(upstream, spans)[-2:] == ["query Now", "POST /graphql"]
    # the write that stored (and announced) the refresh is a Redis span under it
    writes = [s for s in spans if s.parent == refresh.span_id and s.span.kind == SpanProto.SPAN_KIND_CLIENT]
    assert any("PUBLISH" in s.attributes.get("db.operation.name", "") for s in writes)


def test_a_query_adopts_the_callers_trace_and_its_redis_round_trips_are_children(
    instance_a: Server, clean: Simulator, receiver: Receiver
) -> None:
    graphql(instance_a.url, CURRENT, OSLO)  # now a hit
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = graphql(instance_a.url, CURRENT, OSLO, headers={"traceparent": traceparent, "tracestate": "vendor=1"})
    body = response.json()
    assert body["data"]["current"]["cached"] is True
    assert body["extensions"] == {"traceId": CALLER_TRACE}
    assert int(response.headers["content-length"]) == len(response.content)

    spans = spans_of(receiver, "wn-a", CALLER_TRACE, lambda found: any(s.name == "POST /graphql" for s in found))
    server = named(spans, "POST /graphql")
    assert server.parent == CALLER_SPAN
    operation = named(spans, "query Now")
    assert operation.parent == server.span_id
    redis_spans = [s for s in spans if s.attributes.get("db.system") == "redis"]
    assert redis_spans and all(s.parent == operation.span_id for s in redis_spans)
    for span in redis_spans:
        assert span.span.kind == SpanProto.SPAN_KIND_CLIENT
        assert span.name == span.attributes["db.operation.name"]
        assert span.name.replace(" ", "").isalpha()  # command names; never a key, a cell or an argument
        assert "weather" not in json.dumps(span.attributes)
    assert not [s for s in spans if s.name == "refresh"]  # a hit calls no upstream

    # the request's log line carries the trace id
    wait_until(lambda: f'"trace_id":"{CALLER_TRACE}"' in instance_a.logs(), timeout=10)


def test_an_sse_operation_is_a_span_under_its_request(instance_a: Server, clean: Simulator, receiver: Receiver) -> None:
    trace = "5bf92f3577b34da6a3ce929d0e0e4737"
    response = httpx.post(
        f"{instance_a.url}/graphql",
        json={"query": CURRENT, "variables": ROME},
        headers={"accept": "text/event-stream", "traceparent": f"00-{trace}-{CALLER_SPAN}-01"},
        timeout=10,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: complete" in response.text and "traceId" not in response.text  # events are left as they are

    spans = spans_of(receiver, "wn-a", trace, lambda found: {"POST /graphql", "query Now"} <= {s.name for s in found})
    server = named(spans, "POST /graphql")
    operation = named(spans, "query Now")
    assert server.parent == CALLER_SPAN and operation.parent == server.span_id
    assert operation.attributes["weathernote.transport"] == "sse"
    assert ancestors(named(spans, "GET"), spans)[-3:] == ["refresh", "query Now", "POST /graphql"]


async def test_a_refresh_delivered_on_another_instance_links_to_it(
    instance_a: Server, instance_b: Server, clean: Simulator, receiver: Receiver, redis_client: redis.Redis
) -> None:
    async with GraphQLSocket(instance_b.url) as socket:
        await socket.init()
        await socket.subscribe("w", WEATHER, LISBON)
        first = (await socket.data())["data"]["weatherUpdates"]
        redis_client.flushall()  # the entry gone: the next query on A is a miss, refreshed and announced
        body = graphql(instance_a.url, CURRENT, LISBON).json()
        assert body["data"]["current"]["cached"] is False
        update = (await socket.data(timeout=10))["data"]["weatherUpdates"]
        assert update["fetchedAt"] > first["fetchedAt"]
    trace_id = body["extensions"]["traceId"]
    refresh = named(
        spans_of(receiver, "wn-a", trace_id, lambda found: any(s.name == "refresh" for s in found)), "refresh"
    )

    def linked(span: Exported) -> bool:
        return any(
            link.trace_id.hex() == trace_id and link.span_id.hex() == refresh.span_id for link in span.span.links
        )

    wait_until(lambda: any(s.name == "deliver" and linked(s) for s in receiver.of("wn-b")), timeout=10)
    [delivery] = [s for s in receiver.of("wn-b") if s.name == "deliver" and linked(s)]
    assert delivery.span.kind == SpanProto.SPAN_KIND_CONSUMER
    assert delivery.trace_id != trace_id  # a trace of its own, linked: not a child of A's request
    assert delivery.attributes["messaging.system"] == "redis"
    assert delivery.attributes["weathernote.subscribers"] == 1
    # the fan-out that pushed it to the subscriber is under the delivery
    wait_until(lambda: any(s.name == "fan-out" for s in receiver.of("wn-b", delivery.trace_id)), timeout=10)
    [fanout] = [s for s in receiver.of("wn-b", delivery.trace_id) if s.name == "fan-out"]
    assert fanout.parent == delivery.span_id and fanout.attributes["weathernote.pushed"] == 1
    # B's subscription itself: an operation span for the WebSocket operation
    assert any(s.name == "subscription Live" for s in receiver.of("wn-b"))


@pytest.mark.parametrize(
    "otel",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},  # the default: no endpoint, tracing off (OTEL_SDK_DISABLED: a unit test)
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
    ],
    ids=["no-endpoint", "ratio-0"],
)
def test_nothing_is_exported_when_off_or_never_sampled(
    redis_url: str, simulator: Simulator, clean: Simulator, receiver: Receiver, otel: dict[str, str]
) -> None:
    service = f"wn-quiet-{len(receiver.spans)}-{'-'.join(otel)}"
    server = Server(traced_env(redis_url, simulator, receiver, service, **otel))
    try:
        for where in (ROME, OSLO, ROME):  # misses and a hit
            body = graphql(server.url, CURRENT, where).json()
            assert "current" in body["data"] and "extensions" not in body
    finally:
        server.stop()  # shutting down exports whatever a tracer had queued
    assert receiver.of(service) == []
