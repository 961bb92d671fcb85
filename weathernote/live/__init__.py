"""Live weather: the pub/sub hub, watches of cells moved forward by every refresh."""

from weathernote.live.hub import Hub, Subscriber
from weathernote.live.watches import LiveWeather, Watch

__all__ = ["Hub", "LiveWeather", "Subscriber", "Watch"]
