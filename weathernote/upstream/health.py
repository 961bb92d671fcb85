"""Why the upstream fails, said once per change of state rather than once per request.

A dead network fails every query fast; a log line per query would bury the one
thing an operator needs: what broke (DNS, a refused connection, a timeout, an
HTTP status, a malformed answer) and, the first time, that an offline simulator exists.
"""

from __future__ import annotations

import logging
import socket
import ssl

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "without internet access, run against the bundled Open-Meteo simulator:"
    " `make offline` (= `weathernote serve --simulator`)"
)


class UpstreamHealth:
    """The upstream's state as this process last saw it: healthy, or failing with one symptom.

    Logs healthy → failing (an error, with the offline hint), one symptom → another
    (an error) and failing → healthy (a warning, so that it shows wherever the error did).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.symptom: str | None = None  # None while healthy

    def failed(self, symptom: str, reason: str) -> None:
        """A call failed with `symptom` (the state: "timeout", "HTTP 503", …); `reason` says it in full."""
        if symptom == self.symptom:
            return
        if self.symptom is None:
            log.error("upstream %s failing: %s; %s", self.url, reason, OFFLINE_HINT)
        else:
            log.error("upstream %s now failing: %s (was: %s)", self.url, reason, self.symptom)
        self.symptom = symptom

    def succeeded(self) -> None:
        if self.symptom is not None:
            log.warning("upstream %s healthy again (was: %s)", self.url, self.symptom)
            self.symptom = None


def connection_symptom(exc: BaseException) -> tuple[str, str]:
    """What a failed exchange's root cause was, as (symptom, detail): DNS, refused, TLS, …

    httpx wraps the socket's error (httpx → httpcore → OSError → …), so the chain is searched.
    """
    root: BaseException = exc
    for cause in _chain(exc):
        if isinstance(cause, socket.gaierror):
            return "DNS lookup failed", str(cause)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused", str(cause)
        if isinstance(cause, ssl.SSLError):
            return "TLS failed", str(cause)
        if isinstance(cause, OSError):
            root = cause
    return "connection failed", f"{type(root).__name__}: {root}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the members of any exception group, once each."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return found
