"""How an answer's bytes leave the simulator: at once, padded to a huge size, or trickled.

A padded answer is the real one followed by JSON whitespace, so it stays valid
and only a client that caps what it reads refuses it. A trickled answer sends
its headers and first bytes at once, then the rest at the configured rate: a
client whose timeout applies per read waits as long as the trickle lasts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from weathernote.simulator.faults.errors import JSON_MEDIA_TYPE, json_response

_PADDING_CHUNK = 64 * 1024
_SPACES = b" " * _PADDING_CHUNK
_TRICKLES_PER_SECOND = 10  # at rates above this many bytes a second, pieces go out every 0.1 s


def deliver(body: bytes, *, padding_bytes: int, trickle_bytes_per_second: float) -> Response:
    if not padding_bytes and not trickle_bytes_per_second:
        return json_response(body)
    chunks = _padded(body, padding_bytes)
    if trickle_bytes_per_second:
        chunks = _trickled(chunks, trickle_bytes_per_second)
    return StreamingResponse(chunks, headers={"content-type": JSON_MEDIA_TYPE})


async def _padded(body: bytes, padding_bytes: int) -> AsyncIterator[bytes]:
    yield body
    left = padding_bytes
    while left > 0:
        size = min(left, _PADDING_CHUNK)
        yield _SPACES[:size]
        left -= size


async def _trickled(chunks: AsyncIterator[bytes], bytes_per_second: float) -> AsyncIterator[bytes]:
    piece = max(1, int(bytes_per_second / _TRICKLES_PER_SECOND))
    pause = piece / bytes_per_second
    async for chunk in chunks:
        for start in range(0, len(chunk), piece):
            yield chunk[start : start + piece]
            await asyncio.sleep(pause)
