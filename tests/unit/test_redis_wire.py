"""The multiplexed connection, in process: which Redis URLs it takes (its wire against real servers is
tested in tests/service/test_redis_wire_servers.py)."""

from __future__ import annotations

from weathernote.redis.wire import MultiplexedConnection


def test_only_tcp_urls_are_multiplexed() -> None:
    assert MultiplexedConnection.supports("redis://127.0.0.1:6379/0")
    assert MultiplexedConnection.supports("rediss://user:pw@localhost:6380/1?ssl_ca_certs=/ca.pem")
    assert not MultiplexedConnection.supports("unix:///tmp/redis.sock")
    assert not MultiplexedConnection.supports("redis://127.0.0.1:6379/0?protocol=3")
