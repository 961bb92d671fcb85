"""Live weather: refreshes as they reach this instance, and the subscribers they go to.

The `Hub` holds one Redis pub/sub subscription per channel per process (after
encode/broadcaster, with latest-wins slots and reconnection that catches up).
`EntryChannels` names its channels by entry, decodes each refresh once and is
the read path's rendezvous with refreshes made elsewhere. `LiveWeather` watches
cells (`AreaUpdates`: a box of them); `Feeds` share one watch and one rendering among a cell's subscribers.
"""

from weathernote.live.channels import EntryChannels
from weathernote.live.feeds import Feed, Feeds, Outlet
from weathernote.live.hub import Hub, Subscriber, Wakeup
from weathernote.live.watches import AreaUpdates, LiveWeather, Updates, Watch

__all__ = [
    "AreaUpdates",
    "EntryChannels",
    "Feed",
    "Feeds",
    "Hub",
    "LiveWeather",
    "Outlet",
    "Subscriber",
    "Updates",
    "Wakeup",
    "Watch",
]
