"""The one way to Redis: the gateway (standalone or Cluster, one breaker, one error mapping), its
multiplexed wire, pub/sub backends, the spelling of keys, and embedded servers for machines without one.
"""

from weathernote.redis.cluster import EmbeddedCluster
from weathernote.redis.embedded import EmbeddedRedis
from weathernote.redis.gateway import AnyPipeline, AnyRedis, RedisGateway, Script, redacted
from weathernote.redis.pubsub import PubSubBackend

__all__ = [
    "AnyPipeline",
    "AnyRedis",
    "EmbeddedCluster",
    "EmbeddedRedis",
    "PubSubBackend",
    "RedisGateway",
    "Script",
    "redacted",
]
