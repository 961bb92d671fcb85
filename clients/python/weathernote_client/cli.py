"""`weathernote-client`: current weather, forecasts and live updates from a WeatherNote server.

    weathernote-client current --lat 48.8566 --lon 2.3522 [--units imperial]
    weathernote-client forecast --lat 48.8566 --lon 2.3522 --days 3 [--hours 6]
    weathernote-client watch --lat 48.8566 --lon 2.3522      # one line per update, until Ctrl-C

`--url` (default `$WEATHERNOTE_URL`, else http://127.0.0.1:8000) names the server; `--json`
prints each result as one JSON object per line. Exit status: 0, 1 on an error (said on
stderr), 2 on a usage error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import sys

from weathernote_client.client import DEFAULT_URL, WeatherNoteClient
from weathernote_client.errors import WeatherNoteClientError
from weathernote_client.models import CurrentWeather, Forecast, Units

INTERRUPTED = 130
_UNIT_LABELS = {
    Units.METRIC: {"temperature": "°C", "precipitation": "mm", "speed": "km/h"},
    Units.IMPERIAL: {"temperature": "°F", "precipitation": "in", "speed": "mph"},
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="weathernote-client", description="Weather from a WeatherNote server, over its GraphQL API."
    )
    top.add_argument("--url", default=os.environ.get("WEATHERNOTE_URL", DEFAULT_URL), help="server base URL")
    top.add_argument("--client-id", default=os.environ.get("WEATHERNOTE_CLIENT_ID"), help="sent as x-client-id")
    top.add_argument("--json", action="store_true", help="one JSON object per result")
    top.add_argument(
        "--transport", choices=["websocket", "sse"], default="websocket", help="how `watch` listens (default websocket)"
    )
    top.add_argument("--verbose", action="store_true", help="say on stderr when a watch reconnects")
    commands = top.add_subparsers(dest="command", required=True)
    current = commands.add_parser("current", help="current weather at a position")
    forecast = commands.add_parser("forecast", help="daily forecast (and hours with --hours)")
    watch = commands.add_parser("watch", help="current weather, then one line per update until Ctrl-C")
    for command in (current, forecast, watch):
        command.add_argument("--lat", type=float, required=True, help="latitude, -90..90")
        command.add_argument("--lon", type=float, required=True, help="longitude, -180..180")
        command.add_argument("--units", type=str.upper, choices=[u.value for u in Units], default=Units.METRIC.value)
    forecast.add_argument("--days", type=int, default=7, help="1..16 (default 7)")
    forecast.add_argument("--hours", type=int, help="also print this many hours from local midnight today")
    return top


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.verbose:
        logging.basicConfig(level=logging.INFO, format="weathernote-client: %(message)s")
    try:
        return asyncio.run(run(arguments))
    except KeyboardInterrupt:
        return INTERRUPTED


async def run(arguments: argparse.Namespace) -> int:
    units = Units(arguments.units)
    try:
        async with WeatherNoteClient(
            arguments.url, client_id=arguments.client_id, transport=arguments.transport
        ) as client:
            if arguments.command == "current":
                weather = await client.current(arguments.lat, arguments.lon, units)
                emit(as_json(weather) if arguments.json else current_line(weather))
            elif arguments.command == "forecast":
                hours = 24 if arguments.hours is None else arguments.hours
                forecast = await client.forecast(arguments.lat, arguments.lon, arguments.days, hours, units)
                emit(as_json(forecast) if arguments.json else forecast_text(forecast, arguments.hours is not None))
            else:
                async for update in client.watch_current(arguments.lat, arguments.lon, units):
                    emit(as_json(update) if arguments.json else current_line(update))
    except WeatherNoteClientError as exc:
        print(f"weathernote-client: {exc.message}", file=sys.stderr)
        return 1
    return 0


def emit(text: str) -> None:
    print(text, flush=True)


def as_json(result: CurrentWeather | Forecast) -> str:
    return json.dumps(dataclasses.asdict(result), default=_iso, ensure_ascii=False, separators=(",", ":"))


def _iso(value: object) -> str:
    if isinstance(value, dt.date):  # and datetime
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _value(number: float | None, unit: str = "") -> str:
    return "–" if number is None else f"{number:g}{unit}"


def current_line(weather: CurrentWeather) -> str:
    """One line: where, when, what it is like, and how the server answered."""
    labels = _UNIT_LABELS[weather.units]
    answered = "stale" if weather.stale else "cached" if weather.cached else "fresh"
    return (
        f"{weather.cell.lat:g},{weather.cell.lon:g} {weather.time.isoformat(timespec='minutes')} "
        f"{_value(weather.temperature, labels['temperature'])} "
        f"(feels {_value(weather.apparent_temperature, labels['temperature'])}), {weather.condition.description}, "
        f"humidity {_value(weather.humidity, '%')}, "
        f"wind {_value(weather.wind_speed, ' ' + labels['speed'])} from {_value(weather.wind_direction, '°')}, "
        f"precipitation {_value(weather.precipitation, ' ' + labels['precipitation'])} "
        f"[{answered}, fetched {weather.fetched_at.isoformat(timespec='seconds')}]"
    )


def forecast_text(forecast: Forecast, with_hours: bool) -> str:
    """A line per day (and per hour with `with_hours`)."""
    labels = _UNIT_LABELS[forecast.units]
    lines = [f"{forecast.cell.lat:g},{forecast.cell.lon:g} ({forecast.timezone or 'UTC'}), {forecast.days} days"]
    for day in forecast.daily:
        temperatures = f"{_value(day.temperature_min)}..{_value(day.temperature_max, labels['temperature'])}"
        lines.append(
            f"{day.date.isoformat()} {temperatures} {day.condition.description}, "
            f"precipitation {_value(day.precipitation_sum, ' ' + labels['precipitation'])} "
            f"({_value(day.precipitation_probability_max, '%')}), "
            f"wind up to {_value(day.wind_speed_max, ' ' + labels['speed'])}, UV {_value(day.uv_index_max)}"
        )
    if with_hours:
        for hour in forecast.hourly:
            lines.append(
                f"{hour.time.isoformat(timespec='minutes')} {_value(hour.temperature, labels['temperature'])} "
                f"precipitation {_value(hour.precipitation_probability, '%')}, "
                f"wind {_value(hour.wind_speed, ' ' + labels['speed'])}"
            )
    return "\n".join(lines)
