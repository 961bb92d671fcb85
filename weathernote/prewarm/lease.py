"""The pre-warmer's leader lease: one instance at a time runs the cycles."""

from __future__ import annotations

import contextlib
import secrets

from weathernote.clock import Clock
from weathernote.errors import CacheError, RedisKeyError
from weathernote.ops import metrics
from weathernote.redis import RedisGateway
from weathernote.redis.keys import PREWARM_LEADER

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
    """A leader lease in Redis: SET NX with expiry, renewed and released only by its holder."""

    def __init__(self, redis: RedisGateway, clock: Clock, seconds: float) -> None:
        self.redis = redis
        self.clock = clock
        self.seconds = seconds
        self.token = secrets.token_hex(12)
        self.held = False
        self._renew = redis.script(_RENEW)
        self._release = redis.script(_RELEASE)

    async def acquire_or_renew(self) -> bool:
        expiry = self.clock.real_ms(self.seconds * 1000)
        try:
            if self.held and await self._renew([PREWARM_LEADER], [self.token, expiry]):
                return True
            self.held = bool(
                await self.redis.call(lambda client: client.set(PREWARM_LEADER, self.token, nx=True, px=expiry))
            )
        except RedisKeyError:
            # not a lease (a foreign key of another type): nobody holds it, so clear it
            metrics.REDIS_KEY_ERRORS.labels("lease").inc()
            with contextlib.suppress(CacheError):
                await self.redis.call(lambda client: client.delete(PREWARM_LEADER))
            self.held = False
        except CacheError:
            self.held = False
        return self.held

    async def release(self) -> None:
        if self.held:
            with contextlib.suppress(CacheError):
                await self._release([PREWARM_LEADER], [self.token])
            self.held = False
