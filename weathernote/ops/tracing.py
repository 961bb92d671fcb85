"""Tracing: OpenTelemetry spans exported over OTLP/HTTP, configured by the standard OTEL_* variables alone.

Off by default: on only when an OTLP endpoint is configured
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) and neither
OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says otherwise. Off, no
SDK object exists: each instrumented class holds `tracer: Tracer | None` from
its constructor and tests it before anything else, so a request pays one
attribute test and nothing of OpenTelemetry. On, the SDK reads the rest of its
variables itself: the sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG),
the batch processor (OTEL_BSP_*), the exporter (OTEL_EXPORTER_OTLP_*: headers,
timeout, compression) and the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
These are the SDK's contract with operators, which is why they are not
WEATHERNOTE_* settings.

What travels: a caller's W3C `traceparent`/`tracestate` is the parent of its
request (`remote_parent`); a refresh's span context rides with its pub/sub
announcement (`current_traceparent`, see `redis.pubsub.with_traceparent`), and
every instance's delivery of it links there (`link_to`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import orjson
from opentelemetry import context as contexts
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "Ids",
    "Link",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "Tracer",
    "Tracing",
    "attach",
    "current_traceparent",
    "detach",
    "enabled",
    "failed",
    "link_to",
    "recording",
    "remote_parent",
    "span",
    "trace_id",
    "use_span",
    "with_trace_id",
]

_PROPAGATOR = TraceContextTextMapPropagator()
# the samplers whose decision on a root is a bound on the trace id's low 64 bits (TraceIdRatioBased's)
_RATIO_SAMPLERS = {"traceidratio": False, "parentbased_traceidratio": True}
_LOW_BITS = (1 << 64) - 1


def enabled(environ: Mapping[str, str]) -> bool:
    """Do the OTEL_* variables ask for traces to be exported?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Tracing:
    """The process's tracer provider: the configured sampler, a batch processor and the OTLP/HTTP exporter.

    Built only when tracing is on (`from_environment`); `shutdown` exports what is still queued.
    The provider is not made OpenTelemetry's global one: nothing but the tracer handed to
    our own constructors makes spans.
    """

    def __init__(self, provider: TracerProvider, ids: Ids, ratio_bound: int | None = None) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("weathernote")
        self.ids = ids  # the provider's id generator
        self.ratio_bound = ratio_bound  # a ratio sampler's bound on a root's trace id; None for other samplers

    def root_unsampled(self) -> bool:
        """Is a request without a caller's trace left unsampled by a ratio sampler (most are at 1 %)?

        Decided here as the sampler decides (TraceIdRatioBased's bound on a random trace id), for a
        fraction of the SDK's generic path, which costs a cached request several per cent; such a
        request then makes no span, and nothing under it has a parent (a miss's refresh is a root of
        its own, sampled at the same ratio). False when sampled, the SDK's span then getting that very
        trace id (`server_span`), or when another sampler is the SDK's to apply.
        """
        if self.ratio_bound is None:
            return False
        trace_id = self.ids.generate_trace_id()
        if trace_id & _LOW_BITS >= self.ratio_bound:
            return True
        self.ids.preset = trace_id
        return False

    def server_span(self, name: str, parent: Context | None, attributes: Mapping[str, Any]) -> Span:
        """A request's server span (the SDK's, its sampler deciding), under its caller's trace if it sent one."""
        return self.tracer.start_span(name, parent, SpanKind.SERVER, attributes, record_exception=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Tracing | None:
        """The provider the OTEL_* variables describe; None when tracing is off."""
        if not enabled(environ):
            return None
        # imported only when on: the SDK and the exporter (protobuf) take ~60 ms to import
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "weathernote"}))
        # a ratio sampler is built here, as the SDK would build it from the same variables, to know its bound;
        # any other sampler the SDK builds from them itself
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        sampler: Sampler | None = None
        bound = None
        if name in _RATIO_SAMPLERS:
            try:
                root = TraceIdRatioBased(float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")))
            except ValueError:  # the SDK's fallback for an unreadable or out-of-range ratio
                root = TraceIdRatioBased(1.0)
            sampler, bound = (ParentBased(root) if _RATIO_SAMPLERS[name] else root), root.bound
        ids = Ids()
        provider = TracerProvider(
            sampler=sampler,
            resource=resource,
            shutdown_on_exit=False,
            id_generator=cast(Any, ids),  # the SDK's IdGenerator interface, duck-typed: its module is the SDK's
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider, ids, bound)

    def shutdown(self) -> None:
        """Export what is queued (within the exporter's timeout), then stop."""
        self.provider.shutdown()


class Ids:
    """Random trace and span ids (the SDK's RandomIdGenerator's), except that the next trace id can be
    chosen ahead (`preset`): the one a request's sampling was decided on. The event loop's thread
    sets it and starts the span at once; no other thread makes spans."""

    def __init__(self) -> None:
        self.preset = 0

    def generate_trace_id(self) -> int:
        trace_id, self.preset = self.preset, 0
        while not trace_id:
            trace_id = random.getrandbits(128)
        return trace_id

    def generate_span_id(self) -> int:
        span_id = 0
        while not span_id:
            span_id = random.getrandbits(64)
        return span_id

    def is_trace_id_random(self) -> bool:
        return True


@contextmanager
def span(
    tracer: Tracer | None, name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span | None]:
    """A span made current for the block (None, and nothing done, without a tracer); an error ends it failed."""
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes, record_exception=False) as started:
        try:
            yield started
        except BaseException as exc:
            failed(started, exc)
            raise


def attach(span: Span) -> object:
    """Make `span` current until `detach(token)`: all an unsampled request needs, cheaper than `use_span`."""
    return contexts.attach(trace.set_span_in_context(span))


def detach(token: object) -> None:
    contexts.detach(token)  # type: ignore[arg-type]  # the token `attach` returned


def failed(span: Span, exc: BaseException) -> None:
    """Mark `span` failed by `exc`: its type as `error.type` (the message may hold client input)."""
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


def remote_parent(traceparent: str | None, tracestate: str | None) -> Context | None:
    """A caller's W3C trace context as the parent of what we do for it; None if it sent none or garbage."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id(span: Span) -> str | None:
    """The span's trace id as 32 hex digits when it is sampled (its trace is exported), else None."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.trace_flags.sampled else None


def recording() -> bool:
    """Is the current span recorded (sampled, under way)? Outside one, child spans are not worth making."""
    return trace.get_current_span().is_recording()


def current_traceparent() -> str | None:
    """The current span's W3C `traceparent` when it is sampled: what an announcement carries."""
    context = trace.get_current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def link_to(traceparent: str | None) -> Link | None:
    """A link to the span a `traceparent` names; None when there is none or it is not a valid one."""
    parent = remote_parent(traceparent, None)
    return None if parent is None else Link(trace.get_current_span(parent).get_span_context())


def with_trace_id(body: bytes, trace_id: str) -> bytes:
    """A GraphQL response body (an object, or a batch's array of them) with `extensions.traceId`;
    anything else unchanged."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    results = document if isinstance(document, list) else [document]
    if not all(isinstance(result, dict) for result in results):
        return body
    for result in results:
        extensions = result.get("extensions")
        result["extensions"] = {**(extensions if isinstance(extensions, dict) else {}), "traceId": trace_id}
    return orjson.dumps(document)
