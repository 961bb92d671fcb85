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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "Link",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "Tracer",
    "Tracing",
    "current_traceparent",
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

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("weathernote")

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

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "weathernote"}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is queued (within the exporter's timeout), then stop."""
        self.provider.shutdown()


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
