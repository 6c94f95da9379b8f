// A live session viewer: graphql-transport-ws, token in connection_init, resume from the last seq.
const url = (process.env.EVENTLOG_URL ?? "http://127.0.0.1:8080").replace(/^http/, "ws") + "/graphql/ws";
const token = process.env.EVENTLOG_TOKEN;
const projectId = process.env.EVENTLOG_PROJECT;
const WS = globalThis.WebSocket ?? (await import("ws")).default;

let lastSeq = "0"; // "0" replays everything stored, then continues live

function connect() {
  const ws = new WS(url, "graphql-transport-ws");
  ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }));
  ws.onmessage = (msg) => {
    const m = JSON.parse(msg.data.toString());
    if (m.type === "connection_ack") {
      ws.send(JSON.stringify({
        id: "live",
        type: "subscribe",
        payload: {
          query: `subscription($p: UUID!, $after: String) {
            events(projectId: $p, afterSeq: $after) { seq eventType agentId toolName createdAt payload } }`,
          variables: { p: projectId, after: lastSeq },
        },
      }));
    } else if (m.type === "next" && m.payload.data) {
      const e = m.payload.data.events;
      lastSeq = e.seq;
      console.log(e.seq, e.createdAt, e.eventType, e.agentId ?? "-", e.toolName ?? "");
    } else if (m.type === "next" || m.type === "error") {
      const err = (m.payload.errors ?? m.payload)[0];
      console.error(err.extensions?.code, err.message);
      ws.close(); // LAGGED or an expired token: reconnect and resume from lastSeq
    }
  };
  ws.onclose = (ev) => {
    console.error(`closed (${ev.code}); reconnecting from seq ${lastSeq}`);
    if (ev.code !== 4403) setTimeout(connect, 1000);
  };
}
connect();
