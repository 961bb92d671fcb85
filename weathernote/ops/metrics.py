"""Prometheus metrics: one definition per figure, named once, used everywhere.

With several worker processes (`serve --workers N`), prometheus_client's
multi-process mode aggregates them (PROMETHEUS_MULTIPROC_DIR, set by `serve`).
Redis's own figures and the business figures kept in Redis are read at
scrape time, so every instance reports the same shared numbers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter(
    "weathernote_requests_total",
    "Requests and WebSocket operations, by transport, operation and outcome",
    ["transport", "operation", "outcome"],
)
REQUEST_DURATION = Histogram(
    "weathernote_request_duration_seconds",
    "Time to answer a request (HTTP) or start an operation (WebSocket)",
    ["transport"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_HITS = Counter("weathernote_cache_hits_total", "Entries answered from the cache", ["part"])
CACHE_MISSES = Counter("weathernote_cache_misses_total", "Entries not in the cache (refetched)", ["part"])
UNDECODABLE_ENTRIES = Counter(
    "weathernote_cache_undecodable_total",
    "Entries read back from Redis that did not decode (another format, corrupt): treated as misses",
    ["part"],
)
REDIS_KEY_ERRORS = Counter(
    "weathernote_redis_key_errors_total",
    "Redis errors about one key (a key of the wrong type): repaired, not counted against Redis",
    ["use"],
)
STALE_SERVED = Counter(
    "weathernote_stale_served_total", "Entries served past their TTL because the upstream failed", ["part", "cause"]
)
RATE_LIMITED = Counter("weathernote_rate_limited_total", "Refused by the rate limiter", ["transport", "scope"])
UPSTREAM_CALLS = Counter("weathernote_upstream_calls_total", "Open-Meteo HTTP requests, by outcome", ["outcome"])
UPSTREAM_WEIGHT = Counter("weathernote_upstream_weight_total", "Open-Meteo weighted calls spent (its own accounting)")
UPSTREAM_DURATION = Histogram(
    "weathernote_upstream_duration_seconds",
    "Open-Meteo request duration",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10),
)
WEBSOCKET_CONNECTIONS = Gauge(
    "weathernote_websocket_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge("weathernote_subscriptions", "Live subscriptions", multiprocess_mode="livesum")
PUBSUB_MESSAGES = Counter("weathernote_pubsub_messages_total", "Refresh announcements received from Redis")
PUBSUB_DELIVERIES = Counter(
    "weathernote_pubsub_deliveries_total", "Announcements handed to local subscribers (fan-out)"
)
PUBSUB_RECONNECTS = Counter(
    "weathernote_pubsub_reconnects_total",
    "Pub/sub links lost while up, each made again (its channels resubscribed and caught up), by what ended it:"
    " redis-py's error (ConnectionError, TimeoutError, ...), LinkClosed (found closed before use), LinkSilent"
    " (a PING unanswered) or SlotMoved (a Cluster slot moved)",
    ["reason"],
)
RENDERS = Counter(
    "weathernote_renders_total", "Responses and payloads rendered (not served from the render caches)", ["kind"]
)
RENDER_CACHE_BYTES = Gauge(
    "weathernote_render_cache_bytes",
    "Bytes held by the in-process caches (response, subscription, document), each bounded by its budget",
    ["kind"],
    multiprocess_mode="livesum",
)
BUDGET_REFUSALS = Counter(
    "weathernote_budget_refusals_total",
    "Upstream calls the budget refused, by the window that refused: the budget's, a client's or an address's share,"
    " or the pre-warmer's",
    ["scope"],
)
UPSTREAM_LOCAL_WEIGHT = Counter(
    "weathernote_upstream_local_weight_total",
    "Weighted upstream calls spent from this process's local allowance while the shared budget could not be read",
)
BUDGET_WAITS = Counter(
    "weathernote_budget_waits_total", "Misses with nothing to serve that waited for room in the upstream budget"
)
PREWARM_CYCLES = Counter("weathernote_prewarm_cycles_total", "Pre-warm cycles run, by outcome", ["outcome"])
PREWARM_CELLS = Counter("weathernote_prewarm_cells_total", "Cell parts refreshed by the pre-warmer")
PREWARM_LANDED = Histogram(
    "weathernote_prewarm_landed_seconds",
    "From a pre-warm period's boundary (the upstream's step flip) to the end of its cycle, on the service's clock:"
    " until then the kept cells serve the previous step",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 900),
)
BREAKER_STATE = Gauge(
    "weathernote_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["name"],
    multiprocess_mode="max",
)
BREAKER_TRANSITIONS = Counter(
    "weathernote_breaker_transitions_total", "Circuit breaker state changes", ["name", "state"]
)

_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def breaker_changed(name: str, state: object) -> None:
    value = getattr(state, "value", str(state))
    BREAKER_STATE.labels(name).set(_BREAKER_VALUES[value])
    BREAKER_TRANSITIONS.labels(name, value).inc()


# Read from Redis at scrape time (shared by every instance)
REDIS_CONNECTED_CLIENTS = "weathernote_redis_connected_clients"
REDIS_KEYSPACE_HITS = "weathernote_redis_keyspace_hits"
REDIS_KEYSPACE_MISSES = "weathernote_redis_keyspace_misses"
REDIS_USED_MEMORY = "weathernote_redis_used_memory_bytes"
ACTIVE_CLIENTS_TODAY = "weathernote_active_clients_today"
UPSTREAM_CALLS_PER_MILLION = "weathernote_upstream_calls_per_million_requests"
TOP_CELL_REQUESTS = "weathernote_top_cell_requests"


def process_registry_text() -> bytes:
    """This process's metrics, or every worker's in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
