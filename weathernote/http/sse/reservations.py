"""Single-connection reservations: tokens handed out by PUT, bounded per address and per process.

A token is `<nonce>.<expires>.<mac>`, signed with the client-id key every
instance shares: an instance that did not hand it out (a balancer routed the
stream or an operation elsewhere) adopts it while it is still unexpired,
under the same caps. A reservation nobody opens a stream for is dropped after
its time to live (and the operations submitted to it with it); one with a
stream lasts as long as its stream. A token whose reservation ended here is
not adopted again here.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from weathernote.fairuse import Identity
from weathernote.graphql import Context
from weathernote.graphql.operations import Prepared
from weathernote.http.sse.operation import Running
from weathernote.http.sse.stream import EventStream
from weathernote.ops.requestlog import RequestInfo

Pending = tuple[Prepared, Context, RequestInfo]


@dataclass(eq=False, slots=True)
class Reservation:
    """One reservation: its stream once one opens, and its operations (pending until then)."""

    token: str
    address: str
    streaming: bool = False  # a stream opens or is open: only one may ever fulfil it at a time
    stream: EventStream | None = None
    running: Running | None = None
    pending: dict[str, Pending] = field(default_factory=dict)

    def holds(self, operation_id: str) -> bool:
        return operation_id in self.pending or (self.running is not None and operation_id in self.running)

    def operations(self) -> int:
        return len(self.pending) + (len(self.running) if self.running is not None else 0)


class Reservations:
    """The reservations of this process, by token."""

    def __init__(
        self,
        sign: Callable[[str], str],
        *,
        ttl: float,
        max_total: int,
        max_per_address: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.sign = sign
        self.ttl = ttl
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.now = now
        self.by_token: dict[str, Reservation] = {}
        self.unused: dict[str, float] = {}  # the tokens without a stream, with when they lapse (in order)
        self.per_address: Counter[str] = Counter()
        # tokens whose reservation ended here, until they lapse: not adopted again
        self.spent: dict[str, float] = {}

    def reserve(self, identity: Identity) -> str | None:
        """A new reservation's token; None when its address (or the process) holds as many as it may."""
        self._purge()
        if not self._room(identity):
            return None
        expires = self.now() + self.ttl
        unsigned = f"{secrets.token_hex(16)}.{math.ceil(expires)}"
        token = f"{unsigned}.{self._mac(unsigned)}"
        self._add(token, identity, expires)
        return token

    def find(self, token: str | None, identity: Identity, *, adopt: bool) -> Reservation | None:
        """The reservation of `token`, or (`adopt`) a valid one another instance handed out, now ours."""
        self._purge()
        if not token:
            return None
        found = self.by_token.get(token)
        if found is not None or not adopt:
            return found
        expires = self._valid_until(token)
        if expires is None or token in self.spent or not self._room(identity):
            return None
        return self._add(token, identity, expires)

    def attach(self, reservation: Reservation, stream: EventStream, running: Running) -> None:
        """Its stream opened: the reservation lasts as long as the stream."""
        reservation.stream = stream
        reservation.running = running
        self.unused.pop(reservation.token, None)

    def release(self, reservation: Reservation) -> None:
        if self.by_token.get(reservation.token) is not reservation:
            return
        del self.by_token[reservation.token]
        self.unused.pop(reservation.token, None)
        expires = self._valid_until(reservation.token)
        if expires is not None:
            if len(self.spent) >= self.max_total:
                del self.spent[next(iter(self.spent))]
            self.spent[reservation.token] = expires
        reservation.pending.clear()
        self.per_address[reservation.address] -= 1
        if self.per_address[reservation.address] <= 0:
            del self.per_address[reservation.address]

    def _room(self, identity: Identity) -> bool:
        return len(self.by_token) < self.max_total and self.per_address[identity.address] < self.max_per_address

    def _add(self, token: str, identity: Identity, expires: float) -> Reservation:
        reservation = Reservation(token, identity.address)
        self.by_token[token] = reservation
        self.unused[token] = expires
        self.per_address[identity.address] += 1
        return reservation

    def _purge(self) -> None:
        """Drop the reservations whose time ran out before a stream opened (the oldest first)."""
        now = self.now()
        while self.spent and next(iter(self.spent.values())) <= now:
            del self.spent[next(iter(self.spent))]
        while self.unused:
            token, expires = next(iter(self.unused.items()))
            if expires > now:
                return
            reservation = self.by_token.get(token)
            if reservation is not None and reservation.streaming:
                self.unused.pop(token)  # its stream is opening: it lasts as long as the stream
            elif reservation is not None:
                self.release(reservation)
            else:
                self.unused.pop(token)

    def _mac(self, unsigned: str) -> str:
        return self.sign(f"sse-reservation:{unsigned}")[:32]

    def _valid_until(self, token: str) -> float | None:
        """When a token signed by any instance lapses, if it is genuine and has not yet."""
        unsigned, _, mac = token.rpartition(".")
        _, _, expires = unsigned.partition(".")
        if not mac or not expires.isdigit() or not hmac.compare_digest(mac.encode(), self._mac(unsigned).encode()):
            return None
        return float(expires) if float(expires) > self.now() else None
