"""The read path: cache-aside over Redis in front of the upstream.

`WeatherService.read` answers a cell's parts from Redis (`EntryStore`), decoded
once per process (`EntryMemo`); misses go to the `Refresher` (one upstream call
per cell across instances, within budget and breaker) unless the `SpendPolicy`
lets older data stand in. `Freshness` says how long an entry lives. `read_area` reads many cells'
current weather at once: hits in one round trip, misses in one upstream request.
"""

from weathernote.cache.area import read_area
from weathernote.cache.freshness import Freshness
from weathernote.cache.memo import EntryMemo
from weathernote.cache.refresh import Refresher, Rendezvous
from weathernote.cache.service import Reading, WeatherService
from weathernote.cache.spend import SpendPolicy
from weathernote.cache.store import EntryStore

__all__ = [
    "EntryMemo",
    "EntryStore",
    "Freshness",
    "Reading",
    "Refresher",
    "Rendezvous",
    "SpendPolicy",
    "WeatherService",
    "read_area",
]
