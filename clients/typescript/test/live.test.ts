/**
 * Live updates over graphql-ws against a live server: the value at once, every refresh,
 * typed errors, the watch script, and a reconnect that delivers nothing twice.
 * Refreshes and the restart are the harness's doing (WEATHERNOTE_CONTROL_URL).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { BadUserInputError, WeatherNoteClient, instantMicros } from "@weathernote/client";

import { CONTROL_URL, GRAPHQL_URL, PARIS, control, nextValue, waitFor, within } from "./support.js";

const needsControl = { skip: !CONTROL_URL && "needs WEATHERNOTE_CONTROL_URL" };

function later(a: string | null | undefined, b: string | null | undefined): boolean {
  const [x, y] = [instantMicros(a ?? ""), instantMicros(b ?? "")];
  return x !== undefined && y !== undefined && x > y;
}

test("watchCurrent: the cell's value at once, then its refresh", needsControl, async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const live = client.watchCurrent(PARIS.lat, PARIS.lon);
  try {
    const first = await nextValue(live, 10_000, "the value at once");
    assert.deepEqual(first.cell, { lat: 48.9, lon: 2.4 });
    const refreshed = await control("refresh", { part: "current" });
    const second = await nextValue(live, 10_000, "the refresh");
    assert.ok(later(second.fetchedAt, first.fetchedAt), `${second.fetchedAt} after ${first.fetchedAt}`);
    assert.equal(second.fetchedAt, refreshed["fetchedAt"]);
  } finally {
    await live.close();
    await client.dispose();
  }
});

test("watchForecast: the forecast at once, then its refresh", needsControl, async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const live = client.watchForecast(PARIS.lat, PARIS.lon, { days: 2, hours: 6 });
  try {
    const first = await nextValue(live, 10_000, "the forecast at once");
    assert.equal(first.daily.length, 2);
    assert.equal(first.hourly.length, 6);
    await control("refresh", { part: "forecast" });
    // the daily and hourly parts are announced one by one: updates until both are newer
    let latest = await nextValue(live, 10_000, "the forecast's refresh");
    while (!later(latest.fetchedAt, first.fetchedAt)) latest = await nextValue(live, 10_000, "the forecast's refresh");
    assert.equal(latest.hourly.length, 6);
  } finally {
    await live.close();
    await client.dispose();
  }
});

test("a refused subscription is a typed error from the iterator", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL, retryAttempts: 0 });
  try {
    await assert.rejects(within(10_000, "the refusal", client.watchCurrent(91, 0).next()), BadUserInputError);
  } finally {
    await client.dispose();
  }
});

test("close() ends a pending next()", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL });
  const live = client.watchCurrent(PARIS.lat, PARIS.lon);
  await nextValue(live);
  const pending = live.next();
  await live.close();
  assert.deepEqual(await within(5_000, "the end", pending), { done: true, value: undefined });
  await client.dispose();
});

test("the watch script prints each update and exits 0 on Ctrl-C", async () => {
  const script = fileURLToPath(new URL("../dist/watch.js", import.meta.url));
  const child = spawn(process.execPath, [script, "--lat", String(PARIS.lat), "--lon", String(PARIS.lon), "--url", GRAPHQL_URL, "--json"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    await waitFor(() => stdout.includes("\n"), 10_000, `the first update (stderr: ${stderr})`);
    const update = JSON.parse(stdout.split("\n")[0] ?? "") as { cell: unknown; fetchedAt: string };
    assert.deepEqual(update.cell, { lat: 48.9, lon: 2.4 });
    child.kill("SIGINT");
    const [code, signal] = await within(5_000, "the exit after SIGINT", exited);
    assert.deepEqual({ code, signal, stderr }, { code: 0, signal: null, stderr: "" });
  } finally {
    child.kill("SIGKILL");
  }
});

// Last: it replaces the server.
test("after the server goes away (1001) the watch reconnects and delivers nothing twice", needsControl, async () => {
  const closes: number[] = [];
  const connections: boolean[] = [];
  let nextMessages = 0;
  const client = new WeatherNoteClient({
    url: GRAPHQL_URL,
    retryAttempts: 10,
    on: {
      connected: (_socket, _payload, wasRetry) => connections.push(wasRetry),
      closed: (event) => closes.push((event as { code: number }).code),
      message: (message) => {
        if (message.type === "next") nextMessages += 1;
      },
    },
  });
  const live = client.watchCurrent(PARIS.lat, PARIS.lon);
  try {
    const first = await nextValue(live, 10_000, "the value at once");
    assert.deepEqual(connections, [false]);
    const pending = live.next(); // waiting across the restart
    await control("restart");
    assert.equal(closes[0], 1001, `close codes ${closes}`);
    // graphql-ws reconnects with its backoff and subscribes again; the server sends the
    // cell's value at once, the same one as before: on the wire, but not delivered again
    await waitFor(() => connections.length === 2 && nextMessages === 2, 30_000, "reconnect and the value sent again");
    assert.deepEqual(connections, [false, true]);
    const refreshed = await control("refresh", { part: "current" });
    const second = await within(10_000, "the refresh after the reconnect", pending);
    assert.equal(second.done, false);
    assert.equal(second.value?.fetchedAt, refreshed["fetchedAt"], `delivered ${second.value?.fetchedAt}, first was ${first.fetchedAt}`);
    assert.ok(later(second.value?.fetchedAt, first.fetchedAt));
  } finally {
    await live.close();
    await client.dispose();
  }
});
