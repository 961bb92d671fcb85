/** Queries over HTTP against a live server: typed results, persisted queries, typed errors. */

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import {
  BadUserInputError,
  CurrentAreaDocument,
  CurrentWeatherDocument,
  ForecastDocument,
  ForecastUpdatesDocument,
  InvalidOperationError,
  RateLimitedError,
  TypedDocumentString,
  UpstreamUnavailableError,
  WeatherNoteClient,
  WeatherNoteError,
  WeatherUpdatesDocument,
  WeatherUpdatesInAreaDocument,
  operationText,
  sha256Hex,
  type CurrentWeather,
  type CurrentWeatherQuery,
  type CurrentWeatherQueryVariables,
  type Forecast,
} from "@weathernote/client";

import { GRAPHQL_URL, LIMITED_URL, PARIS, SIMULATOR_URL, uniqueId } from "./support.js";

test("current() answers the CurrentWeather operation's typed result", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const weather: CurrentWeather = await client.current(PARIS.lat, PARIS.lon);
  assert.deepEqual(weather.cell, { lat: 48.9, lon: 2.4 });
  assert.equal(weather.units, "METRIC");
  assert.equal(typeof weather.temperature, "number");
  assert.equal(typeof weather.condition.description, "string");
  assert.equal(typeof weather.cached, "boolean");
  assert.ok(!Number.isNaN(Date.parse(weather.fetchedAt)), weather.fetchedAt);
  const imperial = await client.current(PARIS.lat, PARIS.lon, "IMPERIAL");
  assert.equal(imperial.units, "IMPERIAL");
  assert.equal(imperial.fetchedAt, weather.fetchedAt, "one cell, one entry, whatever the units");
});

test("forecast() honours days and hours", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const forecast: Forecast = await client.forecast(PARIS.lat, PARIS.lon, { days: 3, hours: 5 });
  assert.equal(forecast.days, 3);
  assert.equal(forecast.daily.length, 3);
  assert.equal(forecast.hourly.length, 5);
  const [day] = forecast.daily;
  assert.ok(day && typeof day.date === "string" && typeof day.condition.description === "string");
  const byDefault = await client.forecast(PARIS.lat, PARIS.lon);
  assert.equal(byDefault.daily.length, 7);
  assert.equal(byDefault.hourly.length, 24);
});

test("the bodies sent are clients/operations' persisted-query manifest, hash for hash", async () => {
  const manifest = JSON.parse(await readFile(new URL("../../operations/persisted-query-manifest.json", import.meta.url), "utf8")) as {
    operations: { id: string; name: string; body: string }[];
  };
  const documents = {
    CurrentArea: CurrentAreaDocument,
    CurrentWeather: CurrentWeatherDocument,
    Forecast: ForecastDocument,
    WeatherUpdates: WeatherUpdatesDocument,
    WeatherUpdatesInArea: WeatherUpdatesInAreaDocument,
    ForecastUpdates: ForecastUpdatesDocument,
  };
  assert.deepEqual(manifest.operations.map((o) => o.name).sort(), Object.keys(documents).sort());
  for (const entry of manifest.operations) {
    const text = operationText(documents[entry.name as keyof typeof documents]);
    assert.equal(text, entry.body, entry.name);
    assert.equal(await sha256Hex(text), entry.id, entry.name);
  }
});

test("APQ: the hash first, the text once on PERSISTED_QUERY_NOT_FOUND, then the hash alone by GET", async () => {
  // an operation no one has sent yet, so that the server cannot know its hash
  const name = uniqueId("ApqProbe").replace(/-/g, "_");
  const text = operationText(CurrentWeatherDocument).replace("query CurrentWeather(", `query ${name}(`);
  const probe = new TypedDocumentString(text) as unknown as TypedDocumentString<CurrentWeatherQuery, CurrentWeatherQueryVariables>;
  const sent: { method: string; query: boolean; hash: string | undefined; code: string | undefined }[] = [];
  const recording: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    const body = init?.body ? (JSON.parse(String(init.body)) as Record<string, unknown>) : undefined;
    const extensions = (body?.["extensions"] ?? JSON.parse(url.searchParams.get("extensions") ?? "null")) as
      | { persistedQuery?: { sha256Hash?: string } }
      | null;
    const answer = (await response.clone().json()) as { errors?: { extensions?: { code?: string } }[] };
    sent.push({
      method: init?.method ?? "GET",
      query: Boolean(body?.["query"] ?? url.searchParams.get("query")),
      hash: extensions?.persistedQuery?.sha256Hash,
      code: answer.errors?.[0]?.extensions?.code,
    });
    return response;
  };
  const client = new WeatherNoteClient({ url: GRAPHQL_URL, fetch: recording });
  const hash = await sha256Hex(text);

  const first = await client.request(probe, { lat: PARIS.lat, lon: PARIS.lon });
  assert.deepEqual(sent, [
    { method: "GET", query: false, hash, code: "PERSISTED_QUERY_NOT_FOUND" },
    { method: "POST", query: true, hash, code: undefined },
  ]);
  sent.length = 0;
  const second = await client.request(probe, { lat: PARIS.lat, lon: PARIS.lon });
  assert.deepEqual(sent, [{ method: "GET", query: false, hash, code: undefined }]);
  assert.deepEqual(second.current.cell, first.current.cell);
  assert.equal(second.current.fetchedAt, first.current.fetchedAt);

  // the same by POST, and without APQ at all
  sent.length = 0;
  await new WeatherNoteClient({ url: GRAPHQL_URL, fetch: recording, persistedQueries: "POST" }).request(probe, PARIS);
  assert.deepEqual(sent, [{ method: "POST", query: false, hash, code: undefined }]);
  sent.length = 0;
  await new WeatherNoteClient({ url: GRAPHQL_URL, fetch: recording, persistedQueries: false }).current(PARIS.lat, PARIS.lon);
  assert.deepEqual(sent, [{ method: "POST", query: true, hash: undefined, code: undefined }]);
});

test("BAD_USER_INPUT is a BadUserInputError", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const latitude = await client.current(91, 0).then(
    () => assert.fail("lat 91 answered"),
    (error: unknown) => error,
  );
  assert.ok(latitude instanceof BadUserInputError, String(latitude));
  assert.ok(latitude instanceof WeatherNoteError);
  assert.equal(latitude.code, "BAD_USER_INPUT");
  assert.match(latitude.message, /lat/);
  await assert.rejects(client.forecast(PARIS.lat, PARIS.lon, { days: 17 }), BadUserInputError);
  // a variable of the wrong type is refused before execution: not the user's value, the operation
  const wrongType = new TypedDocumentString("query Wrong($lat: Float!) { current(lat: $lat, lon: 0) { cached } }");
  await assert.rejects(client.request(wrongType, { lat: "north" }), (error: unknown) => {
    assert.ok(error instanceof WeatherNoteError && ["BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"].includes(error.code), String(error));
    return true;
  });
  await assert.rejects(client.request(new TypedDocumentString("query Broken { current("), {}), InvalidOperationError);
});

test("RATE_LIMITED is a RateLimitedError with retryAfter", { skip: !LIMITED_URL && "needs WEATHERNOTE_LIMITED_URL" }, async () => {
  const client = new WeatherNoteClient({ url: LIMITED_URL ?? "", clientId: uniqueId("device") });
  const outcomes: unknown[] = [];
  for (let i = 0; i < 3; i++) {
    outcomes.push(await client.current(PARIS.lat, PARIS.lon).catch((error: unknown) => error));
  }
  const limited = outcomes[2];
  assert.ok(limited instanceof RateLimitedError, String(limited));
  assert.equal(limited.code, "RATE_LIMITED");
  assert.equal(limited.status, 429);
  assert.ok(limited.retryAfter > 0 && limited.retryAfter <= 60, `retryAfter ${limited.retryAfter}`);
});

test("UPSTREAM_UNAVAILABLE is an UpstreamUnavailableError", { skip: !SIMULATOR_URL && "needs WEATHERNOTE_SIMULATOR_URL" }, async () => {
  const configure = async (knobs: object): Promise<void> => {
    const response = await fetch(`${SIMULATOR_URL}/__simulator/config`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(knobs),
    });
    assert.equal(response.status, 200, await response.text());
  };
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  await configure({ forced_status: 503 });
  try {
    // Cape Town: a cell nobody asked for, so nothing to serve, not even stale
    await assert.rejects(client.current(-33.9249, 18.4241), (error: unknown) => {
      assert.ok(error instanceof UpstreamUnavailableError, String(error));
      assert.equal(error.code, "UPSTREAM_UNAVAILABLE");
      return true;
    });
  } finally {
    await configure({ forced_status: null });
  }
});
