"""The entries this process has decoded, and the older ones standing in for a refresh.

Every reader of one version of an entry shares one decoded object: its model
is decoded once per process, not once per reader, and a request whose entries
this process already knows renders from them. While Redis is down, the latest
entries seen still answer while fresh. A version decoded whole once is known by
its header after its model is evicted: read again, it decodes only when rendered.
The maps are bounded in bytes (`bounded.BoundedCache`): a decoded 16-day hourly
entry is about 75 KB, its header 40 bytes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from weathernote.bounded import BoundedCache
from weathernote.errors import SkipCause, UndecodableEntry
from weathernote.model import Cell, Entry, Part
from weathernote.ops import metrics

log = logging.getLogger(__name__)

# what a decoded entry holds beside its JSON: its model's strings, floats and lists
_DECODED_BYTES_PER_PAYLOAD_BYTE = 4
# Keys whose undecodable entries were logged: once per key, not per read.
_LOGGED_UNDECODABLE_MAX = 4096
DEFAULT_MEMO_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StandIn:
    """Older data serving instead of a refresh, by the budget's choice, until `until_ms`."""

    entry: Entry
    cause: SkipCause
    until_ms: int


def entry_bytes(entry: Entry) -> int:
    return len(entry.payload) * _DECODED_BYTES_PER_PAYLOAD_BYTE


class EntryMemo:
    """Decoded entries by (part, cell), the latest seen of each; and stand-ins, bounded in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self._recent: BoundedCache[Entry] = BoundedCache("entry", max_bytes)
        # Older data that stands in by the budget's choice (pace, value), per entry, for a minute
        # at most and never past the upstream's next step: one decision per cell and minute,
        # not Redis round trips on every read.
        self._standing: BoundedCache[StandIn] = BoundedCache("standing", max_bytes // 4)
        # The header of the latest version of each entry that decoded whole here, long after its
        # decoded model is evicted (a header costs about 600 bytes kept, a decoded hourly entry 75 KB): reading
        # that version again takes its header alone, and a response rendered from it needs no more.
        self._decoded_versions: BoundedCache[bytes] = BoundedCache("version", max_bytes // 4)
        self._logged_undecodable: set[tuple[Part, str, bool]] = set()

    def latest(self, part: Part, cell: Cell) -> Entry | None:
        """The latest entry this process has seen of `part` of `cell`."""
        return self._recent.get((part, cell.label))

    def decode(self, part: Part, cell: Cell, raw: bytes) -> Entry:
        """The entry of `raw`, the same object for every reader of one version."""
        known = self._recent.get((part, cell.label))
        if known is not None and raw.startswith(known.header):
            return known
        header = self._decoded_versions.get((part, cell.label))
        if header is not None and raw.startswith(header):
            return Entry.undecoded(part, cell, raw)
        return self.remember(Entry.decode(part, cell, raw))

    def checked(self, part: Part, cell: Cell, raw: bytes | None, *, stale: bool = False) -> Entry | None:
        """The entry `raw` holds (its last good copy with `stale`), or None when there is none or it
        does not decode (a miss: refetched, and overwritten by the refresh)."""
        if raw is None:
            return None
        try:
            # a stale copy is decoded on its own: it must not replace the latest entry seen
            return Entry.decode(part, cell, raw) if stale else self.decode(part, cell, raw)
        except UndecodableEntry as exc:
            metrics.UNDECODABLE_ENTRIES.labels(part.value).inc()
            which = (part, cell.label, stale)
            if which not in self._logged_undecodable:
                if len(self._logged_undecodable) >= _LOGGED_UNDECODABLE_MAX:
                    self._logged_undecodable.clear()
                self._logged_undecodable.add(which)
                copy = "last good copy" if stale else "entry"
                log.warning(
                    "undecodable %s of %s %s (%s): treated as a miss and overwritten", copy, part.value, cell, exc
                )
            return None

    def remember(self, entry: Entry) -> Entry:
        key = (entry.part, entry.cell.label)
        self._recent.put(key, entry, entry_bytes(entry))
        header = entry.header
        self._decoded_versions.put(key, header, sys.getsizeof(header))
        return entry

    def fetched(self, entries: list[Entry]) -> None:
        """Entries just fetched: the latest of their cells, and no older data stands in for them now."""
        for entry in entries:
            self._standing.pop((entry.part, entry.cell.label))
            self.remember(entry)

    def standing(self, part: Part, cell: Cell, now_ms: int) -> StandIn | None:
        """The older data standing in for `part` of `cell` now, if any."""
        key = (part, cell.label)
        stand_in = self._standing.get(key)
        if stand_in is None:
            return None
        if now_ms >= stand_in.until_ms:
            self._standing.pop(key)
            return None
        return stand_in

    def stand_in(self, entry: Entry, cause: SkipCause, until_ms: int) -> None:
        self._standing.put((entry.part, entry.cell.label), StandIn(entry, cause, until_ms), entry_bytes(entry))
