"""The in-process caches are bounded in bytes, least recently used out, and say how much they hold."""

from __future__ import annotations

import sys
import tracemalloc

import orjson
from prometheus_client import REGISTRY

from weathernote.bounded import ENTRY_OVERHEAD_BYTES, BoundedCache, kept_json
from weathernote.graphql.documents import Planner
from weathernote.graphql.schema import schema

KIB = 1024


def held(kind: str) -> float | None:
    return REGISTRY.get_sample_value("weathernote_render_cache_bytes", {"kind": kind})


def test_stays_within_its_budget_evicting_the_least_recently_used() -> None:
    cache: BoundedCache[bytes] = BoundedCache("unit-lru", 10 * KIB)
    for key in "abcd":
        cache.put(key, key.encode() * 2 * KIB, 2 * KIB)
    assert cache.get("a") == b"a" * 2 * KIB  # a is now the most recently used
    cache.put("e", b"e" * 3 * KIB, 3 * KIB)
    assert cache.get("b") is None and cache.get("c") is None, "the two least recently used made room"
    assert [key for key in "ade" if cache.get(key) is not None] == ["a", "d", "e"]
    assert cache.bytes == 7 * KIB + 3 * ENTRY_OVERHEAD_BYTES <= cache.max_bytes
    assert held("unit-lru") == cache.bytes


def test_a_count_does_not_matter_only_bytes() -> None:
    cache: BoundedCache[str] = BoundedCache("unit-count", 64 * KIB)
    for i in range(10_000):
        cache.put(i, "x", 1)
    assert len(cache) == 64 * KIB // (1 + ENTRY_OVERHEAD_BYTES)
    large: BoundedCache[bytes] = BoundedCache("unit-large", 1024 * KIB)
    for i in range(4_000):  # the 4,000 distinct half-megabyte documents
        large.put(i, b"", 512 * KIB)
    assert len(large) == 1 and large.bytes <= large.max_bytes


def test_an_entry_larger_than_the_budget_is_not_kept() -> None:
    cache: BoundedCache[bytes] = BoundedCache("unit-oversize", 4 * KIB)
    cache.put("small", b"s", 1 * KIB)
    cache.put("huge", b"h", 5 * KIB)
    assert cache.get("huge") is None and cache.get("small") == b"s", "nothing evicted for an entry that cannot fit"


def test_replacing_a_key_charges_only_its_new_size() -> None:
    cache: BoundedCache[bytes] = BoundedCache("unit-replace", 8 * KIB)
    cache.put("k", b"old", 6 * KIB)
    cache.put("k", b"new", 1 * KIB)
    assert cache.get("k") == b"new" and cache.bytes == 1 * KIB + ENTRY_OVERHEAD_BYTES
    cache.put("k", b"too big", 9 * KIB)
    assert cache.get("k") is None and cache.bytes == 0, "the old value does not outlive its replacement"
    assert held("unit-replace") == 0


def test_the_planner_keeps_documents_within_its_budget() -> None:
    planner = Planner(schema._schema, cache_bytes=256 * KIB)
    for i in range(200):
        query = f"query Q{i} {{ current(lat: 1, lon: 2) {{ temperature humidity cached }} }}"
        plan = planner.plan(query, None)
        assert plan is not None and plan.label == "current"
        assert planner.plan(query, None) is plan, "planned once while the document is kept"
    assert 128 * KIB < held("document") <= 256 * KIB  # type: ignore[operator]
    assert planner.plan("query A { __typename } query B { __typename }", "Nope") is None


def test_what_a_cache_keeps_weighs_what_it_is_charged() -> None:
    # orjson's output sits in the 4 KB buffer it grew: kept as returned, a small key or body
    # would hold about 80 times what the byte budget charges for it
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [kept_json({"lat": 52.5 + i / 10, "lon": 13.4}, orjson.OPT_SORT_KEYS) for i in range(2000)]
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert orjson.loads(kept[7]) == {"lat": 53.2, "lon": 13.4}
    charged = sum(sys.getsizeof(item) for item in kept)
    assert allocated < 2 * charged
