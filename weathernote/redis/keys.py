"""The one place that spells Redis keys and pub/sub channel names.

On a single server the keys are the seed design's: `weather:lat:40.7:lon:-74.0`,
`forecast:lat:40.7:lon:-74.0:days:16`. On a Cluster the cell's label becomes a
hash tag inside them (`weather:{lat:40.7:lon:-74.0}`), so that a cell's entries,
stale copies, refresh locks and announcement channels share one slot: one
round trip reads a cell, and a refresh is announced inside the shard holding it.
The spelling of a cell's keys is the gateway's (`RedisGateway.keys`): it knows
which topology it talks to. Keys that name no cell are spelled the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from weathernote.model import FORECAST_DAYS, Cell, Part


@dataclass(frozen=True, slots=True)
class CellKeys:
    """The keys and channels of a cell's entries, for one topology."""

    hash_tags: bool  # a Cluster: the cell is a hash tag inside its keys

    def cell_tag(self, cell: Cell) -> str:
        """The cell as it appears inside its keys: a hash tag on a Cluster."""
        return "{" + cell.label + "}" if self.hash_tags else cell.label

    def entry(self, part: Part, cell: Cell) -> str:
        tag = self.cell_tag(cell)
        if part is Part.CURRENT:
            return f"weather:{tag}"
        if part is Part.DAILY:
            return f"forecast:{tag}:days:{FORECAST_DAYS}"
        return f"forecast:{tag}:days:{FORECAST_DAYS}:hourly"

    def stale(self, part: Part, cell: Cell) -> str:
        """The last good entry, kept past its TTL for the stale window."""
        return f"stale:{self.entry(part, cell)}"

    def refresh_lock(self, part: Part, cell: Cell) -> str:
        """Held by the one instance refreshing this entry; the others wait for its announcement."""
        return f"lock:{self.entry(part, cell)}"

    def update_channel(self, part: Part, cell: Cell) -> str:
        """Where a refresh of this entry is announced."""
        return f"updates:{self.entry(part, cell)}"


SEED_SPELLING = CellKeys(hash_tags=False)
CLUSTER_SPELLING = CellKeys(hash_tags=True)


WATCHED_CELLS = "watched_cells"
"""Sorted set: member `<part>|<cell label>`, score = when the last watcher's registration expires."""

WATCHERS = "watchers"
"""Sorted set: member `<part>|<cell label>|<watcher>` (a hashed client id, shortened), score = when
that watcher's registration expires: the pre-warmer counts a cell's distinct watchers."""


def cell_member(part: Part, cell: Cell) -> str:
    """A (part, cell) as the demand sets spell it (watched, requested, kept)."""
    return f"{part.value}|{cell.label}"


def rate_limit_key(client_hash: str) -> str:
    return f"rate_limit:hash:{client_hash}"


def address_rate_limit_key(address_hash: str) -> str:
    """The looser per-address layer, against x-client-id rotation."""
    return f"rate_limit:ip:{address_hash}"


def persisted_query_key(sha256: str) -> str:
    return f"apq:{sha256}"


POPULAR_CELLS = "popular_cells"
"""Sorted set: `<part>|<cell label>` -> requests, decayed by the pre-warmer."""


def rhythm_key(day: str) -> str:
    """Hash of `day`'s reads (YYYY-MM-DD on the service's clock) per longitude band and UTC hour,
    and the hours the pre-warmer watched: the daily rhythm's counts (see demand/rhythm.py)."""
    return f"rhythm:{day}"


PREWARM_LEADER = "prewarm:leader"
"""The instance holding the pre-warmer's lease."""

PREWARM_KEPT = "prewarm:kept"
"""Set of `<part>|<cell label>` the budget keeps fresh this period, chosen by the pre-warmer:
a miss on a cell that has older data spends only on these."""

PREWARM_LAST_CYCLE = "prewarm:last_cycle"
"""When the last pre-warm cycle started (clock ms), so a new leader keeps the period."""


def active_clients_key(day: str) -> str:
    """HyperLogLog of the hashed client ids seen on `day` (YYYY-MM-DD, UTC)."""
    return f"active_clients:{day}"


def daily_stat_key(name: str, day: str) -> str:
    return f"stats:{name}:{day}"
