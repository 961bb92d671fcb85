"""Persisted queries: Automatic Persisted Queries (APQ) in Redis, or a fixed safelist.

APQ: a client sends `extensions.persistedQuery.sha256Hash` alone; if the
server knows the hash it runs the stored text, otherwise it answers
PERSISTED_QUERY_NOT_FOUND and the client retries with the text, which is then
stored for every instance. Short GET URLs of known hashes are what lets a CDN
cache responses. Safelist mode accepts only the operations of a manifest
(Apollo's persisted-query manifest format), by hash or by identical text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weathernote.bounded import BoundedCache
from weathernote.errors import CacheError, DocumentError
from weathernote.graphql.errors import PERSISTED_QUERY_NOT_FOUND
from weathernote.redis import RedisGateway
from weathernote.redis.keys import persisted_query_key

log = logging.getLogger(__name__)

PERSISTED_QUERY_NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
_TTL_SECONDS = 30 * 24 * 3600
DEFAULT_LOCAL_BYTES = 8 * 1024 * 1024


class PersistedQueryError(DocumentError):
    """A persisted query refused: unknown hash, not in the safelist, or a malformed extension."""

    def __init__(self, message: str, code: str | None, status: int = 200) -> None:
        super().__init__(message, code)
        self.status = status  # 200: a GraphQL error the client acts on; 400: a bad request


def load_manifest(path: Path) -> dict[str, str]:
    """sha256 -> query text, from an Apollo persisted-query manifest."""
    manifest = json.loads(path.read_text())
    operations = manifest.get("operations") if isinstance(manifest, dict) else None
    if not isinstance(operations, list):
        raise ValueError(f"{path}: not a persisted-query manifest (no `operations` list)")
    safelist = {}
    for operation in operations:
        body = operation.get("body")
        if not isinstance(body, str):
            raise ValueError(f"{path}: an operation without a `body`")
        safelist[_sha256(body)] = body
    return safelist


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request's query text, and what persisting it would take."""

    query: str | None
    by_hash: bool = False  # the text came by its hash (a CDN may cache the answer)
    register: str | None = None  # a new APQ text's hash: `PersistedQueries.register` it once admitted and valid


class PersistedQueries:
    """Query texts by hash: APQ in Redis (with a local copy bounded in bytes), or a fixed safelist.

    Nothing a client sends is stored on arrival: `resolve` only reads, and the
    transport registers a new text after the request was admitted and its
    document passed the limits, parse and validation.
    """

    def __init__(
        self, redis: RedisGateway, safelist: dict[str, str] | None = None, *, cache_bytes: int = DEFAULT_LOCAL_BYTES
    ) -> None:
        self.redis = redis
        self.safelist = safelist
        self._local: BoundedCache[str] = BoundedCache("persisted", cache_bytes)

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> Resolved:
        """The query text to run (None if the request has none), stored nowhere yet."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if self.safelist is not None and query is not None and _sha256(query) not in self.safelist:
                raise PersistedQueryError("This operation is not in the safelist.", PERSISTED_QUERY_NOT_IN_LIST)
            return Resolved(query)
        sha = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not isinstance(sha, str) or len(sha) != 64 or persisted.get("version", 1) != 1:
            raise PersistedQueryError("persistedQuery needs version 1 and a sha256Hash", None, status=400)
        sha = sha.lower()
        if query is not None:
            if _sha256(query) != sha:
                raise PersistedQueryError("provided sha does not match query", None, status=400)
            if self.safelist is not None:
                if sha not in self.safelist:
                    raise PersistedQueryError("This operation is not in the safelist.", PERSISTED_QUERY_NOT_IN_LIST)
                return Resolved(query)
            return Resolved(query, register=None if self._local.get(sha) is not None else sha)
        text = await self._lookup(sha)
        if text is None:
            raise PersistedQueryError("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND)
        return Resolved(text, by_hash=True)

    async def register(self, sha: str, query: str) -> None:
        """Keep an admitted, valid text under its hash, here and for every instance."""
        if self._local.get(sha) is not None:
            return
        self._remember(sha, query)
        with contextlib.suppress(CacheError):
            await self.redis.call(lambda client: client.set(persisted_query_key(sha), query, ex=_TTL_SECONDS))

    async def _lookup(self, sha: str) -> str | None:
        if self.safelist is not None:
            return self.safelist.get(sha)
        text = self._local.get(sha)
        if text is not None:
            return text
        try:
            [raw] = await self.redis.get_many([persisted_query_key(sha)])
        except CacheError:
            return None  # Redis down: the client sends the text again
        if raw is None:
            return None
        text = raw.decode(errors="replace")
        if _sha256(text) != sha:
            return None  # not what was stored under this hash: the client sends the text again
        self._remember(sha, text)
        return text

    def _remember(self, sha: str, query: str) -> None:
        self._local.put(sha, query, sys.getsizeof(query) + len(sha))
