"""HTTP caching of answers that only read weather: how long a browser or an edge may keep them.

An answer built from cache entries cannot change before the provider can have
newer data (each entry knows when: its `next_update_ms`), so a GET answer may be
kept that long (`max-age`), served a little past it while the edge asks again
(`stale-while-revalidate`), and revalidated with `ETag` / `Last-Modified`: an
unchanged answer is a 304 without a body. A stale answer (the provider failed)
may be kept only while revalidated. What is not weather (errors, refusals, a
client's own limits) is `no-store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from blake3 import blake3

from weathernote.cache import Reading

STALE_WHILE_REVALIDATE_SECONDS = 60  # an edge may serve a just-expired answer this long while it asks again
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Validity:
    """What an answer's entries say about it: when the newest was fetched, when the first can change."""

    last_modified_ms: int
    next_update_ms: int
    stale: bool

    @classmethod
    def of(cls, readings: Iterable[Reading]) -> Validity | None:
        """The validity of an answer that read `readings` (None when it read nothing)."""
        entries = [(reading.entry, reading.stale) for reading in readings]
        if not entries:
            return None
        return cls(
            last_modified_ms=max(entry.fetched_at_ms for entry, _ in entries),
            next_update_ms=min(entry.next_update_ms for entry, _ in entries),
            stale=any(stale for _, stale in entries),
        )

    def headers(self, etag: str, now_ms: int, *, vary: str | None = None) -> dict[str, str]:
        """`Cache-Control`, `ETag`, `Last-Modified` (and `Vary`) for an answer of this validity."""
        max_age = 0 if self.stale else max(0, (self.next_update_ms - now_ms) // 1000)
        headers = {
            "Cache-Control": f"public, max-age={max_age}, stale-while-revalidate={STALE_WHILE_REVALIDATE_SECONDS}",
            "ETag": etag,
            "Last-Modified": format_datetime(datetime.fromtimestamp(self.last_modified_ms // 1000, UTC), usegmt=True),
        }
        if vary is not None:
            headers["Vary"] = vary
        return headers

    def unchanged_for(self, request_headers: Mapping[str, str], etag: str) -> bool:
        """Does the client already hold this answer (`If-None-Match`, else `If-Modified-Since`)?"""
        if_none_match = request_headers.get("if-none-match")
        if if_none_match is not None:
            return _matches(if_none_match, etag)
        if_modified_since = request_headers.get("if-modified-since")
        if if_modified_since is None:
            return False
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False  # not an HTTP date: ignored, as RFC 9110 says
        if since.tzinfo is None:
            return False
        return self.last_modified_ms // 1000 <= since.timestamp()


def entity_tag(body: bytes) -> str:
    """A strong validator of `body`: 128 bits of its BLAKE3 hash."""
    return f'"{blake3(body).hexdigest(length=16)}"'


def _matches(if_none_match: str, etag: str) -> bool:
    # weak comparison (RFC 9110 13.1.2): W/"x" matches "x"
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == wanted for candidate in if_none_match.split(","))
