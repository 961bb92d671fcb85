// Which npm Redis client GETs the cached entry faster, the way the peer uses it:
// `concurrency` callers in one process, each awaiting one GET after another.
// Usage: node redis_get.mjs [redis://127.0.0.1:6379/0] [--seconds 3] [--key weather:lat:40.7:lon:-74.0]
// (node-redis is a devDependency for this comparison alone: `npm ci`, not `npm ci --omit=dev`)
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { createClient } from "redis";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: "string", default: "3" },
    key: { type: "string", default: "weather:lat:40.7:lon:-74.0" },
  },
});
const url = positionals[0] ?? process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379/0";
const seconds = Number(values.seconds);

async function measure(get, concurrency) {
  const value = await get(values.key);
  if (typeof value !== "string" || !value.startsWith("wn2 ")) throw new Error(`no entry at ${values.key}`);
  for (const [label, ms] of [["warmup", 500], ["run", seconds * 1000]]) {
    let done = 0;
    const stopAt = performance.now() + ms;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < stopAt) {
          await get(values.key);
          done += 1;
        }
      }),
    );
    if (label === "run") return done / seconds;
  }
}

const clients = {
  "ioredis (auto-pipelining off)": async () => {
    const c = new Redis(url, { lazyConnect: true });
    await c.connect();
    return [(k) => c.get(k), () => c.quit()];
  },
  "ioredis (enableAutoPipelining)": async () => {
    const c = new Redis(url, { lazyConnect: true, enableAutoPipelining: true });
    await c.connect();
    return [(k) => c.get(k), () => c.quit()];
  },
  "redis (node-redis)": async () => {
    const c = createClient({ url });
    await c.connect();
    return [(k) => c.get(k), () => c.close()];
  },
};

console.log(`GET ${values.key} on ${url}, ${seconds} s each, node ${process.version}`);
for (const concurrency of [1, 32]) {
  for (const [name, open] of Object.entries(clients)) {
    const [get, close] = await open();
    const rate = await measure(get, concurrency);
    await close();
    console.log(`${name.padEnd(32)} concurrency ${String(concurrency).padStart(2)}: ${Math.round(rate).toString().padStart(7)} GET/s`);
  }
}
