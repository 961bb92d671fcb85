"""Which topology a Redis URL leads to, and the redis-py clients for each.

A Cluster is recognised from the server itself (INFO cluster, or CLUSTER INFO for
an ACL user refused INFO), asking the configured URL's node first and the seed
nodes after it, so that one node down at start-up does not leave the topology
unknown (or, worse, guessed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, NoPermissionError, RedisClusterException, RedisError, ResponseError

log = logging.getLogger(__name__)


def options(timeout: float) -> dict[str, Any]:
    """The socket options every client of the gateway shares."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 10,
    }


def host_port(node: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) as its parts."""
    host, _, port = node.strip().rpartition(":")
    return host.strip("[]"), int(port)


async def is_cluster(urls: Sequence[str], timeout: float, deadline: float) -> bool | None:
    """Whether the first of `urls` that answers is a Cluster node; None when none answers."""
    for url in urls:
        probe = standalone(url, timeout, max_connections=1)
        try:
            info = await asyncio.wait_for(_cluster_info(probe), deadline)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("Redis not reachable at %s (%s)", _host_of(url), type(exc).__name__)
            continue
        finally:
            await probe.aclose()
        return info.get("cluster_enabled") in (1, "1")
    return None


async def cluster_client(
    url: str, seed_nodes: Sequence[str], timeout: float, deadline: float, *, max_connections: int
) -> RedisCluster:
    """A Cluster client that learnt its slot map (if any node answered in time)."""
    cluster = RedisCluster.from_url(
        url,
        # more nodes to learn the slot map from when the URL's node is down
        startup_nodes=[ClusterNode(*host_port(node)) for node in seed_nodes] or None,
        # a node gone: refresh the slot map and retry at once, twice, within the deadline
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
        reinitialize_steps=1,
        max_connections=max_connections,
        **options(timeout),
    )
    try:
        # the slot map before the first requests: many first commands at once each
        # initialising the client is where redis-py's races live
        await asyncio.wait_for(cluster.initialize(), deadline)
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        log.warning("Redis Cluster not ready yet (%s); the breaker handles it", type(exc).__name__)
    return cluster


def standalone(url: str, timeout: float, max_connections: int = 128) -> Redis:
    """A single server's client over a blocking pool (callers wait for a connection within the timeout)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        # A pooled connection found dead (Redis restarted) is replaced once at
        # once; a timeout is not retried, so no call waits twice on a slow Redis.
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        **options(timeout),
    )
    return Redis(connection_pool=pool)


async def _cluster_info(client: Redis) -> dict[str, Any]:
    """INFO cluster, or CLUSTER INFO for an ACL user refused INFO (it is in @dangerous)."""
    try:
        return dict(await client.info("cluster"))
    except NoPermissionError:
        try:
            reply = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        except ResponseError:
            return {"cluster_enabled": 0}  # not a Cluster: CLUSTER is unknown or disabled there
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return {"cluster_enabled": 1 if "cluster_state:" in text else 0}


def _host_of(url: str) -> str:
    """The URL's host and port, never its credentials, for logs."""
    return url.rpartition("@")[2]
