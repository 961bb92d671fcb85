"""Memory bounded in bytes: the one least-recently-used cache of the service.

A count says nothing of memory here: a rendered response can be a few hundred
bytes or, for a 16-day forecast with every hour and field, half a megabyte, and
a decoded hourly entry about 75 KB. Every in-process cache (documents,
responses, subscription payloads, decoded entries) is a `BoundedCache` with a
byte budget, its size exported as `weathernote_render_cache_bytes{kind}`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import orjson

from weathernote.ops import metrics

V = TypeVar("V")
# what an entry costs beside what its owner weighs: its key's tuple, versions and slot
ENTRY_OVERHEAD_BYTES = 512


def kept_json(value: Any, option: int = 0) -> bytes:
    """`value` as JSON bytes sized to their length, for anything a cache keeps.

    orjson returns its output inside the buffer it grew (4 KB at least): a
    50-byte key kept as returned holds 4 KB of memory that `len` and
    `sys.getsizeof` do not show, and a byte budget would be off by 80 times.
    """
    return bytes(memoryview(orjson.dumps(value, option=option)))


class BoundedCache(Generic[V]):
    """A least-recently-used map bounded in bytes, its size exported as a gauge.

    Each entry is charged what its owner says it weighs plus a fixed overhead.
    """

    def __init__(self, kind: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._gauge = metrics.RENDER_CACHE_BYTES.labels(kind)
        self._gauge.set(0)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def pop(self, key: Hashable) -> V | None:
        """Forget `key`; its value, or None."""
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        self._gauge.set(self.bytes)
        return item[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        size += ENTRY_OVERHEAD_BYTES
        previous = self._items.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        if size <= self.max_bytes:  # larger would evict everything else and still not fit
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted
        self._gauge.set(self.bytes)
