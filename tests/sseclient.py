"""A GraphQL-over-SSE reader for tests: the events of a real httpx streaming response, comments included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

EVENT_STREAM = {"accept": "text/event-stream"}
TOKEN_HEADER = "x-graphql-event-stream-token"


@dataclass
class Event:
    """One dispatched event (`event` is "comment" for a comment block such as a keep-alive)."""

    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class EventReader:
    """Events of an open `text/event-stream` response, in order."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def next(self, timeout: float = 10.0, comments: bool = False) -> Event:
        """The next event within `timeout` seconds (keep-alive comments skipped unless asked for)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._read()
                if event.event != "comment" or comments:
                    return event

    async def data(self, timeout: float = 10.0) -> Any:
        """The data of the next `next` event."""
        event = await self.next(timeout)
        assert event.event == "next", event
        return event.json()

    async def ended(self, timeout: float = 5.0) -> bool:
        """Whether the server ends the stream (after whatever comments) within `timeout` seconds."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    event = await self._read()
                    assert event.event == "comment", event
            except StopAsyncIteration:
                return True

    async def _read(self) -> Event:
        name, data, comment = "message", [], False
        async for line in self._lines:
            if line == "":
                if data or comment:
                    return Event("comment" if comment and not data else name, "\n".join(data))
                continue
            if line.startswith(":"):
                comment = True
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        raise StopAsyncIteration
