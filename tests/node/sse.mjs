// A third-party client: subscribes with the graphql-sse library (GraphQL over Server-Sent Events),
// prints each result as one JSON line, and completes (breaks out of the iterator) after `count`
// results, or when the server completes the operation (a query: one result).
// Usage: node sse.mjs <url> <distinct|single> <query> <variables json> <count>
//   distinct: <url> is …/graphql (one event stream per operation)
//   single:   <url> is …/graphql/stream (a reservation, one stream, operations by POST, DELETE to stop)
import { createClient } from 'graphql-sse';

const [url, mode, query, variables, count] = process.argv.slice(2);
const client = createClient({ url, singleConnection: mode === 'single', retryAttempts: 0 });
let received = 0;
try {
  for await (const result of client.iterate({ query, variables: JSON.parse(variables) })) {
    console.log(JSON.stringify(result));
    received += 1;
    if (received >= Number(count)) break;
  }
} finally {
  client.dispose();
}
