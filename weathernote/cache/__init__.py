"""The read path: cache-aside over Redis in front of the upstream, once per cell across instances."""

from weathernote.cache.refresh import Freshness, Refresher
from weathernote.cache.service import Reading, WeatherService
from weathernote.cache.store import EntryStore

__all__ = ["EntryStore", "Freshness", "Reading", "Refresher", "WeatherService"]
