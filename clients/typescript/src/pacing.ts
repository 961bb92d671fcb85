/**
 * Reconnect storms: a server that paces connection starts closes the ones it cannot take now
 * with 4429 and a reason `{"code":"RATE_LIMITED","retryAfter":seconds}`.
 *
 * graphql-ws treats every 4429 as fatal (the protocol's "too many initialisation requests"), so a
 * watch would end. The socket class below reports such a close to graphql-ws as 1013 (Try Again
 * Later, which it retries) and keeps the hint, and `retryWait` waits what the server said (plus up
 * to a fifth, so clients told the same moment spread out) before its own backoff. Any other 4429
 * stays fatal.
 */

/** The seconds a close asks to wait when it paced a start; undefined for any other close. */
export function startRefusedHint(event: { readonly code: number; readonly reason: string }): number | undefined {
  if (event.code !== 4429) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(event.reason);
  } catch {
    return undefined; // a 4429 of another kind
  }
  const retryAfter = typeof parsed === "object" && parsed !== null ? (parsed as { retryAfter?: unknown }).retryAfter : undefined;
  return typeof retryAfter === "number" && retryAfter >= 0 && retryAfter <= 3600 ? retryAfter : undefined;
}

/** The latest hint a paced start left, taken once by the next wait. */
export class StartHint {
  private seconds: number | undefined;

  set(seconds: number): void {
    this.seconds = seconds;
  }

  take(): number | undefined {
    const seconds = this.seconds;
    this.seconds = undefined;
    return seconds;
  }
}

type CloseLike = { readonly code: number; readonly reason: string; readonly wasClean?: boolean };
type CloseHandler = ((this: unknown, event: CloseLike) => unknown) | null;
export type SocketClass = new (url: string | URL, protocols?: string | string[]) => object;

/** `Base` whose close handler sees a paced start as 1013 (retryable), its hint kept in `hint`. */
export function pacedWebSocket(Base: SocketClass, hint: StartHint): SocketClass {
  const inherited = descriptorOf(Base.prototype as object, "onclose");
  if (!inherited?.set) return Base; // not a WebSocket we know how to wrap: graphql-ws as it is
  const setter = inherited.set;
  const Paced = class extends Base {};
  Object.defineProperty(Paced.prototype, "onclose", {
    configurable: true,
    enumerable: true,
    get(this: object): unknown {
      return inherited.get?.call(this);
    },
    set(this: object, handler: CloseHandler) {
      const wrapped: CloseHandler =
        handler === null
          ? null
          : function (this: unknown, event: CloseLike) {
              const seconds = startRefusedHint(event);
              if (seconds === undefined) return handler.call(this, event);
              hint.set(seconds);
              return handler.call(this, { code: 1013, reason: event.reason, wasClean: event.wasClean ?? true });
            };
      setter.call(this, wrapped);
    },
  });
  return Paced;
}

/** graphql-ws's own backoff (2^retries s plus 0.3–3 s), used when there is no hint. */
export async function defaultRetryWait(retries: number): Promise<void> {
  await sleep(2 ** retries * 1000 + Math.floor(Math.random() * 2700 + 300));
}

/** A hint's wait: what the server said, plus up to a fifth at random. */
export async function hintedWait(seconds: number): Promise<void> {
  await sleep(seconds * 1000 * (1 + Math.random() * 0.2));
}

function descriptorOf(prototype: object | null, name: string): PropertyDescriptor | undefined {
  for (let current = prototype; current !== null; current = Object.getPrototypeOf(current) as object | null) {
    const descriptor = Object.getOwnPropertyDescriptor(current, name);
    if (descriptor) return descriptor;
  }
  return undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
