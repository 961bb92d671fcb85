/**
 * What the tests share: the live server they run against and the harness's control hook.
 *
 * WEATHERNOTE_URL             the GraphQL endpoint of a running server (required)
 * WEATHERNOTE_LIMITED_URL     a server with a rate limit of 2 requests a minute (its test is skipped without it)
 * WEATHERNOTE_PACED_URL      a server pacing connection starts at 2 a second (its test is skipped without it)
 * WEATHERNOTE_SIMULATOR_URL   the Open-Meteo simulator behind WEATHERNOTE_URL (its test is skipped without it)
 * WEATHERNOTE_CONTROL_URL     the harness's hook (tests/system/test_typescript_client.py), which does what a
 *                             client cannot: POST /refresh {"part": "current"|"forecast"} makes Paris's
 *                             cell refresh (its Redis entries dropped, then asked for), POST /restart
 *                             stops the server (SIGTERM: sockets close with 1001) and starts another on
 *                             the same port. Tests that need it are skipped without it.
 */

export const GRAPHQL_URL = process.env["WEATHERNOTE_URL"] ?? "";
if (!GRAPHQL_URL) throw new Error("WEATHERNOTE_URL must name a running server's GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql");
export const LIMITED_URL = process.env["WEATHERNOTE_LIMITED_URL"];
export const SIMULATOR_URL = process.env["WEATHERNOTE_SIMULATOR_URL"];
export const CONTROL_URL = process.env["WEATHERNOTE_CONTROL_URL"];

/** Paris: the cell lat 48.9, lon 2.4 (the one the control hook refreshes). */
export const PARIS = { lat: 48.8566, lon: 2.3522 } as const;

export async function control(action: "refresh" | "restart", body: object = {}): Promise<Record<string, unknown>> {
  if (!CONTROL_URL) throw new Error("no WEATHERNOTE_CONTROL_URL");
  const response = await fetch(`${CONTROL_URL}/${action}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(45_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`control ${action}: HTTP ${response.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** `promise`, or a rejection naming `what` after `ms`. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next value of an iterator, which must come within `ms`. */
export async function nextValue<T>(iterator: AsyncIterator<T>, ms = 10_000, what = "next update"): Promise<T> {
  const result = await within(ms, what, iterator.next());
  if (result.done) throw new Error(`${what}: the iterator ended`);
  return result.value;
}

export async function waitFor(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}
