"""Structured logs: one JSON object per line on stderr, for every logger, uvicorn's included."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pythonjsonlogger.json import JsonFormatter


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
    logging.getLogger("uvicorn.access").disabled = True  # weathernote.access logs each request
    logging.getLogger("uvicorn.error").addFilter(_client_fault_without_traceback)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _client_fault_without_traceback(record: logging.LogRecord) -> bool:
    """uvicorn logs a client's invalid UTF-8 frame with a traceback; the fault is the client's."""
    if record.exc_info and str(record.msg).startswith("Invalid UTF-8"):
        record.exc_info = None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True
