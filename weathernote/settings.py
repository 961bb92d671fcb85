"""Configuration: every WEATHERNOTE_* variable, read once into one typed object.

`weathernote serve` exposes each field as a flag of the same name, so the
environment and the command line can never drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "weathernote"


class Settings(BaseSettings):
    """Every WEATHERNOTE_* setting, typed and checked; also `weathernote serve`'s flags."""

    model_config = SettingsConfigDict(env_prefix="WEATHERNOTE_", extra="ignore", frozen=True)

    redis_url: str | None = Field(None, description="redis:// or rediss:// URL; unset starts an embedded server")
    redis_seed_nodes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated host:port of more Cluster nodes to learn the topology from when the URL's is down",
    )
    upstream_url: str = Field("https://api.open-meteo.com", description="Open-Meteo base URL")
    upstream_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one upstream call")
    upstream_max_connections: int = Field(4, ge=1, description="upstream requests in flight per instance")
    upstream_budget_per_minute: float = Field(
        540, gt=0, description="weighted upstream calls per minute, all instances (free tier 600)"
    )
    upstream_budget_per_hour: float = Field(
        4500, gt=0, description="weighted upstream calls per hour, all instances (free tier 5,000)"
    )
    upstream_budget_per_day: float = Field(
        9000, gt=0, description="weighted upstream calls per day, all instances (free tier 10,000)"
    )
    prewarm_budget_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="share of the minute and hour budgets the pre-warmer may spend (it paces the day itself)",
    )
    upstream_client_share_per_minute: float = Field(
        0.1, gt=0, le=1, description="the most of the minute's budget one client id may spend on its misses"
    )
    upstream_client_share_per_day: float = Field(
        0.05, gt=0, le=1, description="the most of the hour's and the day's budget one client id may spend"
    )
    upstream_address_share_per_minute: float = Field(
        0.2, gt=0, le=1, description="the most of the minute's budget one address (/64 for IPv6) may spend"
    )
    upstream_address_share_per_day: float = Field(
        0.1, gt=0, le=1, description="the most of the hour's and the day's budget one address may spend"
    )
    expected_instances: int = Field(
        1, ge=1, description="instances sharing the budget: each spends 1/N of it locally while Redis is unreachable"
    )
    upstream_budget_wait_seconds: float = Field(
        10, ge=0, description="how long a miss with nothing to serve waits for room in the budget"
    )
    forecast_cadence_seconds: float = Field(
        3600, gt=0, description="how often the upstream's forecasts can change (model runs)"
    )
    upstream_breaker_failures: int = Field(
        5, ge=1, description="consecutive upstream failures that open its circuit breaker"
    )
    upstream_breaker_reset_seconds: float = Field(
        30, gt=0, description="how long the upstream breaker stays open before a probe"
    )
    clock_speed: float = Field(
        1.0, gt=0, description="simulated seconds per real second (benchmarks replay a day in minutes)"
    )
    clock_anchor: str | None = Field(
        None, description="'REAL:SIMULATED' Unix seconds that coincide, to share a simulated clock"
    )
    weather_ttl_seconds: float = Field(600, gt=0, description="current-weather entry TTL")
    forecast_ttl_seconds: float = Field(600, gt=0, description="forecast entry TTL")
    stale_seconds: float = Field(86400, ge=0, description="how long past its TTL an entry may be served as stale")
    grid_step: float = Field(0.1, gt=0, le=1, description="cell size in degrees")
    area_max_cells: int = Field(
        100,
        ge=1,
        le=1000,
        description="the most cells one currentArea or weatherUpdatesInArea box may hold (its misses: one upstream request)",
    )
    rate_limit_per_minute: int = Field(60, ge=1, description="per-client requests per minute")
    ip_rate_limit_per_minute: int | None = Field(
        None, ge=1, description="per-address requests per minute (default 4x the client limit)"
    )
    rate_limit_period_seconds: float = Field(60, gt=0, description="the rate limits' period (tests shorten it)")
    prewarm_interval_seconds: float = Field(
        900,
        ge=0,
        description="pre-warm cycle period, aligned to its boundaries (default: Open-Meteo's 15-minute step); 0 disables the pre-warmer here",
    )
    freshness_target_seconds: float = Field(
        900,
        ge=900,
        multiple_of=900,
        description="how recent the budget keeps popular cells' current values: 900 (the latest step) or more to keep more cells less fresh",
    )
    prewarm_watched_share: float = Field(
        0.5, ge=0, le=1, description="the most of the pre-warmer's kept cells that watched cells may take"
    )
    prewarm_batch_size: int = Field(
        100, ge=1, le=1000, description="locations per pre-warm upstream request (Open-Meteo allows 1,000)"
    )
    ipv6_prefix: int = Field(
        64, ge=32, le=128, description="an IPv6 client's address counts as its prefix of this length (limits, shares)"
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses whose X-Forwarded-For is believed"
    )
    client_id_secret: str | None = Field(
        None, description="key for hashing client ids (generated and kept when embedded)"
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="where the embedded Redis keeps its data and the generated secret",
    )
    redis_timeout_seconds: float = Field(
        0.5, gt=0, description="timeout of one Redis call before it counts as a failure"
    )
    redis_pubsub_keepalive_seconds: float = Field(
        5, gt=0, description="silence after which a pub/sub connection is sent a PING (a silent link is lost)"
    )
    breaker_failures: int = Field(3, ge=1, description="consecutive Redis failures that open the circuit breaker")
    breaker_reset_seconds: float = Field(5, gt=0, description="how long the breaker stays open before a probe")
    graphql_max_depth: int = Field(6, ge=1, description="deepest field nesting of an operation")
    graphql_max_aliases: int = Field(15, ge=0, description="aliases per operation, fragments included")
    graphql_max_tokens: int = Field(1000, ge=10, description="lexical tokens per document")
    graphql_max_document_bytes: int = Field(16384, ge=256, description="largest query text")
    graphql_max_batch: int = Field(10, ge=1, description="operations per batched HTTP request")
    graphql_introspection: bool = Field(True, description="allow schema introspection")
    graphql_field_suggestions: bool = Field(True, description="'Did you mean …' in errors")
    graphql_safelist: Path | None = Field(
        None, description="persisted-query manifest; when set, only its operations run"
    )
    entry_memo_bytes: int = Field(
        32 * 1024 * 1024, ge=0, description="memory budget of the decoded entries this process keeps (and stand-ins)"
    )
    render_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="memory budget of each in-process cache: rendered responses, subscription payloads, documents",
    )
    watch_ttl_seconds: float = Field(90, gt=0, description="how long a watched cell stays registered without renewal")
    http_max_body_bytes: int = Field(256 * 1024, ge=1024, description="largest request body (413 beyond)")
    http_header_timeout_seconds: float = Field(
        10, gt=0, description="time a client has to send a request's headers (408 and closed beyond)"
    )
    http_body_timeout_seconds: float = Field(10, gt=0, description="time a client has to send a request's body")
    ws_max_connections: int = Field(16384, ge=1, description="WebSocket connections per process")
    ws_max_connections_per_address: int = Field(
        256, ge=1, description="WebSocket connections per address (IPv6: per prefix) and process"
    )
    ws_init_timeout_seconds: float = Field(10, gt=0, description="WebSocket connection_init deadline")
    connection_start_rate_per_second: float = Field(
        500,
        gt=0,
        description="connection starts (WebSocket connection_inits, SSE streams) a process admits a second (beyond: 4429 or HTTP 429 with a retry hint)",
    )
    connection_start_burst: int = Field(500, ge=1, description="connection starts a process admits at once")
    ws_keepalive_seconds: float = Field(15, gt=0, description="WebSocket keep-alive ping period")
    ws_max_subscriptions: int = Field(100, ge=1, description="operations per WebSocket connection")
    ws_max_message_bytes: int = Field(64 * 1024, ge=1024, description="largest WebSocket message accepted")
    sse_max_streams: int = Field(16384, ge=1, description="open GraphQL-over-SSE event streams per process")
    sse_max_streams_per_address: int = Field(
        256, ge=1, description="open GraphQL-over-SSE event streams per address (IPv6: per prefix) and process"
    )
    sse_keepalive_seconds: float = Field(12, gt=0, description="GraphQL-over-SSE keep-alive comment period")
    sse_max_operations: int = Field(100, ge=1, description="operations per single-connection SSE stream")
    sse_max_reservations: int = Field(16384, ge=1, description="single-connection SSE reservations per process")
    sse_max_reservations_per_address: int = Field(
        16, ge=1, description="single-connection SSE reservations per address (IPv6: per prefix) and process"
    )
    sse_reservation_ttl_seconds: float = Field(
        30, gt=0, description="how long a single-connection SSE reservation waits for its stream"
    )
    drain_seconds: float = Field(
        0, ge=0, description="after SIGTERM, seconds not ready but still serving, for the load balancer"
    )
    shutdown_timeout_seconds: float = Field(20, gt=0, description="how long shutdown waits for in-flight requests")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    workers: int = Field(1, ge=1, description="worker processes")
    log_level: str = Field("info", description="log level")

    @field_validator("trusted_proxies", "redis_seed_nodes", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def effective_ip_rate_limit(self) -> int:
        return self.ip_rate_limit_per_minute or 4 * self.rate_limit_per_minute
