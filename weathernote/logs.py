"""Structured logs: one JSON object per line on stderr, for every logger, uvicorn's included.

Raw client ids and addresses never reach them: uvicorn's lines lose the client
address they start with, and the loggers that print request headers below INFO
(websockets writes every handshake header, `x-client-id` and `x-forwarded-for`
too, through "uvicorn.error" at DEBUG) stay at INFO whatever the level asked.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pythonjsonlogger.json import JsonFormatter

# below INFO these print raw request headers or whole ASGI messages
_HEADER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "websockets")
_CLIENT_PREFIX = "%s - "  # uvicorn's lines about one client start with its address


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_serializer=_dumps,
        )
    )
    root = logging.getLogger()
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
