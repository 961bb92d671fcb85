"""Live updates over Server-Sent Events (the graphql-sse protocol, distinct connections mode), for
networks that drop WebSockets (corporate proxies, some carriers).

One watch is one `POST /graphql` with `Accept: text/event-stream`: the operation by hash (by text
when the server asks), its results as `next` events. When the stream drops, the server ends it (a
`complete`, or an instance shutting down) or it stays silent past `READ_TIMEOUT` (the server sends a
comment every 12 s), the watch posts again after a jittered backoff, as the WebSocket watch connects
again; a `Watermark` keeps any update from reaching the caller twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from weathernote_client.errors import (
    PERSISTED_QUERY_NOT_FOUND,
    RateLimited,
    ServerError,
    UpstreamUnavailable,
    error_from_graphql,
)
from weathernote_client.live import LiveOperation, T, Watermark, _Restart
from weathernote_client.operations import Operation
from weathernote_client.retry import RetryPolicy

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
READ_TIMEOUT = 45.0  # nearly four of the server's keep-alive comments missed: the stream is dead
CONNECT_TIMEOUT = 10.0


class _ByText(Exception):
    """The server does not know the operation's hash: post it again with its text, at once."""


class EventParser:
    """Lines of an event stream in, whole events out (`(event, data)`; comments dropped)."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            if not self.data:
                self.event = "message"
                return None
            event = (self.event, "\n".join(self.data))
            self.event, self.data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


async def watch_sse(
    http: httpx.AsyncClient,
    url: str,
    live: LiveOperation[T],
    variables: Mapping[str, Any],
    policy: RetryPolicy,
) -> AsyncGenerator[T, None]:
    """Every new value of a subscription over SSE, across reconnects, until the caller stops iterating.

    Raises what retrying cannot mend, as the WebSocket watch does: `BadInput`, `OperationRefused`,
    a result that does not read as `live.parse` expects.
    """
    watermark = Watermark()
    retries = 0
    with_text = False
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)
    while True:
        try:
            body = _request(live.operation, variables, with_text)
            headers = {"accept": EVENT_STREAM}
            async with http.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
                await _check(response)
                parser = EventParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    if event[0] == "complete":
                        raise _Restart("the server completed the subscription")
                    if event[0] != "next":
                        continue
                    data = _data(event[1], with_text)
                    retries = 0
                    fields = data.get(live.root)
                    value = live.parse(fields)
                    if isinstance(fields, Mapping) and watermark.advance(value.fetched_at, fields):
                        yield value
            delay, reason = policy.backoff(retries), "the server ended the stream"
        except _ByText:
            with_text = True
            continue
        except _Restart as restart:
            delay = policy.backoff(retries) if restart.delay is None else restart.delay
            reason = restart.reason
        except httpx.TransportError as exc:
            delay = policy.backoff(retries)
            reason = f"stream lost ({exc or type(exc).__name__})"
        log.info("%s: %s; subscribing again in %.1f s", url, reason, delay)
        retries += 1
        await asyncio.sleep(delay)


def _request(operation: Operation, variables: Mapping[str, Any], with_text: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operationName": operation.name,
        "variables": dict(variables),
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": operation.sha256}},
    }
    if with_text:
        body["query"] = operation.body
    return body


async def _check(response: httpx.Response) -> None:
    """Go on if the server opened an event stream; else start again later, or raise, by its answer."""
    if response.status_code == 200 and response.headers.get("content-type", "").startswith(EVENT_STREAM):
        return
    await response.aread()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if response.status_code == 429:
        retry_after = _seconds(response.headers.get("retry-after"))
        if retry_after is None and isinstance(errors, list) and errors:
            error = error_from_graphql(errors)
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
        raise _Restart("rate limited", retry_after if retry_after is not None else 1.0)
    if response.status_code >= 500:
        raise _Restart(f"HTTP {response.status_code}")
    if isinstance(errors, list) and errors:
        raise error_from_graphql(errors)
    raise ServerError(f"HTTP {response.status_code}: not an event stream")


def _data(text: str, with_text: bool) -> Mapping[str, Any]:
    """A `next` event's `data`; a refusal restarts (later, or by text at once) or raises."""
    try:
        payload = json.loads(text)
    except ValueError:
        raise _Restart("an event that is not JSON") from None
    if not isinstance(payload, Mapping):
        raise ServerError(f"unexpected subscription payload: {payload!r}")
    errors = payload.get("errors")
    if errors:
        error = error_from_graphql(errors if isinstance(errors, list) else [])
        if error.code == PERSISTED_QUERY_NOT_FOUND and not with_text:
            raise _ByText
        if isinstance(error, RateLimited):
            raise _Restart("rate limited", error.retry_after)
        if isinstance(error, UpstreamUnavailable | ServerError):
            raise _Restart(error.message)
        raise error
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise ServerError(f"unexpected subscription payload: {payload!r}")
    return data


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
