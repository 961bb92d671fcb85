// Runs the graphql-http audit suite (the GraphQL-over-HTTP spec's MUST, SHOULD
// and MAY checks) against a running server and prints one JSON line per audit.
// Usage: node audit.mjs http://127.0.0.1:8000/graphql
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}
const results = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  results.push({ id: result.id, name: result.name, status: result.status, reason: result.reason ?? null });
  if (result.response && !result.response.bodyUsed) {
    await result.response.body?.cancel();
  }
}
console.log(JSON.stringify(results));
