"""Lua scripts run by their SHA, sent whole once where a node does not know them yet."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from weathernote.errors import RedisKeyError
from weathernote.redis.wire import Command

if TYPE_CHECKING:
    from weathernote.redis.gateway import AnyPipeline, AnyRedis, RedisGateway


class Script:
    """A Lua script of the service, registered with the gateway that runs it.

    Every key of one call must share a slot on a Cluster.
    """

    def __init__(self, gateway: RedisGateway, source: str) -> None:
        self.gateway = gateway
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # what SCRIPT LOAD answers

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self.gateway.wire is not None:
            [reply] = await self.gateway.commands([self.command(keys, args)])
            if isinstance(reply, RedisKeyError):
                raise reply
            return reply

        async def run(client: AnyRedis) -> Any:
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                # a restarted, flushed or newly promoted node: EVAL loads it there
                return await client.eval(self.source, len(keys), *keys, *args)

        return await self.gateway.call(run)

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """The call as a raw command for `RedisGateway.commands` (single server: by SHA)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def add_to(self, pipe: AnyPipeline, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add a call to `pipe` by SHA (the gateway's pipeline loads it where it is unknown).

        A Cluster's pipeline refuses EVALSHA; there the script goes whole.
        """
        if self.gateway.cluster:
            pipe.eval(self.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(self.sha, len(keys), *keys, *args)
