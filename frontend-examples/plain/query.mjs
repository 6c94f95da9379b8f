// A filtered, paginated events query and analytics over HTTP with fetch.
const url = process.env.EVENTLOG_URL ?? "http://127.0.0.1:8080";
const token = process.env.EVENTLOG_TOKEN;
const projectId = process.env.EVENTLOG_PROJECT;

async function graphql(query, variables) {
  const res = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) {
    const e = body.errors[0];
    throw new Error(`${e.extensions?.code}: ${e.message}`);
  }
  return body.data;
}

const EVENTS = `query($p: UUID!, $f: EventFilter, $after: String) {
  events(projectId: $p, filter: $f, first: 50, after: $after) {
    nodes { id seq eventType agentId toolName errorCode createdAt session { events errors } }
    pageInfo { hasNextPage endCursor }
  }
}`;

let after = null;
let total = 0;
do {
  const { events } = await graphql(EVENTS, { p: projectId, f: { hasError: false }, after });
  for (const e of events.nodes) console.log(e.createdAt, e.eventType, e.agentId ?? "-", e.toolName ?? "");
  total += events.nodes.length;
  after = events.pageInfo.hasNextPage ? events.pageInfo.endCursor : null;
} while (after);
console.log(`${total} events`);

const { analytics } = await graphql(
  `query($p: UUID!) { analytics(projectId: $p, bucket: MINUTE) {
     totalEvents sessions errorStats { totalErrors errorRate }
     eventTypeCounts { eventType count } approvals { required approved rejected timedOut } } }`,
  { p: projectId },
);
console.log(JSON.stringify(analytics, null, 2));
