"""What one request did, noted as it happens, for its single structured log line.

A context variable, so the service can say "this read was a hit" without
knowing which transport asked; the transport writes the line at the end.
"""

from __future__ import annotations

import random
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestInfo:
    """What one request or WebSocket operation did, for its log line and metrics."""

    request_id: str
    transport: str
    started: float = field(default_factory=time.perf_counter)
    operation: str | None = None
    cells: list[str] = field(default_factory=list)
    cache: set[str] = field(default_factory=set)  # "hit", "miss", "stale"
    outcome: str = "ok"
    client: str | None = None  # a hashed client id, shortened; never the raw id
    trace_id: str | None = None  # its trace's id, when it is traced (sampled)

    def fields(self) -> dict[str, Any]:
        fields = {
            "request_id": self.request_id,
            "transport": self.transport,
            "operation": self.operation,
            "cell": self.cells[0] if len(self.cells) == 1 else (self.cells or None),
            "cache": _summary(self.cache),
            "outcome": self.outcome,
            "client": self.client,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }
        if self.trace_id is not None:
            fields["trace_id"] = self.trace_id
        return fields


def _summary(outcomes: set[str]) -> str | None:
    if not outcomes:
        return None
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def new_request_id() -> str:
    """128 random bits as hex: unique, not secret (uuid4 reads os.urandom, a system call per request)."""
    return f"{random.getrandbits(128):032x}"


current: ContextVar[RequestInfo | None] = ContextVar("weathernote_request", default=None)


def note_read(cell: str, outcome: str) -> None:
    info = current.get()
    if info is not None:
        if cell not in info.cells:
            info.cells.append(cell)
        info.cache.add(outcome)


def note(**values: Any) -> None:
    info = current.get()
    if info is not None:
        for name, value in values.items():
            setattr(info, name, value)
