#!/usr/bin/env node
/**
 * Prints a place's weather now and at every refresh, until Ctrl-C.
 *
 *   node dist/watch.js --lat 48.85 --lon 2.35 [--url http://127.0.0.1:8000/graphql]
 *   npm run watch -- --lat 48.85 --lon 2.35 --forecast --days 3
 */

import { parseArgs } from "node:util";

import { WeatherNoteClient, type CurrentWeather, type Forecast, type Units } from "./client.js";
import { WeatherNoteError } from "./errors.js";

const USAGE = `usage: watch --lat <degrees> --lon <degrees> [options]

  --url <url>        GraphQL endpoint (default $WEATHERNOTE_URL or http://127.0.0.1:8000/graphql)
  --units <units>    METRIC (default) or IMPERIAL
  --forecast         watch the forecast instead of the current weather
  --days <n>         forecast days, 1..16 (default 7)
  --hours <n>        forecast hours (default 24)
  --json             one JSON object per update instead of a line of text
  --client-id <id>   sent as x-client-id
  --transport <t>    websocket (default) or sse (Server-Sent Events, where WebSockets are dropped)
`;

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}`);
  process.exit(2);
}

function number(name: string, text: string | undefined, required: boolean): number | undefined {
  if (text === undefined) return required ? fail(`--${name} is required`) : undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : fail(`--${name}: not a number: ${text}`);
}

function describeCurrent(weather: CurrentWeather): string {
  const temperatureUnit = weather.units === "IMPERIAL" ? "°F" : "°C";
  const speedUnit = weather.units === "IMPERIAL" ? "mph" : "km/h";
  return [
    weather.time,
    `(${weather.cell.lat}, ${weather.cell.lon})`,
    `${weather.temperature ?? "?"} ${temperatureUnit}`,
    weather.condition.description,
    `wind ${weather.windSpeed ?? "?"} ${speedUnit}`,
    `fetched ${weather.fetchedAt}${weather.stale ? " (stale)" : ""}`,
  ].join("  ");
}

function describeForecast(forecast: Forecast): string {
  const days = forecast.daily
    .map((day) => `${day.date} ${day.temperatureMin ?? "?"}..${day.temperatureMax ?? "?"} ${day.condition.description}`)
    .join("; ");
  return `(${forecast.cell.lat}, ${forecast.cell.lon}) ${forecast.timezone ?? ""}  ${days}  fetched ${forecast.fetchedAt ?? "?"}${forecast.stale ? " (stale)" : ""}`;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        lat: { type: "string" },
        lon: { type: "string" },
        url: { type: "string" },
        units: { type: "string" },
        forecast: { type: "boolean", default: false },
        days: { type: "string" },
        hours: { type: "string" },
        json: { type: "boolean", default: false },
        "client-id": { type: "string" },
        transport: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const lat = number("lat", parsed.lat, true) as number;
  const lon = number("lon", parsed.lon, true) as number;
  const days = number("days", parsed.days, false);
  const hours = number("hours", parsed.hours, false);
  const units = parsed.units?.toUpperCase();
  if (units !== undefined && units !== "METRIC" && units !== "IMPERIAL") fail(`--units: METRIC or IMPERIAL, not ${parsed.units}`);
  const url = parsed.url ?? process.env["WEATHERNOTE_URL"] ?? "http://127.0.0.1:8000/graphql";
  const clientId = parsed["client-id"];
  const transport = parsed.transport ?? "websocket";
  if (transport !== "websocket" && transport !== "sse") fail(`--transport: websocket or sse, not ${transport}`);

  const client = new WeatherNoteClient({
    url: /\/graphql\/?$/.test(url) ? url : `${url.replace(/\/$/, "")}/graphql`,
    ...(clientId ? { clientId } : {}),
    transport,
    on: {
      connected: (_socket, _payload, wasRetry) => {
        if (wasRetry) process.stderr.write("reconnected\n");
      },
    },
  });
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const options = { signal: stop.signal, ...(units ? { units: units as Units } : {}) };
  try {
    if (parsed.forecast) {
      const watch = client.watchForecast(lat, lon, { ...options, ...(days ? { days } : {}), ...(hours ? { hours } : {}) });
      for await (const forecast of watch) {
        process.stdout.write(`${parsed.json ? JSON.stringify(forecast) : describeForecast(forecast)}\n`);
      }
    } else {
      for await (const weather of client.watchCurrent(lat, lon, options)) {
        process.stdout.write(`${parsed.json ? JSON.stringify(weather) : describeCurrent(weather)}\n`);
      }
    }
  } catch (error) {
    if (stop.signal.aborted) return 0;
    const code = error instanceof WeatherNoteError ? `${error.code}: ` : "";
    process.stderr.write(`watch: ${code}${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  } finally {
    await client.dispose();
  }
  if (stop.signal.aborted) return 0;
  process.stderr.write("watch: the server ended the subscription\n");
  return 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`watch: ${String(error)}\n`);
    process.exitCode = 1;
  },
);
