"""Structured logs: one JSON object per line on stderr, for every logger, uvicorn's included.

A line is formatted where it is logged (orjson, a few microseconds) and written
by a thread of its own (a queue handler), so a slow or blocked stderr never
stalls the event loop, and the loop pays no write per request.

A line logged inside a traced (sampled) operation carries its `trace_id`.

Raw client ids and addresses never reach them: uvicorn's lines lose the client
address they start with, and the loggers that print request headers below INFO
(websockets writes every handshake header, `x-client-id` and `x-forwarded-for`
too, through "uvicorn.error" at DEBUG) stay at INFO whatever the level asked.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sys
import threading
import time
from typing import Any, cast

import orjson
from opentelemetry import trace

# below INFO these print raw request headers or whole ASGI messages
_HEADER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "websockets")
_CLIENT_PREFIX = "%s - "  # uvicorn's lines about one client start with its address


# what every LogRecord has; anything else on a record is a caller's `extra` field
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """A record as one JSON object: time, level, logger, message, the `extra` fields, any traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # logging's name
        return self.timestamp(record.created)

    def timestamp(self, created: float) -> str:
        """logging's default time format (local time, milliseconds), one strftime a second, not one a line."""
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime(self.default_time_format, time.localtime(second))
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES:
                line[name] = value
        if "trace_id" not in line:
            # formatted on the caller's thread, inside the operation: its span is the current one
            context = trace.get_current_span().get_span_context()
            if context.trace_flags.sampled:
                line["trace_id"] = format(context.trace_id, "032x")
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return _dumps(line)


class _LineWriter(threading.Thread):
    """Writes queued lines to stderr, as many as are waiting in one write."""

    def __init__(self, lines: queue.SimpleQueue[str | None]) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.lines = lines

    def run(self) -> None:
        while True:
            batch = [self.lines.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1024:
                    batch.append(self.lines.get_nowait())
            done = None in batch
            text = "".join(line + "\n" for line in batch if line is not None)
            with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing left to tell
                sys.stderr.write(text)
                sys.stderr.flush()
            if done:
                return


class _QueueHandler(logging.Handler):
    """Formats on the caller's thread (a record's objects may change later), queues only the line
    for its writer thread."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.writer = _LineWriter(self.lines)
        self.writer.start()
        atexit.register(self.close)  # what is queued is written before the process ends

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.put(self.format(record))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self.writer.is_alive():
            self.lines.put(None)
            self.writer.join(timeout=5)
        atexit.unregister(self.close)
        super().close()


class AccessLog:
    """The request log: one line per request or WebSocket operation, on the `weathernote.access` logger.

    While `configure_logging`'s handler is the only one, the line is built straight
    from its fields, the same JSON a record would give: a LogRecord and the handler
    chain cost more than all the rest of a cached request's logging. Otherwise
    (another handler added, as a test's log capture does) it goes through the logger.
    """

    def __init__(self, name: str = "weathernote.access") -> None:
        self.logger = logging.getLogger(name)
        self._root = logging.getLogger()

    def write(self, message: str, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        root_handlers = self._root.handlers
        handler = root_handlers[0] if len(root_handlers) == 1 else None
        if not isinstance(handler, _QueueHandler) or logger.handlers:
            logger.info(message, extra=fields)
            return
        formatter = cast(JsonLineFormatter, handler.formatter)
        line = {"time": formatter.timestamp(time.time()), "level": "INFO", "logger": logger.name, "message": message}
        line.update(fields)
        handler.lines.put(_dumps(line))


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for every logger of the process, written by a thread of their own."""
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, _QueueHandler):
            previous.close()  # the writer of an earlier configuration writes what it holds, then stops
    handler = _QueueHandler()
    handler.setFormatter(JsonLineFormatter())
    # callers' file and line are not part of our lines: skip finding them (logging's own switch)
    logging._srcfile = None
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn set its own loggers to the level asked before the app (and this) ran
    for name in _HEADER_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    logging.getLogger("uvicorn.access").disabled = True  # weathernote.access logs each request
    logging.getLogger("uvicorn.error").addFilter(_client_fault_without_traceback)
    logging.getLogger("uvicorn.error").addFilter(_without_client_address)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _client_fault_without_traceback(record: logging.LogRecord) -> bool:
    """uvicorn logs a client's invalid UTF-8 frame with a traceback; the fault is the client's."""
    if record.exc_info and str(record.msg).startswith("Invalid UTF-8"):
        record.exc_info = None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def _without_client_address(record: logging.LogRecord) -> bool:
    """uvicorn's `127.0.0.1:45574 - "WebSocket /graphql" [accepted]`, without the address."""
    if isinstance(record.msg, str) and record.msg.startswith(_CLIENT_PREFIX) and isinstance(record.args, tuple):
        record.msg = record.msg.removeprefix(_CLIENT_PREFIX)
        record.args = record.args[1:]
    return True
