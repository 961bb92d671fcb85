"""The trace context an announcement carries, and what tracing reads from OTEL_* variables: pure functions.

An announcement is an entry's wire form; traced, the refresh's `traceparent` rides as one more JSON
member at its end. This release takes it off before decoding and links to it; an older release's
reader decodes the entry all the same (unknown members are ignored); an announcement without one,
or with garbage, is delivered unlinked.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from weathernote.model import Current, Entry, Grid, Part
from weathernote.ops import tracing
from weathernote.redis.pubsub import with_traceparent, without_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
CELL = Grid(0.1).cell(48.9, 2.4)


def entry() -> Entry:
    model = Current(
        time="2026-06-16T14:45+02:00",
        temperature=21.5,
        apparent_temperature=20.0,
        humidity=40.0,
        precipitation=0.0,
        weather_code=1,
        cloud_cover=10.0,
        pressure=1013.0,
        wind_speed=12.0,
        wind_direction=200.0,
        wind_gusts=20.0,
        is_day=True,
    )
    return Entry.from_model(Part.CURRENT, CELL, model, 1_000, 2_000, 3_000)


def test_an_announcement_carries_its_traceparent_and_gives_back_the_entry_byte_for_byte() -> None:
    raw = entry().encode()
    announced = with_traceparent(raw, TRACEPARENT)
    assert announced != raw and announced.endswith(b'"}')
    assert without_traceparent(announced) == (raw, TRACEPARENT)
    link = tracing.link_to(TRACEPARENT)
    assert link is not None
    assert (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) == (TRACE, SPAN)


def test_an_older_release_reads_a_traced_announcement_as_the_same_entry() -> None:
    original = entry()
    decoded = Entry.decode(Part.CURRENT, CELL, with_traceparent(original.encode(), TRACEPARENT))
    assert decoded.model == original.model
    assert (decoded.fetched_at_ms, decoded.fresh_until_ms) == (original.fetched_at_ms, original.fresh_until_ms)


def test_an_announcement_without_context_is_delivered_unlinked() -> None:
    raw = entry().encode()
    assert without_traceparent(raw) == (raw, None)
    assert with_traceparent(raw, None) == raw  # untraced, or not sampled: nothing added
    assert tracing.link_to(None) is None


def test_garbage_context_is_delivered_unlinked() -> None:
    raw = entry().encode()
    # the member's shape with a value that is no traceparent: taken off, linked to nothing
    for garbage in ("zz" * 27 + "z", "00-" + "0" * 32 + "-" + SPAN + "-01", "ff-" + TRACE + "-" + SPAN + "-01"):
        data, traceparent = without_traceparent(raw[:-1] + b',"traceparent":"' + garbage.encode() + b'"}')
        assert data == raw and tracing.link_to(traceparent) is None
    # a member of another length is no trailer of ours: left in place, where decoding ignores it
    odd = raw[:-1] + b',"traceparent":"00-short"}'
    assert without_traceparent(odd) == (odd, None)
    assert Entry.decode(Part.CURRENT, CELL, odd).model == entry().model
    # a traceparent of the wrong length is never added
    assert with_traceparent(raw, "00-short") == raw


@given(st.binary(max_size=200))
def test_any_bytes_are_taken_apart_without_error(data: bytes) -> None:
    stripped, traceparent = without_traceparent(data)
    assert (stripped == data) == (traceparent is None)
    tracing.link_to(traceparent)  # never raises, whatever it is


@given(
    st.dictionaries(st.text(max_size=8), st.integers(-1000, 1000), min_size=1),
    st.text(alphabet="0123456789abcdef-", min_size=55, max_size=55),
)
def test_any_object_round_trips(document: dict[str, int], traceparent: str) -> None:
    message = b"wn2 1 2 3\n" + orjson.dumps(document)
    announced = with_traceparent(message, traceparent)
    assert without_traceparent(announced) == (message, traceparent)
    assert {**document, "traceparent": traceparent} == orjson.loads(announced.partition(b"\n")[2])


def test_tracing_is_off_unless_an_endpoint_is_configured() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.enabled({})
    assert tracing.Tracing.from_environment({}) is None
    assert tracing.enabled(endpoint)
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing.enabled({**endpoint, "OTEL_SDK_DISABLED": "TRUE"})
    assert not tracing.enabled({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


def test_the_trace_id_joins_a_responses_extensions() -> None:
    trace_id = TRACE
    assert orjson.loads(tracing.with_trace_id(b'{"data":{"a":1}}', trace_id)) == {
        "data": {"a": 1},
        "extensions": {"traceId": trace_id},
    }
    kept = tracing.with_trace_id(b'{"data":null,"extensions":{"code":1}}', trace_id)
    assert orjson.loads(kept)["extensions"] == {"code": 1, "traceId": trace_id}
    batch = orjson.loads(tracing.with_trace_id(b'[{"data":1},{"errors":[]}]', trace_id))
    assert [item["extensions"] for item in batch] == [{"traceId": trace_id}] * 2
    assert tracing.with_trace_id(b"not json", trace_id) == b"not json"
    assert tracing.with_trace_id(b"[1]", trace_id) == b"[1]"


def test_a_ratio_samplers_requests_are_decided_as_the_sdk_decides() -> None:
    """The request path decides an unsampled root itself (cheaper than the SDK's generic path); a
    sampled one is the SDK's span with the trace id decided on, which the SDK's own sampler agrees with."""
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    def configured(ratio: str, sampler: str = "parentbased_traceidratio") -> tracing.Tracing:
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_TRACES_SAMPLER": sampler,
            "OTEL_TRACES_SAMPLER_ARG": ratio,
        }
        traced = tracing.Tracing.from_environment(environ)
        assert traced is not None
        return traced

    reference = TraceIdRatioBased(0.25)
    quarter, none, every, other = configured("0.25"), configured("0"), configured("1"), configured("1", "always_on")
    try:
        assert quarter.ratio_bound == reference.bound and other.ratio_bound is None
        assert all(none.root_unsampled() for _ in range(200))
        assert not any(every.root_unsampled() or other.root_unsampled() for _ in range(200))
        sampled = 0
        for _ in range(400):
            if not quarter.root_unsampled():  # sampled: the SDK's span follows at once, as in the middleware
                span = quarter.server_span("GET /health", None, {})
                trace_id = span.get_span_context().trace_id
                assert span.is_recording() and reference.should_sample(None, trace_id, "x").decision.is_sampled()
                sampled += 1
        assert 40 < sampled < 160  # a quarter, give or take
        # a caller's context is the SDK's to decide (parent-based): its sampled flag is followed
        child = none.server_span("GET /health", tracing.remote_parent(TRACEPARENT, None), {})
        assert child.is_recording() and format(child.get_span_context().trace_id, "032x") == TRACE
    finally:
        for traced in (quarter, none, every, other):
            traced.provider.shutdown()  # nothing ended, nothing exported
