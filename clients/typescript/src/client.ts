/**
 * The WeatherNote client: queries over `fetch` with Automatic Persisted Queries, live
 * updates over graphql-ws, or over Server-Sent Events (graphql-sse) where WebSockets are
 * dropped. Runs in browsers and in Node ≥ 20 (where `ws` stands in for the WebSocket that
 * Node 20 lacks).
 */

import { createClient as createSseClient, type Client as SseClient, type ClientOptions as SseClientOptions } from "graphql-sse";
import type { FormattedExecutionResult } from "graphql-ws";
import { createClient, type Client, type ClientOptions, type EventListener, type Event } from "graphql-ws/client";

import {
  codeOf,
  errorFromGraphQL,
  NetworkError,
  RateLimitedError,
  WeatherNoteError,
  type GraphQLErrorPayload,
} from "./errors.js";
import { LiveUpdates, type Subscriber } from "./live.js";
import { defaultRetryWait, hintedWait, pacedWebSocket, StartHint, type SocketClass } from "./pacing.js";
import {
  CurrentWeatherDocument,
  ForecastDocument,
  ForecastUpdatesDocument,
  WeatherUpdatesDocument,
  type CurrentWeatherQuery,
  type ForecastQuery,
  type ForecastUpdatesSubscription,
  type TypedDocumentString,
  type WeatherUpdatesSubscription,
} from "./generated/operations.js";
import type { Units } from "./generated/schema.js";

/** Conditions now at a cell, as the CurrentWeather operation selects them. */
export type CurrentWeather = CurrentWeatherQuery["current"];
/** The forecast at a cell, daily and hourly, as the Forecast operation selects it. */
export type Forecast = ForecastQuery["forecast"];
export type { Units };

// A live update is the very same shape as the query's answer (checked here, at compile time).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const _sameCurrent: Same<CurrentWeather, WeatherUpdatesSubscription["weatherUpdates"]> = true;
const _sameForecast: Same<Forecast, ForecastUpdatesSubscription["forecastUpdates"]> = true;
void _sameCurrent;
void _sameForecast;

export interface WeatherNoteClientOptions {
  /** The GraphQL endpoint, e.g. `http://127.0.0.1:8000/graphql`. */
  url: string;
  /** The WebSocket endpoint; by default `url` with `ws:`/`wss:`. */
  wsUrl?: string;
  /** Sent as `x-client-id` (the app's device id), which the server's rate limits count by.
   * Over WebSocket only where headers can be set (Node); a browser's socket counts by address. */
  clientId?: string;
  /** Extra HTTP headers for queries. */
  headers?: Record<string, string>;
  /** Automatic Persisted Queries: the hash first by GET (cacheable) or POST; `false` sends the text. Default "GET". */
  persistedQueries?: "GET" | "POST" | false;
  /** Deadline of one HTTP request, in ms. Default 15000. */
  timeoutMs?: number;
  /** The fetch to use; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** How watches listen: "websocket" (graphql-ws, default) or "sse" (graphql-sse, one event stream per watch on
   * `url`: for networks and proxies that drop WebSockets; `x-client-id` and `headers` are sent everywhere). */
  transport?: "websocket" | "sse";
  /** How many times graphql-ws (or graphql-sse) reconnects in a row before a watch fails. Default 8. */
  retryAttempts?: number;
  /** Waits before reconnect attempt `retries`; default graphql-ws's randomised exponential backoff (1 s, 2 s, 4 s, … + 0.3–3 s). A start the server paced waits its hint instead. */
  retryWait?: (retries: number) => Promise<void>;
  /** A WebSocket class; default the global one, else the `ws` package (Node 20). */
  webSocketImpl?: unknown;
  /** graphql-ws's event listeners (connecting, connected, closed, message, …), e.g. to show a connection state. */
  on?: Partial<{ [E in Event]: EventListener<E> }>;
}

export interface RequestOptions {
  /** Cancels the request. */
  signal?: AbortSignal;
}

export interface ForecastOptions extends RequestOptions {
  /** Local days, 1..16 (server default 7). */
  days?: number;
  /** Hourly steps from local midnight today, 1..24×days (server default 24). */
  hours?: number;
  units?: Units;
}

export interface WatchOptions {
  units?: Units;
  /** Aborting it ends the watch, like `close()`. */
  signal?: AbortSignal;
}

export interface WatchForecastOptions extends WatchOptions {
  days?: number;
  hours?: number;
}

const ACCEPT = "application/graphql-response+json, application/json;q=0.9";

interface Operation {
  readonly text: string;
  readonly name: string;
  hash?: Promise<string>;
}

interface GraphQLResponse {
  data?: Record<string, unknown> | null;
  errors?: GraphQLErrorPayload[];
}

/** sha256 of the text, hex: what `extensions.persistedQuery.sha256Hash` carries. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The body sent for a generated document: the operation exactly as clients/operations' manifest has it. */
export function operationText(document: AnyDocument): string {
  return document.toString().trim();
}

function operationName(text: string): string {
  const match = /^(?:query|subscription|mutation)\s+(\w+)/.exec(text);
  if (!match?.[1]) throw new Error(`an operation without a name: ${text.slice(0, 40)}`);
  return match[1];
}

/** `values` without its undefined entries (the server's defaults apply to what is left out). */
function defined<T extends object>(values: T): T {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined)) as T;
}

/** A generated document, whatever its types. */
type AnyDocument = { toString(): string };

export class WeatherNoteClient {
  readonly url: string;
  readonly wsUrl: string;
  private readonly options: WeatherNoteClientOptions;
  private readonly operations = new Map<AnyDocument, Operation>();
  private persisted: "GET" | "POST" | false;
  private socket: Promise<Client> | undefined;
  private streams: SseClient | undefined;

  constructor(options: WeatherNoteClientOptions) {
    this.options = options;
    this.url = options.url;
    this.wsUrl = options.wsUrl ?? options.url.replace(/^http(s?):/, "ws$1:");
    this.persisted = options.persistedQueries ?? "GET";
  }

  /** Current weather at a point (the server rounds it to its cell). */
  async current(lat: number, lon: number, units?: Units, options: RequestOptions = {}): Promise<CurrentWeather> {
    const data = await this.request(CurrentWeatherDocument, defined({ lat, lon, units }), options);
    return data.current;
  }

  /** The forecast at a point: `days` local days and the first `hours` hours. */
  async forecast(lat: number, lon: number, options: ForecastOptions = {}): Promise<Forecast> {
    const { days, hours, units } = options;
    const data = await this.request(ForecastDocument, defined({ lat, lon, days, hours, units }), options);
    return data.forecast;
  }

  /** The cell's current weather now, then at each refresh, each value once, across reconnects. */
  watchCurrent(lat: number, lon: number, options: WatchOptions = {}): LiveUpdates<CurrentWeather> {
    const variables = defined({ lat, lon, units: options.units });
    return this.watch<CurrentWeather, typeof variables>(WeatherUpdatesDocument, variables, "weatherUpdates", options.signal);
  }

  /** The cell's forecast now, then at each refresh, each value once, across reconnects. */
  watchForecast(lat: number, lon: number, options: WatchForecastOptions = {}): LiveUpdates<Forecast> {
    const { days, hours, units } = options;
    const variables = defined({ lat, lon, days, hours, units });
    return this.watch<Forecast, typeof variables>(ForecastUpdatesDocument, variables, "forecastUpdates", options.signal);
  }

  /** Runs any generated query document (APQ first, then the text if the server does not know it). */
  async request<TResult, TVariables>(
    document: TypedDocumentString<TResult, TVariables>,
    variables: TVariables,
    options: RequestOptions = {},
  ): Promise<TResult> {
    const operation = this.operation(document);
    const body: Record<string, unknown> = { operationName: operation.name, variables };
    if (this.persisted) {
      operation.hash ??= sha256Hex(operation.text);
      const extensions = { persistedQuery: { version: 1, sha256Hash: await operation.hash } };
      const byHash = await this.send(this.persisted, { ...body, extensions }, options);
      const code = byHash.errors?.[0] && codeOf(byHash.errors[0]);
      if (code === "PERSISTED_QUERY_NOT_SUPPORTED") {
        this.persisted = false; // a server without APQ: send the text from now on
      } else if (code !== "PERSISTED_QUERY_NOT_FOUND") {
        return this.unwrap(byHash) as TResult;
      } else {
        // unknown hash: send the text with it, which also registers it for next time
        return this.unwrap(await this.send("POST", { ...body, query: operation.text, extensions }, options)) as TResult;
      }
    }
    return this.unwrap(await this.send("POST", { ...body, query: operation.text }, options)) as TResult;
  }

  /** Closes the WebSocket and the event streams, if any (watches still open end). */
  async dispose(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    this.streams?.dispose();
    this.streams = undefined;
    if (socket) await (await socket.catch(() => undefined))?.dispose();
  }

  private operation(document: AnyDocument): Operation {
    let operation = this.operations.get(document);
    if (!operation) {
      const text = operationText(document);
      operation = { text, name: operationName(text) };
      this.operations.set(document, operation);
    }
    return operation;
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    return {
      accept: ACCEPT,
      ...(this.options.clientId ? { "x-client-id": this.options.clientId } : {}),
      ...this.options.headers,
      ...extra,
    };
  }

  private async send(
    method: "GET" | "POST",
    body: Record<string, unknown>,
    options: RequestOptions,
  ): Promise<GraphQLResponse & { status: number; retryAfter: string | null }> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs ?? 15_000);
    const signal = options.signal ? either(options.signal, timeout) : timeout;
    const doFetch = this.options.fetch ?? globalThis.fetch;
    let response: Response;
    try {
      if (method === "GET") {
        const url = new URL(this.url);
        for (const [key, value] of Object.entries(body)) {
          url.searchParams.set(key, typeof value === "string" ? value : JSON.stringify(value));
        }
        response = await doFetch(url, { method, headers: this.headers({}), signal });
      } else {
        response = await doFetch(this.url, {
          method,
          headers: this.headers({ "content-type": "application/json" }),
          body: JSON.stringify(body),
          signal,
        });
      }
    } catch (thrown) {
      if (options.signal?.aborted) throw thrown; // the caller's own abort stays an AbortError
      const reason = timeout.aborted ? `no answer within ${this.options.timeoutMs ?? 15_000} ms` : String(thrown);
      throw new NetworkError(`${method} ${this.url}: ${reason}`, { cause: thrown });
    }
    const retryAfter = response.headers.get("retry-after");
    const type = response.headers.get("content-type") ?? "";
    if (!/json/i.test(type)) {
      await response.body?.cancel();
      if (response.status === 429) {
        throw new RateLimitedError("Too many requests", Number(retryAfter) || 1, { status: 429 });
      }
      throw new NetworkError(`${method} ${this.url}: HTTP ${response.status} (${type || "no content type"})`, {
        status: response.status,
      });
    }
    let parsed: unknown;
    try {
      parsed = await response.json();
    } catch (thrown) {
      throw new NetworkError(`${method} ${this.url}: HTTP ${response.status}, not JSON`, {
        status: response.status,
        cause: thrown,
      });
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new NetworkError(`${method} ${this.url}: HTTP ${response.status}, not a GraphQL response`, {
        status: response.status,
      });
    }
    return { ...(parsed as GraphQLResponse), status: response.status, retryAfter };
  }

  private unwrap(response: GraphQLResponse & { status: number; retryAfter: string | null }): Record<string, unknown> {
    if (response.errors?.length) throw errorFromGraphQL(response.errors, response.status, response.retryAfter);
    if (response.data == null) {
      throw new WeatherNoteError(`HTTP ${response.status}: a response without data`, "INTERNAL_SERVER_ERROR", {
        status: response.status,
      });
    }
    return response.data;
  }

  private watch<T extends { readonly fetchedAt?: string | null }, TVariables extends object>(
    document: TypedDocumentString<unknown, TVariables>,
    variables: TVariables,
    field: string,
    signal: AbortSignal | undefined,
  ): LiveUpdates<T> {
    const { text, name } = this.operation(document);
    const subscriber = this.options.transport === "sse" ? Promise.resolve(this.graphqlSse()) : this.graphqlWs();
    return new LiveUpdates<T>(subscriber, { query: text, variables: { ...variables } as Record<string, unknown>, operationName: name }, field, signal);
  }

  /** One graphql-ws client for all watches: one socket, opened with the first watch, closed after the last. */
  private graphqlWs(): Promise<Client> {
    this.socket ??= this.webSocketImpl().then((webSocketImpl) => {
      // a start the server paced (4429 with a hint) is retried after the hint (see pacing.ts)
      const hint = new StartHint();
      const socketClass = (webSocketImpl ?? globalThis.WebSocket) as SocketClass | undefined;
      const backoff = this.options.retryWait ?? defaultRetryWait;
      const options: ClientOptions = {
        url: this.wsUrl,
        lazy: true,
        retryAttempts: this.options.retryAttempts ?? 8,
        // retry after any failure to connect (a refused connection while a server restarts is
        // an `error` event, which graphql-ws alone would not retry); close codes that mean
        // "do not retry" (4400, 4401, 4406, 4409, 4429 but a paced start, 4500, …) still end the watch
        shouldRetry: () => true,
        retryWait: async (retries) => {
          const seconds = hint.take();
          await (seconds === undefined ? backoff(retries) : hintedWait(seconds));
        },
        ...(this.options.on ? { on: this.options.on } : {}),
        ...(socketClass ? { webSocketImpl: pacedWebSocket(socketClass, hint) } : {}),
      };
      return createClient(options);
    });
    return this.socket;
  }

  /** One graphql-sse client for all watches, in distinct connections mode: an event stream per watch. */
  private graphqlSse(): Subscriber {
    this.streams ??= createSseClient({
      url: this.url,
      headers: () => ({
        ...(this.options.clientId ? { "x-client-id": this.options.clientId } : {}),
        ...this.options.headers,
      }),
      retryAttempts: this.options.retryAttempts ?? 8,
      ...(this.options.retryWait ? { retry: this.options.retryWait } : {}),
      ...(this.options.fetch ? { fetchFn: this.options.fetch } : {}),
    } satisfies SseClientOptions);
    const streams = this.streams;
    return {
      iterate: <Data>(request: { query: string; variables: Record<string, unknown>; operationName: string }) =>
        streams.iterate<Data>(request) as AsyncIterableIterator<FormattedExecutionResult<Data, unknown>>,
    };
  }

  private async webSocketImpl(): Promise<unknown> {
    if (this.options.webSocketImpl) return this.options.webSocketImpl;
    const clientId = this.options.clientId;
    if (typeof globalThis.WebSocket === "function" && !(clientId && isNode())) return undefined; // the platform's
    // Node 20 has no WebSocket (and Node's own cannot send headers): the `ws` package
    const { WebSocket: NodeWebSocket } = await import("ws");
    if (!clientId) return NodeWebSocket;
    const headers = { "x-client-id": clientId };
    return class extends NodeWebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols, { headers });
      }
    };
  }
}

/** Aborted when either is (AbortSignal.any where there is one: Node ≥ 20.3 and current browsers). */
function either(a: AbortSignal, b: AbortSignal): AbortSignal {
  if (typeof AbortSignal.any === "function") return AbortSignal.any([a, b]);
  const controller = new AbortController();
  for (const signal of [a, b]) {
    if (signal.aborted) {
      controller.abort(signal.reason);
      break;
    }
    signal.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
  }
  return controller.signal;
}

function isNode(): boolean {
  return typeof process !== "undefined" && typeof process.versions?.node === "string";
}

