"""The Open-Meteo upstream: its contract, its client and its call weighting."""

from weathernote.upstream.client import OpenMeteoClient, UpstreamError
from weathernote.upstream.contract import request_weight

__all__ = ["OpenMeteoClient", "UpstreamError", "request_weight"]
