"""Serving the app: uvicorn with its open-files limit raised and a deadline on each request's headers."""

from weathernote.http.serving.server import run

__all__ = ["run"]
