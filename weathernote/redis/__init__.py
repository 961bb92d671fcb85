"""The one way to Redis: the gateway (standalone or Cluster, one breaker, one error mapping), its
multiplexed wire, pub/sub backends, the spelling of keys, and embedded servers for machines without one.
"""

from weathernote.redis.cluster import EmbeddedCluster
from weathernote.redis.embedded import EmbeddedRedis
from weathernote.redis.failures import classify
from weathernote.redis.gateway import AnyPipeline, AnyRedis, RedisGateway, redacted
from weathernote.redis.keys import CellKeys
from weathernote.redis.pubsub import PubSubBackend
from weathernote.redis.scripts import Script

__all__ = [
    "AnyPipeline",
    "AnyRedis",
    "CellKeys",
    "EmbeddedCluster",
    "EmbeddedRedis",
    "PubSubBackend",
    "RedisGateway",
    "Script",
    "classify",
    "redacted",
]
