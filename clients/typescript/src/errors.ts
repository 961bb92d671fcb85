/**
 * Typed errors: every failure of the client is a `WeatherNoteError`, and the server's
 * `extensions.code` decides its class, so callers branch with `instanceof` (or on `code`)
 * rather than on messages.
 */

/** A GraphQL error as the server sends it (the GraphQL "formatted" form). */
export interface GraphQLErrorPayload {
  readonly message: string;
  readonly path?: readonly (string | number)[];
  readonly locations?: readonly { readonly line: number; readonly column: number }[];
  readonly extensions?: Readonly<Record<string, unknown>>;
}

/** The codes WeatherNote puts in `extensions.code`, and NETWORK_ERROR for failures of the transport. */
export type ErrorCode =
  | "BAD_USER_INPUT"
  | "RATE_LIMITED"
  | "UPSTREAM_UNAVAILABLE"
  | "QUERY_TOO_COMPLEX"
  | "PERSISTED_QUERY_NOT_FOUND"
  | "PERSISTED_QUERY_NOT_IN_LIST"
  | "GRAPHQL_PARSE_FAILED"
  | "GRAPHQL_VALIDATION_FAILED"
  | "OPERATION_RESOLUTION_FAILURE"
  | "BAD_REQUEST"
  | "INTERNAL_SERVER_ERROR"
  | "NETWORK_ERROR";

export interface ErrorDetails {
  /** The server's errors, as received (empty for transport failures). */
  readonly errors?: readonly GraphQLErrorPayload[];
  /** The HTTP status, when the error came over HTTP. */
  readonly status?: number;
  readonly cause?: unknown;
}

export class WeatherNoteError extends Error {
  /** `extensions.code` of the first error that carries one (a code this client does not know stays as sent). */
  readonly code: ErrorCode | (string & {});
  readonly errors: readonly GraphQLErrorPayload[];
  readonly status: number | undefined;

  constructor(message: string, code: ErrorCode | (string & {}), details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.errors = details.errors ?? [];
    this.status = details.status;
  }
}

/** A value out of range (lat outside −90..90, lon outside −180..180, days outside 1..16, …). */
export class BadUserInputError extends WeatherNoteError {}

/** Over the server's rate limit: try again in `retryAfter` seconds. */
export class RateLimitedError extends WeatherNoteError {
  /** Seconds to wait before the next request, from `extensions.retryAfter` (or `Retry-After`). */
  readonly retryAfter: number;

  constructor(message: string, retryAfter: number, details: ErrorDetails = {}) {
    super(message, "RATE_LIMITED", details);
    this.retryAfter = retryAfter;
  }
}

/** The weather provider is down and the server has nothing for this place, not even stale. */
export class UpstreamUnavailableError extends WeatherNoteError {}

/** The document is over the server's limits (size, depth, aliases, batch). */
export class QueryTooComplexError extends WeatherNoteError {}

/** The server does not know the persisted query's hash (the client then sends the text). */
export class PersistedQueryNotFoundError extends WeatherNoteError {}

/** The server refused the operation itself: parse or validation failure, not in the safelist, a bad request. */
export class InvalidOperationError extends WeatherNoteError {}

/** The server failed (it masks the details). */
export class InternalServerError extends WeatherNoteError {}

/** The request or the socket failed below GraphQL: no answer, a timeout, a non-GraphQL response. */
export class NetworkError extends WeatherNoteError {
  constructor(message: string, details: ErrorDetails = {}) {
    super(message, "NETWORK_ERROR", details);
  }
}

/** The WebSocket closed for good: a close code the client must not retry, or retries exhausted. */
export class ConnectionClosedError extends NetworkError {
  readonly closeCode: number;
  readonly reason: string;

  constructor(closeCode: number, reason: string) {
    super(`WebSocket closed: ${closeCode}${reason ? ` ${reason}` : ""}`);
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

const INVALID_OPERATION = new Set([
  "GRAPHQL_PARSE_FAILED",
  "GRAPHQL_VALIDATION_FAILED",
  "OPERATION_RESOLUTION_FAILURE",
  "PERSISTED_QUERY_NOT_IN_LIST",
  "PERSISTED_QUERY_NOT_SUPPORTED",
  "BAD_REQUEST",
]);

export function codeOf(error: GraphQLErrorPayload): string | undefined {
  const code = error.extensions?.["code"];
  return typeof code === "string" ? code : undefined;
}

function retryAfterSeconds(error: GraphQLErrorPayload, header: string | null | undefined): number {
  const fromBody = error.extensions?.["retryAfter"];
  if (typeof fromBody === "number" && Number.isFinite(fromBody) && fromBody >= 0) return fromBody;
  const fromHeader = header == null ? NaN : Number(header);
  return Number.isFinite(fromHeader) && fromHeader >= 0 ? fromHeader : 1;
}

/** The typed error for a list of GraphQL errors: the first coded error decides the class. */
export function errorFromGraphQL(
  errors: readonly GraphQLErrorPayload[],
  status?: number,
  retryAfterHeader?: string | null,
): WeatherNoteError {
  const first = errors.find((error) => codeOf(error) !== undefined) ?? errors[0];
  const message = first?.message ?? "GraphQL error without a message";
  const code = (first && codeOf(first)) ?? (status === 429 ? "RATE_LIMITED" : "INTERNAL_SERVER_ERROR");
  const details: ErrorDetails = { errors, ...(status === undefined ? {} : { status }) };
  switch (code) {
    case "BAD_USER_INPUT":
      return new BadUserInputError(message, code, details);
    case "RATE_LIMITED":
      return new RateLimitedError(message, retryAfterSeconds(first ?? { message }, retryAfterHeader), details);
    case "UPSTREAM_UNAVAILABLE":
      return new UpstreamUnavailableError(message, code, details);
    case "QUERY_TOO_COMPLEX":
      return new QueryTooComplexError(message, code, details);
    case "PERSISTED_QUERY_NOT_FOUND":
      return new PersistedQueryNotFoundError(message, code, details);
    case "INTERNAL_SERVER_ERROR":
      return new InternalServerError(message, code, details);
    default:
      if (INVALID_OPERATION.has(code)) return new InvalidOperationError(message, code, details);
      return new WeatherNoteError(message, code, details);
  }
}

/** Anything a transport threw, as a WeatherNoteError (a WeatherNoteError stays as it is). */
export function toWeatherNoteError(thrown: unknown): WeatherNoteError {
  if (thrown instanceof WeatherNoteError) return thrown;
  if (Array.isArray(thrown)) return errorFromGraphQL(thrown as GraphQLErrorPayload[]);
  if (isCloseEvent(thrown)) return new ConnectionClosedError(thrown.code, thrown.reason);
  if (thrown instanceof Error) return new NetworkError(thrown.message, { cause: thrown });
  const message = isObject(thrown) && typeof thrown["message"] === "string" ? thrown["message"] : String(thrown);
  return new NetworkError(message || "WebSocket error", { cause: thrown });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function isCloseEvent(value: unknown): value is { code: number; reason: string } {
  return isObject(value) && typeof value["code"] === "number" && "reason" in value;
}
