"""Connecting to Redis: one URL form for a single server or a Cluster.

A Cluster is recognised from the server itself (INFO cluster), so operators
configure the same `redis://` / `rediss://` URL either way.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

log = logging.getLogger(__name__)

AnyRedis = Redis | RedisCluster


def _options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 10,
        # A pooled connection found dead (Redis restarted) is replaced once at
        # once; a timeout is not retried, so no call waits twice on a slow Redis.
        "retry": Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
    }


def standalone(url: str, timeout: float, max_connections: int = 128) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **_options(timeout)
    )
    return Redis(connection_pool=pool)


def for_pubsub(url: str, timeout: float) -> Redis:
    """A client for the pub/sub hub, with redis-py's own retries off.

    redis-py reconnects a PubSub transparently within its retries, and the
    announcements published meanwhile are lost without anyone knowing; the hub
    must see every disconnect to catch up on what it missed.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        health_check_interval=5,
        retry=Retry(NoBackoff(), 0),
    )


async def connect(url: str, timeout: float) -> AnyRedis:
    client = standalone(url, timeout)
    try:
        info = await client.info("cluster")
    except RedisError as exc:
        # Unreachable now: start standalone and let the breaker handle the outage.
        log.warning("Redis not reachable at start-up (%s); assuming a single server", type(exc).__name__)
        return client
    if info.get("cluster_enabled") in (1, "1"):
        await client.aclose()
        log.info("Redis Cluster detected")
        return RedisCluster.from_url(url, **_options(timeout))
    return client


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
