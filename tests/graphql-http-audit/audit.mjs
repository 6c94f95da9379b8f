// GraphQL over HTTP audit (graphql-http's auditServer) against a running eventlog.
// Usage: node audit.mjs http://127.0.0.1:8080/graphql
// Prints every result and a summary line "N ok, W warnings, E errors";
// exits 1 on any warning or error.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}
const results = await auditServer({ url });
const count = { ok: 0, warn: 0, error: 0 };
for (const r of results) {
  count[r.status] += 1;
  if (r.status !== 'ok') {
    let body = '';
    try {
      body = ` (${r.reason}; status ${r.response.status}, ${await r.response.text()})`;
    } catch {
      body = ` (${r.reason})`;
    }
    console.log(`${r.status.toUpperCase()} ${r.id} ${r.name}${body}`);
  }
}
console.log(`graphql-http audit: ${count.ok} ok, ${count.warn} warnings, ${count.error} errors`);
process.exit(count.warn + count.error === 0 ? 0 : 1);
