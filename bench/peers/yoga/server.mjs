// Benchmark peer: GraphQL Yoga on Node, answering WeatherNote's `current(lat, lon)` from the same Redis.
//
// A query rounds the point to its 0.1° cell exactly like WeatherNote (weathernote/cells.py), reads
// the cell's entry with one GET of `weather:lat:<lat>:lon:<lon>` (single-server spelling), parses
// the JSON after the `wn2 <fresh_until> <fetched_at> <next_update>` header line and resolves the
// CurrentWeather fields from it. No response cache, no upstream: a cell nobody cached answers
// UPSTREAM_UNAVAILABLE. Metric units only (no `units` argument, no `condition`).
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
    cached: Boolean!
    stale: Boolean!
    fetchedAt: DateTime!
  }

  type Query {
    current(lat: Float!, lon: Float!): CurrentWeather!
  }

  type Subscription {
    weatherUpdates(lat: Float!, lon: Float!): CurrentWeather!
  }
`;

// --- entries: `wn2 <fresh_until_ms> <fetched_at_ms> <next_update_ms>\n<JSON>` ----------------------

function decode(raw, cell) {
  const newline = raw.indexOf("\n");
  const header = raw.slice(0, newline).split(" ");
  if (newline < 0 || header.length !== 4 || header[0] !== "wn2") return null; // another format: a miss
  const fetchedAtMs = Number(header[2]);
  const m = JSON.parse(raw.slice(newline + 1));
  return {
    version: fetchedAtMs,
    cell: { lat: cell.lat, lon: cell.lon },
    time: m.time,
    temperature: m.temperature,
    apparentTemperature: m.apparent_temperature,
    humidity: m.humidity,
    precipitation: m.precipitation,
    weatherCode: m.weather_code,
    cloudCover: m.cloud_cover,
    pressure: m.pressure,
    windSpeed: m.wind_speed,
    windDirection: m.wind_direction,
    windGusts: m.wind_gusts,
    isDay: m.is_day,
    cached: true,
    stale: false,
    fetchedAt: new Date(fetchedAtMs).toISOString(),
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
    async current(_, { lat, lon }) {
      const cell = cellOf(lat, lon);
      const raw = await redis.get(cell.key);
      const value = raw === null ? null : decode(raw, cell);
      if (value === null) throw notCached();
      return value;
    },
  },
  Subscription: {
    weatherUpdates: {
      subscribe(_, { lat, lon }) {
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
            const value = raw === null ? null : decode(raw, cell);
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

const yoga = createYoga({
  schema: createSchema({ typeDefs, resolvers }),
  graphqlEndpoint: "/graphql",
  graphiql: false,
  landingPage: false,
  logging: "warn",
  plugins: options["response-cache"]
    ? [useResponseCache({ session: () => null, ttl: Number(options["response-cache-ttl-ms"]) })]
    : [],
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
