"""Error answers in Open-Meteo's shape, `{"error":true,"reason":...}`, and the injected faults."""

from __future__ import annotations

from http import HTTPStatus

import orjson
from starlette.responses import Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"

NOT_FOUND = "Not Found"
TOO_MANY_CONCURRENT = "Too many concurrent requests"
OVERLOADED = "The service is overloaded"
MINUTELY_LIMIT = "Minutely API request limit exceeded. Please try again in one minute."
HOURLY_LIMIT = "Hourly API request limit exceeded. Please try again in the next hour."
DAILY_LIMIT = "Daily API request limit exceeded. Please try again tomorrow."
STREAMING_ERROR = b"Unexpected error while streaming data: simulated upstream fault"

# What the front proxy answers during an outage: HTML, not JSON.
_BAD_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# Reasons the server gives for statuses a test may force.
_FORCED_REASONS = {
    401: "API key required. Please add &apikey= to the URL.",
    403: "This API endpoint requires the API Professional or Enterprise plan",
    429: MINUTELY_LIMIT,
    503: OVERLOADED,
}


class ApiError(Exception):
    """A request the server refuses; `reason` is the exact text it would give."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, headers={"content-type": JSON_MEDIA_TYPE})


def error_response(status: int, reason: str) -> Response:
    return json_response(b'{"error":true,"reason":' + orjson.dumps(reason) + b"}", status)


def forced_response(status: int) -> Response:
    """A plausible error body for a status forced by the `forced_status` knob."""
    return error_response(status, _FORCED_REASONS.get(status) or _phrase(status))


def bad_gateway() -> Response:
    return Response(_BAD_GATEWAY_PAGE, status_code=502, media_type="text/html")


def broken_stream(body: bytes) -> Response:
    """A 200 whose JSON stops halfway, followed by the server's plain-text streaming error."""
    return json_response(body[: max(1, len(body) // 2)] + STREAMING_ERROR)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status without a registered name
        return "Internal Server Error" if status >= 500 else "Bad Request"
