/**
 * Live updates as async iterables over graphql-ws (or graphql-sse), with nothing delivered twice.
 *
 * graphql-ws and graphql-sse reconnect by themselves (retryAttempts, randomised exponential
 * backoff) and subscribe again; the server then sends the cell's value at once, which the caller may
 * already have. Each value carries `fetchedAt` (when the provider was asked): a value not
 * newer than the last one delivered is dropped, unless it differs in content (a forecast's
 * `fetchedAt` is its oldest part's, so a refresh of one part can leave it unchanged).
 */

import type { FormattedExecutionResult } from "graphql-ws";

import { errorFromGraphQL, toWeatherNoteError, type GraphQLErrorPayload } from "./errors.js";

/** An ISO date-time as microseconds since the epoch (Date.parse keeps only milliseconds). */
export function instantMicros(iso: string): number | undefined {
  const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$/.exec(iso);
  if (!match) return undefined;
  const [, base, fraction = "", zone = "Z"] = match;
  const millis = Date.parse(`${base}${zone}`);
  if (Number.isNaN(millis)) return undefined;
  return millis * 1000 + Number(fraction.slice(0, 6).padEnd(6, "0"));
}

/** What runs one subscription: a graphql-ws client, or a graphql-sse one. */
export interface Subscriber {
  iterate<Data = Record<string, unknown>>(request: {
    query: string;
    variables: Record<string, unknown>;
    operationName: string;
  }): AsyncIterableIterator<FormattedExecutionResult<Data, unknown>>;
}

interface Delivered {
  readonly at: number | undefined;
  readonly content: string;
}

/** Remembers the last value delivered and says whether a new one is worth delivering. */
export class Deduplicator<T extends { readonly fetchedAt?: string | null }> {
  private last: Delivered | undefined;

  /** True when `value` is new to the caller (and remembers it as delivered). */
  admit(value: T): boolean {
    const at = value.fetchedAt ? instantMicros(value.fetchedAt) : undefined;
    const content = contentOf(value);
    const last = this.last;
    if (last !== undefined) {
      if (at !== undefined && last.at !== undefined && at < last.at) return false; // superseded already
      if ((at === undefined || at === last.at) && content === last.content) return false; // the same value again
    }
    this.last = { at, content };
    return true;
  }
}

/** The value without `cached` (the same value is "cached" when sent again after a reconnect). */
function contentOf(value: object): string {
  return JSON.stringify(value, (key, inner: unknown) => (key === "cached" ? undefined : inner));
}

/**
 * One subscription's values, in order, each delivered once. `for await` over it, or call
 * `close()` (or abort the signal given to the watch) to stop; both end a pending `next()`.
 * An error from the server or a socket closed for good is thrown as a WeatherNoteError.
 */
export class LiveUpdates<T extends { readonly fetchedAt?: string | null }> implements AsyncIterableIterator<T> {
  private readonly inner: Promise<AsyncIterator<FormattedExecutionResult<Record<string, unknown>, unknown>>>;
  private readonly seen = new Deduplicator<T>();
  private closed = false;

  constructor(
    client: Promise<Subscriber>,
    request: { query: string; variables: Record<string, unknown>; operationName: string },
    private readonly field: string,
    signal?: AbortSignal,
  ) {
    this.inner = client.then((ws) => ws.iterate<Record<string, unknown>>(request));
    this.inner.catch(() => undefined); // surfaced by next()
    if (signal) {
      if (signal.aborted) void this.close();
      else signal.addEventListener("abort", () => void this.close(), { once: true });
    }
  }

  async next(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      if (this.closed) return { done: true, value: undefined };
      let result: IteratorResult<FormattedExecutionResult<Record<string, unknown>, unknown>>;
      try {
        result = await (await this.inner).next();
      } catch (thrown) {
        this.closed = true;
        throw toWeatherNoteError(thrown);
      }
      if (result.done || this.closed) {
        this.closed = true;
        return { done: true, value: undefined };
      }
      const { data, errors } = result.value;
      const value = data?.[this.field] as T | null | undefined;
      if (errors?.length || value == null) {
        await this.close();
        throw errorFromGraphQL((errors ?? [{ message: "an update without data" }]) as GraphQLErrorPayload[]);
      }
      if (this.seen.admit(value)) return { done: false, value };
    }
  }

  /** Stops the subscription (the socket closes when no other watch uses it). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await (await this.inner).return?.();
    } catch {
      // it failed to start: nothing to stop
    }
  }

  async return(): Promise<IteratorResult<T, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
