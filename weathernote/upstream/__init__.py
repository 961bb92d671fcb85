"""The Open-Meteo upstream: its contract, its client and its call weighting."""

from weathernote.errors import UpstreamError
from weathernote.upstream.client import OpenMeteoClient
from weathernote.upstream.contract import request_weight

__all__ = ["OpenMeteoClient", "UpstreamError", "request_weight"]
