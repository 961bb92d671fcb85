/**
 * Live updates over Server-Sent Events (transport: "sse", graphql-sse's distinct connections)
 * against a live server: the value at once, its refresh, typed errors, the watch script.
 * Refreshes are the harness's doing (WEATHERNOTE_CONTROL_URL).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { BadUserInputError, WeatherNoteClient, instantMicros } from "@weathernote/client";

import { CONTROL_URL, GRAPHQL_URL, PARIS, control, nextValue, waitFor, within } from "./support.js";

const needsControl = { skip: !CONTROL_URL && "needs WEATHERNOTE_CONTROL_URL" };

test("watchCurrent over SSE: the cell's value at once, then its refresh", needsControl, async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL, transport: "sse", clientId: "ts-sse" });
  const live = client.watchCurrent(PARIS.lat, PARIS.lon);
  try {
    const first = await nextValue(live, 10_000, "the value at once");
    assert.deepEqual(first.cell, { lat: 48.9, lon: 2.4 });
    const refreshed = await control("refresh", { part: "current" });
    const second = await nextValue(live, 10_000, "the refresh");
    assert.equal(second.fetchedAt, refreshed["fetchedAt"]);
    const [a, b] = [instantMicros(second.fetchedAt ?? ""), instantMicros(first.fetchedAt ?? "")];
    assert.ok(a !== undefined && b !== undefined && a > b, `${second.fetchedAt} after ${first.fetchedAt}`);
  } finally {
    await live.close();
    await client.dispose();
  }
});

test("a refused subscription over SSE is a typed error from the iterator", async () => {
  const client = new WeatherNoteClient({ url: GRAPHQL_URL, transport: "sse", retryAttempts: 0 });
  try {
    await assert.rejects(within(10_000, "the refusal", client.watchCurrent(91, 0).next()), BadUserInputError);
  } finally {
    await client.dispose();
  }
});

test("the watch script listens over SSE with --transport sse", async () => {
  const script = fileURLToPath(new URL("../dist/watch.js", import.meta.url));
  const args = [script, "--lat", String(PARIS.lat), "--lon", String(PARIS.lon), "--url", GRAPHQL_URL, "--json", "--transport", "sse"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    await waitFor(() => stdout.includes("\n"), 10_000, `the first update (stderr: ${stderr})`);
    const update = JSON.parse(stdout.split("\n")[0] ?? "") as { cell: unknown };
    assert.deepEqual(update.cell, { lat: 48.9, lon: 2.4 });
    child.kill("SIGINT");
    const [code, signal] = await within(5_000, "the exit after SIGINT", exited);
    assert.deepEqual({ code, signal, stderr }, { code: 0, signal: null, stderr: "" });
  } finally {
    child.kill("SIGKILL");
  }
});
