// A third-party client: subscribes with the graphql-ws library, prints each result as
// one JSON line, and completes (breaks out of the iterator) after `count` results.
// Usage: node subscribe.mjs <ws url> <query> <variables json> <count>
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, query, variables, count] = process.argv.slice(2);
const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
let received = 0;
try {
  for await (const result of client.iterate({ query, variables: JSON.parse(variables) })) {
    console.log(JSON.stringify(result));
    received += 1;
    if (received >= Number(count)) break;
  }
} finally {
  await client.dispose();
}
