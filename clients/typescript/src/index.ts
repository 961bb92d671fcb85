export {
  WeatherNoteClient,
  sha256Hex,
  operationText,
  type CurrentWeather,
  type Forecast,
  type Units,
  type WeatherNoteClientOptions,
  type RequestOptions,
  type ForecastOptions,
  type WatchOptions,
  type WatchForecastOptions,
} from "./client.js";
export { LiveUpdates, Deduplicator, instantMicros } from "./live.js";
export * from "./errors.js";
export * from "./generated/operations.js";
export type * as Schema from "./generated/schema.js";
