"""A typed async client of the WeatherNote GraphQL API, and the `weathernote-client` command.

For example:

    async with WeatherNoteClient("http://127.0.0.1:8000", client_id=device_id) as client:
        now = await client.current(48.8566, 2.3522)
        async for update in client.watch_current(48.8566, 2.3522):
            ...

The operations it sends are the app's, listed in the server's persisted-query manifest.
"""

from weathernote_client._version import __version__
from weathernote_client.client import WeatherNoteClient
from weathernote_client.errors import (
    BadInput,
    ConnectionFailed,
    OperationRefused,
    RateLimited,
    ServerError,
    UpstreamUnavailable,
    WeatherNoteClientError,
)
from weathernote_client.models import (
    Cell,
    Condition,
    CurrentWeather,
    DailyForecast,
    Forecast,
    HourlyForecast,
    Units,
)
from weathernote_client.retry import RetryPolicy

__all__ = [
    "BadInput",
    "Cell",
    "Condition",
    "ConnectionFailed",
    "CurrentWeather",
    "DailyForecast",
    "Forecast",
    "HourlyForecast",
    "OperationRefused",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Units",
    "UpstreamUnavailable",
    "WeatherNoteClient",
    "WeatherNoteClientError",
    "__version__",
]
