// Benchmark peer: GraphQL Yoga on Node, answering WeatherNote's `current(lat, lon)` from the same Redis.
//
// A query rounds the point to its 0.1° cell exactly like WeatherNote (weathernote/cells.py), reads
// the cell's entry with one GET of `weather:lat:<lat>:lon:<lon>` (single-server spelling), parses
// the JSON after the `wn2 <fresh_until> <fetched_at> <next_update>` header line and resolves the
// CurrentWeather fields from it. No response cache, no upstream: a cell nobody cached answers
// UPSTREAM_UNAVAILABLE. `forecast(lat, lon, days, units)` likewise reads the cell's daily and hourly
// entries (`forecast:lat:<lat>:lon:<lon>:days:16` and `...:hourly`) with one MGET, so that the
// operations of clients/operations (CurrentWeather, Forecast) run here as they do on WeatherNote,
// `units` and `condition` included. Automatic persisted queries (the APQ GET form) in memory, as
// @graphql-yoga/plugin-apq keeps them (that package's peer range excludes this Yoga's
// @graphql-tools/utils, so the same protocol is a plugin here: a hash the server has not seen answers
// PERSISTED_QUERY_NOT_FOUND; a query sent with its hash, checked, is kept).
//
// `weatherUpdates(lat, lon)` over graphql-ws (graphql-transport-ws) on the same path: the cell's
// entry at once, then every entry published on `updates:<entry key>` (the message is the entry
// itself), decoded once per message for all of the cell's subscribers, latest wins per subscriber.
// One Redis subscriber connection: SUBSCRIBE for a cell's first subscriber, UNSUBSCRIBE after its last.
//
// With --response-cache, Yoga's own response cache (@graphql-yoga/plugin-response-cache, in memory,
// one global session, --response-cache-ttl-ms, 60 s by default) answers a query it answered before
// without executing it: what a Yoga deployment turns on when its answers are cacheable.
//
// Usage: node server.mjs [--port 4000] [--host 127.0.0.1] [--redis-url redis://127.0.0.1:6379/0]
//                        [--response-cache] [--response-cache-ttl-ms 60000]
// (or PORT, HOST, BENCH_REDIS_URL). GET /health answers once the server listens.
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { createGraphQLError, createSchema, createYoga, Repeater, SlidingBuffer } from "graphql-yoga";
import { useResponseCache } from "@graphql-yoga/plugin-response-cache";
import { useServer } from "graphql-ws/use/ws";
import { createHash } from "node:crypto";
import { Redis } from "ioredis";
import { WebSocketServer } from "ws";
import { cellOf } from "./cells.mjs";

const { values: options } = parseArgs({
  options: {
    port: { type: "string", default: process.env.PORT ?? "4000" },
    host: { type: "string", default: process.env.HOST ?? "127.0.0.1" },
    "redis-url": { type: "string", default: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379/0" },
    "response-cache": { type: "boolean", default: false },
    "response-cache-ttl-ms": { type: "string", default: "60000" },
  },
});

const typeDefs = /* GraphQL */ `
  scalar DateTime
  scalar Date

  enum Units {
    METRIC
    IMPERIAL
  }

  type Condition {
    code: Int
    description: String!
  }

  type Cell {
    lat: Float!
    lon: Float!
  }

  type CurrentWeather {
    cell: Cell!
    time: DateTime!
    temperature: Float
    apparentTemperature: Float
    humidity: Float
    precipitation: Float
    weatherCode: Int
    cloudCover: Float
    pressure: Float
    windSpeed: Float
    windDirection: Float
    windGusts: Float
    isDay: Boolean
    condition: Condition!
    units: Units!
    cached: Boolean!
    stale: Boolean!
    fetchedAt: DateTime!
  }

  type DailyForecast {
    date: Date!
    temperatureMax: Float
    temperatureMin: Float
    precipitationSum: Float
    precipitationProbabilityMax: Float
    weatherCode: Int
    condition: Condition!
    sunrise: DateTime
    sunset: DateTime
    windSpeedMax: Float
    uvIndexMax: Float
  }

  type HourlyForecast {
    time: DateTime!
    temperature: Float
    precipitationProbability: Float
    weatherCode: Int
    windSpeed: Float
  }

  type Forecast {
    cell: Cell!
    timezone: String
    days: Int!
    units: Units!
    daily: [DailyForecast!]!
    cached: Boolean!
    stale: Boolean!
    fetchedAt: DateTime
    nextUpdateAt: DateTime
    hourly(hours: Int = 24): [HourlyForecast!]!
  }

  type Query {
    current(lat: Float!, lon: Float!, units: Units = METRIC): CurrentWeather!
    forecast(lat: Float!, lon: Float!, days: Int = 7, units: Units = METRIC): Forecast!
  }

  type Subscription {
    weatherUpdates(lat: Float!, lon: Float!, units: Units = METRIC): CurrentWeather!
  }
`;

// --- entries: `wn2 <fresh_until_ms> <fetched_at_ms> <next_update_ms>\n<JSON>` ----------------------

// weathernote/model/conditions.py
const WMO = {
  0: "Clear sky", 1: "Mainly clear", 2: "Partly cloudy", 3: "Overcast", 45: "Fog", 48: "Depositing rime fog",
  51: "Light drizzle", 53: "Moderate drizzle", 55: "Dense drizzle", 56: "Light freezing drizzle",
  57: "Dense freezing drizzle", 61: "Slight rain", 63: "Moderate rain", 65: "Heavy rain",
  66: "Light freezing rain", 67: "Heavy freezing rain", 71: "Slight snowfall", 73: "Moderate snowfall",
  75: "Heavy snowfall", 77: "Snow grains", 80: "Slight rain showers", 81: "Moderate rain showers",
  82: "Violent rain showers", 85: "Slight snow showers", 86: "Heavy snow showers", 95: "Thunderstorm",
  96: "Thunderstorm with slight hail", 99: "Thunderstorm with heavy hail",
};
const condition = (code) => ({ code: code ?? null, description: (code != null && WMO[code]) || "Unknown" });

// weathernote/model/units.py: entries are metric, converted on the way out
const round = (x, digits) => Math.round(x * 10 ** digits) / 10 ** digits;
const temperature = (c, units) => (c == null || units !== "IMPERIAL" ? c : round((c * 9) / 5 + 32, 1));
const speed = (kmh, units) => (kmh == null || units !== "IMPERIAL" ? kmh : round(kmh / 1.609344, 1));
const precipitation = (mm, units) => (mm == null || units !== "IMPERIAL" ? mm : round(mm / 25.4, 3));

// a local time as Python's isoformat() prints it (the entries omit zero seconds)
const local = (text) => (text == null ? null : text.replace(/^(\d{4}-\d\d-\d\dT\d\d:\d\d)(?=[+-]|Z|$)/, "$1:00"));
// a UTC moment as Python's isoformat() prints it: microseconds, unless they are zero
const utc = (ms) => new Date(ms).toISOString().replace(ms % 1000 === 0 ? ".000Z" : "Z", ms % 1000 === 0 ? "+00:00" : "000+00:00");

// `wn2 <fresh_until_ms> <fetched_at_ms> <next_update_ms>\n<JSON>`: the header and the parsed JSON, or null
function parse(raw) {
  const newline = raw.indexOf("\n");
  const header = raw.slice(0, newline).split(" ");
  if (newline < 0 || header.length !== 4 || header[0] !== "wn2") return null; // another format: a miss
  return { fetchedAtMs: Number(header[2]), nextUpdateMs: Number(header[3]), m: JSON.parse(raw.slice(newline + 1)) };
}

function decode(raw, cell, units = "METRIC") {
  const entry = parse(raw);
  if (entry === null) return null;
  const { fetchedAtMs, m } = entry;
  return {
    version: fetchedAtMs,
    cell: { lat: cell.lat, lon: cell.lon },
    time: local(m.time),
    temperature: temperature(m.temperature, units),
    apparentTemperature: temperature(m.apparent_temperature, units),
    humidity: m.humidity,
    precipitation: precipitation(m.precipitation, units),
    weatherCode: m.weather_code,
    condition: condition(m.weather_code),
    cloudCover: m.cloud_cover,
    pressure: m.pressure,
    windSpeed: speed(m.wind_speed, units),
    windDirection: m.wind_direction,
    windGusts: speed(m.wind_gusts, units),
    isDay: m.is_day,
    units,
    cached: true,
    stale: false,
    fetchedAt: utc(fetchedAtMs),
  };
}

const FORECAST_DAYS = 16;

function badUserInput(message) {
  return createGraphQLError(message, { extensions: { code: "BAD_USER_INPUT" } });
}

function forecastOf(cell, days, units, dailyRaw, hourlyRaw) {
  const daily = dailyRaw === null ? null : parse(dailyRaw);
  const hourly = hourlyRaw === null ? null : parse(hourlyRaw);
  if (daily === null || hourly === null) throw notCached();
  const d = daily.m;
  const h = hourly.m;
  const dailyRows = [];
  for (let i = 0; i < Math.min(days, d.date.length); i++) {
    dailyRows.push({
      date: d.date[i],
      temperatureMax: temperature(d.temperature_max[i], units),
      temperatureMin: temperature(d.temperature_min[i], units),
      precipitationSum: precipitation(d.precipitation_sum[i], units),
      precipitationProbabilityMax: d.precipitation_probability_max[i],
      weatherCode: d.weather_code[i],
      condition: condition(d.weather_code[i]),
      sunrise: local(d.sunrise[i]),
      sunset: local(d.sunset[i]),
      windSpeedMax: speed(d.wind_speed_max[i], units),
      uvIndexMax: d.uv_index_max[i],
    });
  }
  const hourlyRows = [];
  for (let i = 0; i < Math.min(days * 24, h.time.length); i++) {
    hourlyRows.push({
      time: local(h.time[i]),
      temperature: temperature(h.temperature[i], units),
      precipitationProbability: h.precipitation_probability[i],
      weatherCode: h.weather_code[i],
      windSpeed: speed(h.wind_speed[i], units),
    });
  }
  return {
    cell: { lat: cell.lat, lon: cell.lon },
    timezone: d.timezone,
    days,
    units,
    daily: dailyRows,
    cached: true,
    stale: false,
    fetchedAt: utc(Math.min(daily.fetchedAtMs, hourly.fetchedAtMs)),
    nextUpdateAt: utc(Math.min(daily.nextUpdateMs, hourly.nextUpdateMs)),
    hourlyRows,
  };
}

function notCached() {
  return createGraphQLError("No cached weather for this cell (this peer has no upstream).", {
    extensions: { code: "UPSTREAM_UNAVAILABLE" },
  });
}

// --- Redis: one connection for commands, one for pub/sub ---------------------------------------------

const redis = new Redis(options["redis-url"]);
const subscriber = redis.duplicate();
const channels = new Map(); // channel -> { cell, listeners: Set, subscribed: Promise }

subscriber.on("message", (channel, message) => {
  const entry = channels.get(channel);
  if (entry === undefined) return;
  let value;
  try {
    value = decode(message, entry.cell); // once per message, shared by every subscriber
  } catch {
    return; // unreadable JSON: not an entry
  }
  if (value === null) return;
  for (const listener of entry.listeners) listener(value);
});

async function attach(cell, listener) {
  const channel = `updates:${cell.key}`;
  let entry = channels.get(channel);
  if (entry === undefined) {
    entry = { cell, listeners: new Set(), subscribed: subscriber.subscribe(channel) };
    channels.set(channel, entry);
  }
  entry.listeners.add(listener);
  await entry.subscribed;
  return () => {
    entry.listeners.delete(listener);
    if (entry.listeners.size === 0 && channels.get(channel) === entry) {
      channels.delete(channel);
      subscriber.unsubscribe(channel).catch(() => {});
    }
  };
}

// --- schema --------------------------------------------------------------------------------------

const resolvers = {
  Query: {
    async current(_, { lat, lon, units }) {
      const cell = cellOf(lat, lon);
      const raw = await redis.get(cell.key);
      const value = raw === null ? null : decode(raw, cell, units ?? "METRIC");
      if (value === null) throw notCached();
      return value;
    },
    async forecast(_, { lat, lon, days, units }) {
      const cell = cellOf(lat, lon);
      days = days ?? 7;
      if (!(days >= 1 && days <= FORECAST_DAYS)) {
        throw badUserInput(`days must be between 1 and ${FORECAST_DAYS}, got ${days}`);
      }
      const daily = cell.key.replace(/^weather:/, "forecast:") + `:days:${FORECAST_DAYS}`;
      const [dailyRaw, hourlyRaw] = await redis.mget(daily, `${daily}:hourly`);
      return forecastOf(cell, days, units ?? "METRIC", dailyRaw, hourlyRaw);
    },
  },
  Forecast: {
    hourly(forecast, { hours }) {
      hours = hours ?? 24;
      if (!(hours >= 1 && hours <= forecast.days * 24)) {
        throw badUserInput(`hours must be between 1 and ${forecast.days * 24}`);
      }
      return forecast.hourlyRows.slice(0, hours);
    },
  },
  Subscription: {
    weatherUpdates: {
      subscribe(_, { lat, lon, units }) {
        const cell = cellOf(lat, lon);
        return new Repeater(async (push, stop) => {
          let latest = -1; // the current value and an announcement can cross: never go back in time
          const offer = (value) => {
            if (value.version > latest) {
              latest = value.version;
              push(value);
            }
          };
          const detach = await attach(cell, offer); // subscribed before the read: nothing falls between
          try {
            const raw = await redis.get(cell.key);
            const value = raw === null ? null : decode(raw, cell, units ?? "METRIC");
            if (value !== null) offer(value);
            await stop;
          } finally {
            detach();
          }
        }, new SlidingBuffer(1));
      },
      resolve: (value) => value,
    },
  },
};

// Automatic persisted queries, in memory (what @graphql-yoga/plugin-apq does with its default store)
const persisted = new Map();
function useAPQ() {
  return {
    onParams({ params, setParams }) {
      const hash = params.extensions?.persistedQuery?.sha256Hash;
      if (typeof hash !== "string") return;
      if (params.query == null) {
        const query = persisted.get(hash);
        if (query === undefined) {
          throw createGraphQLError("PersistedQueryNotFound", { extensions: { code: "PERSISTED_QUERY_NOT_FOUND" } });
        }
        setParams({ ...params, query });
      } else {
        if (createHash("sha256").update(params.query).digest("hex") !== hash) {
          throw createGraphQLError("PersistedQueryMismatch", { extensions: { code: "PERSISTED_QUERY_MISMATCH" } });
        }
        persisted.set(hash, params.query);
      }
    },
  };
}

const yoga = createYoga({
  schema: createSchema({ typeDefs, resolvers }),
  graphqlEndpoint: "/graphql",
  graphiql: false,
  landingPage: false,
  logging: "warn",
  plugins: [
    useAPQ(),
    ...(options["response-cache"]
      ? [useResponseCache({ session: () => null, ttl: Number(options["response-cache-ttl-ms"]) })]
      : []),
  ],
});

const server = createServer(yoga);

// graphql-ws over ws, run through Yoga's envelop (Yoga's documented recipe)
const wsServer = new WebSocketServer({ server, path: yoga.graphqlEndpoint });
useServer(
  {
    execute: (args) => args.rootValue.execute(args),
    subscribe: (args) => args.rootValue.subscribe(args),
    onSubscribe: async (ctx, _id, params) => {
      const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
        ...ctx,
        req: ctx.extra.request,
        socket: ctx.extra.socket,
        params,
      });
      const args = {
        schema,
        operationName: params.operationName,
        document: parse(params.query),
        variableValues: params.variables,
        contextValue: await contextFactory(),
        rootValue: { execute, subscribe },
      };
      const errors = validate(args.schema, args.document);
      if (errors.length) return errors;
      return args;
    },
  },
  wsServer,
);

server.listen(Number(options.port), options.host, () => {
  console.log(`graphql-yoga peer on http://${options.host}:${options.port}/graphql (node ${process.version})`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const socket of wsServer.clients) socket.terminate();
    server.close();
    server.closeAllConnections();
    redis.disconnect();
    subscriber.disconnect();
    process.exit(0);
  });
}
