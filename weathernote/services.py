"""The composition root: everything one process runs, built in order through constructors.

Nothing here does I/O until `start`: the gateway is built unconnected and
learns its topology when started, and every other object holds it (or what is
built on it) from its constructor. Reading the tree below from the top is
reading the service's dependencies from the bottom up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import HTTPConnection

from weathernote.breaker import CircuitBreaker, State
from weathernote.cache import EntryMemo, EntryStore, Freshness, Refresher, SpendPolicy, WeatherService
from weathernote.clock import Clock
from weathernote.demand import Demand, Usage
from weathernote.errors import CacheError, ConfigurationError
from weathernote.fairuse import Admission, Identifier, Identity, Pacer, RateLimiter
from weathernote.graphql import Context
from weathernote.graphql.documents import PersistedQueries, load_manifest
from weathernote.live import EntryChannels, LiveWeather
from weathernote.model import Grid, Part
from weathernote.ops.metrics import breaker_changed
from weathernote.ops.tracing import Tracing
from weathernote.prewarm import Prewarmer
from weathernote.redis import RedisGateway, redacted
from weathernote.settings import Settings
from weathernote.tasks import cancel_and_wait
from weathernote.upstream import STEP_SECONDS, Limits, OpenMeteoClient, Payer, Shares, UpstreamBudget

log = logging.getLogger(__name__)


class Services:
    """Everything one process starts at boot and stops at shutdown."""

    def __init__(self, settings: Settings, *, prewarm_in_background: bool = True) -> None:
        if not settings.redis_url:
            raise ConfigurationError("WEATHERNOTE_REDIS_URL is not set; `weathernote serve` starts an embedded Redis")
        self.settings = settings
        self.prewarm_in_background = prewarm_in_background and settings.prewarm_interval_seconds > 0
        self.ready = False
        # one clock per process, as the settings say (benchmarks run it fast, anchored)
        self.clock = Clock.anchored(settings.clock_speed, settings.clock_anchor)
        self.grid = Grid(settings.grid_step)
        # OTEL_* variables, the SDK's own: None (tracing off) unless an OTLP endpoint is configured
        self.tracing = Tracing.from_environment()
        self.tracer = self.tracing.tracer if self.tracing is not None else None
        self.redis = RedisGateway(
            settings.redis_url,
            timeout=settings.redis_timeout_seconds,
            breaker=_breaker("redis", settings.breaker_failures, settings.breaker_reset_seconds),
            seed_nodes=settings.redis_seed_nodes,
            pubsub_keepalive=settings.redis_pubsub_keepalive_seconds,
            tracer=self.tracer,
        )
        self.usage = Usage(self.redis)
        self.demand = Demand(self.redis, self.clock, self.grid, watch_ttl_seconds=settings.watch_ttl_seconds)
        self.admission = Admission(
            Identifier(_client_id_secret(settings), settings.trusted_proxies, ipv6_prefix=settings.ipv6_prefix),
            RateLimiter(
                self.redis,
                client_limit=settings.rate_limit_per_minute,
                address_limit=settings.effective_ip_rate_limit,
                period_seconds=settings.rate_limit_period_seconds,
            ),
            self.usage,
            Pacer(settings.connection_start_rate_per_second, settings.connection_start_burst),
        )
        safelist = load_manifest(settings.graphql_safelist) if settings.graphql_safelist else None
        self.persisted = PersistedQueries(self.redis, safelist)
        self.upstream = OpenMeteoClient(
            settings.upstream_url,
            timeout=settings.upstream_timeout_seconds,
            max_connections=settings.upstream_max_connections,
            tracer=self.tracer,
        )
        self.budget = UpstreamBudget(
            self.redis,
            Limits(
                settings.upstream_budget_per_minute,
                settings.upstream_budget_per_hour,
                settings.upstream_budget_per_day,
                settings.prewarm_budget_share,
            ),
            self.clock,
            shares=Shares(
                client_minute=settings.upstream_client_share_per_minute,
                client_day=settings.upstream_client_share_per_day,
                address_minute=settings.upstream_address_share_per_minute,
                address_day=settings.upstream_address_share_per_day,
            ),
            expected_instances=settings.expected_instances,
        )
        self.store = EntryStore(self.redis, self.clock, stale_ms=int(settings.stale_seconds * 1000))
        self.memo = EntryMemo(settings.entry_memo_bytes)
        self.channels = EntryChannels(
            redis=self.redis,
            store=self.store,
            memo=self.memo,
            clock=self.clock,
            backend=self.redis.pubsub,
            breaker=self.redis.breaker,
            connect_wait=self.redis.deadline,
            connect_timeout=self.redis.deadline * 3,
            tracer=self.tracer,
        )
        freshness = _freshness(settings)
        self.refresher = Refresher(
            redis=self.redis,
            store=self.store,
            memo=self.memo,
            upstream=self.upstream,
            budget=self.budget,
            breaker=_breaker("upstream", settings.upstream_breaker_failures, settings.upstream_breaker_reset_seconds),
            freshness=freshness,
            rendezvous=self.channels,
            usage=self.usage,
            clock=self.clock,
            lock_seconds=settings.upstream_timeout_seconds + 5,
            tracer=self.tracer,
        )
        self.weather = WeatherService(
            store=self.store,
            memo=self.memo,
            refresher=self.refresher,
            budget=self.budget,
            freshness=freshness,
            spend=SpendPolicy(self.budget, self.demand, self.memo, self.clock),
            requested=self.demand.requested,
            clock=self.clock,
            budget_wait_seconds=settings.upstream_budget_wait_seconds,
        )
        self.live = LiveWeather(self.channels, self.weather, self.demand.watched)
        self.prewarmer = Prewarmer(
            redis=self.redis,
            store=self.store,
            memo=self.memo,
            refresher=self.refresher,
            budget=self.budget,
            freshness=freshness,
            demand=self.demand,
            grid=self.grid,
            clock=self.clock,
            interval_seconds=settings.prewarm_interval_seconds or STEP_SECONDS,
            batch_size=settings.prewarm_batch_size,
            watched_share=settings.prewarm_watched_share,
            tracer=self.tracer,
        )
        # a box's cells are charged one read each: no box may hold more than a client may read in a period
        self.area_max_cells = min(
            settings.area_max_cells, settings.rate_limit_per_minute, settings.effective_ip_rate_limit
        )
        self._readiness: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        await self.redis.connect()
        log.info("Redis at %s (%s)", redacted(self.redis.url), "cluster" if self.redis.cluster else "single server")
        log.info("Upstream at %s (offline? `make offline` runs against the bundled simulator)", settings.upstream_url)
        if self.tracing is not None:
            sampler = self.tracing.provider.sampler.get_description()
            log.info("Tracing on: spans exported over OTLP/HTTP as the OTEL_* variables say (sampler %s)", sampler)
        await self.channels.start()
        await self.demand.start()
        await self.usage.start()
        if self.prewarm_in_background:
            await self.prewarmer.start()
        self._readiness = asyncio.create_task(self._become_ready(), name="readiness")

    async def _become_ready(self) -> None:
        """Ready once Redis answers and its topology is known (the hub then connects on its first subscription)."""
        while not await self.redis.ping():
            log.warning("not ready yet: Redis unreachable or its topology unknown")
            await asyncio.sleep(0.5)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await cancel_and_wait(self._readiness)
        await self.prewarmer.stop()  # releases the lease: another instance takes over at once
        await self.usage.stop()
        await self.demand.stop()
        await self.channels.stop()
        await self.upstream.aclose()
        await self.redis.aclose()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans exported, off the event loop

    def context(self, connection: HTTPConnection, identity: Identity) -> Context:
        """What one operation's resolvers may use."""
        payer = Payer(identity.client, identity.address)
        admission = self.admission
        transport = "ws" if connection.scope.get("type") == "websocket" else "http"

        async def charge(cost: int) -> int:
            decision, _ = await admission.check(identity, cost=cost, transport=transport)
            return 0 if decision.allowed else decision.retry_after_seconds

        return Context(
            service=self.weather,
            grid=self.grid,
            live=self.live,
            request=connection,
            payer=payer,
            area_max_cells=self.area_max_cells,
            charge=charge,
        )

    async def redis_alive(self) -> bool:
        """A health check is also the breaker's probe, so recovery needs no user traffic."""
        return await self.redis.ping()

    async def shared_figures(self) -> dict[str, Any]:
        """Redis's own figures and the business figures, for /metrics; empty when Redis is down."""
        try:
            info = await self.redis.call(lambda client: client.info())
            figures: dict[str, Any] = await self.usage.snapshot()
        except CacheError:
            return {}
        if self.redis.cluster:
            # one figure per node: the cluster's are their sums
            info = _summed(info)
        for name in ("connected_clients", "keyspace_hits", "keyspace_misses", "used_memory"):
            if name in info:
                figures[name] = float(info[name])
        return figures


def _breaker(name: str, failures: int, reset_seconds: float) -> CircuitBreaker:
    breaker = CircuitBreaker(name, failures=failures, reset_seconds=reset_seconds, on_change=breaker_changed)
    breaker_changed(name, State.CLOSED)
    return breaker


def _freshness(settings: Settings) -> Freshness:
    return Freshness(
        ttl_ms={
            Part.CURRENT: int(settings.weather_ttl_seconds * 1000),
            Part.DAILY: int(settings.forecast_ttl_seconds * 1000),
            Part.HOURLY: int(settings.forecast_ttl_seconds * 1000),
        },
        forecast_cadence_seconds=settings.forecast_cadence_seconds,
        target_steps=round(settings.freshness_target_seconds / STEP_SECONDS),
    )


def _client_id_secret(settings: Settings) -> str:
    """The key client ids are hashed under; `weathernote serve` refuses a weak one with an external Redis
    and generates one beside an embedded server, so none reaches here unset."""
    if not settings.client_id_secret:
        raise ConfigurationError("WEATHERNOTE_CLIENT_ID_SECRET is not set")
    return settings.client_id_secret


def _summed(per_node: dict[str, Any]) -> dict[str, float]:
    """A Cluster's INFO (node -> fields) as one set of fields, numbers summed."""
    total: dict[str, float] = {}
    for fields in per_node.values():
        if isinstance(fields, dict):
            for name, value in fields.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    total[name] = total.get(name, 0.0) + value
    return total
