"""GraphQL over Server-Sent Events (the graphql-sse protocol): distinct connections on /graphql with
`Accept: text/event-stream`, and single connections (reservations) on /graphql/stream.

The same operations as the WebSocket transport (`graphql.Operations`: one way into a document,
admission by cost, planned subscriptions served by feeds), framed as events; a writer that never
queues (latest wins per operation while a client drains), keep-alive comments, and caps on streams,
reservations and operations.
"""

from weathernote.http.sse.distinct import DistinctStreams
from weathernote.http.sse.gate import StreamGate
from weathernote.http.sse.protocol import EVENT_STREAM, TOKEN_HEADER, wants_event_stream
from weathernote.http.sse.reservations import Reservations
from weathernote.http.sse.single import SingleConnection

__all__ = [
    "EVENT_STREAM",
    "TOKEN_HEADER",
    "DistinctStreams",
    "Reservations",
    "SingleConnection",
    "StreamGate",
    "wants_event_stream",
]
