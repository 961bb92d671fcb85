/**
 * Reconnect storms: a server that paces connection starts (WEATHERNOTE_PACED_URL: 2 a second after
 * a burst of 1) closes the rest with 4429 and a retry hint; each watch comes back when told
 * instead of ending (graphql-ws alone treats every 4429 as fatal).
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { WeatherNoteClient } from "@weathernote/client";

import { startRefusedHint } from "../dist/pacing.js";
import { nextValue } from "./support.js";

const PACED_URL = process.env["WEATHERNOTE_PACED_URL"];

test("a paced start's hint is read from its close; any other close has none", () => {
  assert.equal(startRefusedHint({ code: 4429, reason: '{"code":"RATE_LIMITED","retryAfter":1.5}' }), 1.5);
  assert.equal(startRefusedHint({ code: 4429, reason: "Too many initialisation requests" }), undefined);
  assert.equal(startRefusedHint({ code: 4429, reason: '{"retryAfter":"soon"}' }), undefined);
  assert.equal(startRefusedHint({ code: 4429, reason: '{"retryAfter":-1}' }), undefined);
  assert.equal(startRefusedHint({ code: 1001, reason: '{"retryAfter":1}' }), undefined);
});

test("watches refused in a storm come back when told", { skip: !PACED_URL && "needs WEATHERNOTE_PACED_URL" }, async () => {
  // a backoff far longer than the test: only the server's hint can bring a refused watch back in time
  const patient = () => new Promise<void>((resolve) => setTimeout(resolve, 120_000).unref());
  const clients = Array.from(
    { length: 5 },
    (_, i) => new WeatherNoteClient({ url: PACED_URL ?? "", clientId: `ts-storm-${i}`, retryWait: patient }),
  );
  const watches = clients.map((client, i) => client.watchCurrent(46.04 + i * 0.3, 7.04));
  try {
    const firsts = await Promise.all(watches.map((watch) => nextValue(watch, 30_000, "the value after the storm")));
    assert.equal(firsts.length, 5);
    for (const first of firsts) assert.ok(first.fetchedAt);
  } finally {
    await Promise.all(watches.map((watch) => watch.close()));
    await Promise.all(clients.map((client) => client.dispose()));
  }
});
