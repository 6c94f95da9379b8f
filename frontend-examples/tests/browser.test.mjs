// Browser tests of the dashboard, the session viewer and GraphiQL against a real
// eventlog server (the built binary, target/debug/eventlog unless EVENTLOG_BIN is
// set) on a fresh SQLite database filled by `eventlog demo`, driven through
// playwright-core in Debian's chromium. `.ci/run` runs them with
// `npm run test:browser`. Screenshots go to frontend-examples/screenshots/.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { createServer } from "vite";

const here = path.dirname(fileURLToPath(import.meta.url));
const examples = path.resolve(here, "..");
const repo = path.resolve(examples, "..");
const BIN = process.env.EVENTLOG_BIN ?? path.join(repo, "target/debug/eventlog");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = path.join(examples, "screenshots");

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "eventlog-browser-"));
const DB_URL = `sqlite://${path.join(tmp, "eventlog.db")}?mode=rwc`;
const children = new Set();
let server; // { child, port, tokens }
let vite;
let context;
let apiPort;
let appOrigin;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

function cleanEnv(extra) {
  const env = { ...process.env, RUST_LOG: "warn", ...extra };
  delete env.EVENTLOG_JWT_SECRET;
  env.EVENTLOG_DATABASE_URL = DB_URL;
  return env;
}

/** Starts `eventlog serve` on `port` and waits for its printed tokens. */
function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["serve"], {
      env: cleanEnv({
        EVENTLOG_LISTEN: `127.0.0.1:${port}`,
        EVENTLOG_CORS_ORIGINS: appOrigin,
        EVENTLOG_RETENTION_DAYS: "0",
      }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.add(child);
    let out = "";
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}`)), 30_000);
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("Paste into GraphiQL")) {
        clearTimeout(timer);
        const value = (prefix) => out.split("\n").find((l) => l.trim().startsWith(prefix))?.trim().split(/\s+/).pop();
        resolve({
          child,
          port,
          url: `http://127.0.0.1:${port}`,
          project: value("demo project id:"),
          admin: value("admin (demo-admin):"),
          user: value("user  (demo-user-1):"),
          service: value("service (demo-service):"),
          output: out,
        });
      }
    });
    child.stderr.on("data", () => {});
    child.on("exit", (code) => {
      children.delete(child);
      clearTimeout(timer);
      reject(new Error(`serve exited early (${code}): ${out}`));
    });
  });
}

/** SIGTERM and wait for a clean exit. */
function stopServer(s) {
  return new Promise((resolve) => {
    if (s.child.exitCode !== null) return resolve(s.child.exitCode);
    s.child.removeAllListeners("exit");
    s.child.on("exit", (code) => {
      children.delete(s.child);
      resolve(code);
    });
    s.child.kill("SIGTERM");
  });
}

function run(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { env: cleanEnv({}), stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("exit", (code) => {
      children.delete(child);
      code === 0 ? resolve(out) : reject(new Error(`eventlog ${args.join(" ")} failed (${code}): ${err}`));
    });
  });
}

async function gql(url, token, query, variables = {}) {
  const r = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await r.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

async function allSessionEvents(url, token, project, session) {
  const ids = [];
  let after = null;
  for (;;) {
    const d = await gql(
      url,
      token,
      `query($p: UUID!, $s: UUID!, $a: String) { sessionEvents(projectId: $p, sessionId: $s, first: 500, after: $a) { nodes { id } pageInfo { hasNextPage endCursor } } }`,
      { p: project, s: session, a: after },
    );
    ids.push(...d.sessionEvents.nodes.map((n) => n.id));
    if (!d.sessionEvents.pageInfo.hasNextPage) return ids;
    after = d.sessionEvents.pageInfo.endCursor;
  }
}

async function ingest(url, token, events) {
  const d = await gql(url, token, `mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted ids } }`, { e: events });
  return d.ingestEvents.ids;
}

async function newPage() {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  return page;
}

/** Signs in through the app's own form. */
async function signIn(page, appPath, token) {
  await page.goto(`${appOrigin}${appPath}`);
  await page.fill("#token-input", token);
  await page.click("#signin");
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `${BIN} is missing: run cargo build (or cargo test) first`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  fs.mkdirSync(SHOTS, { recursive: true });
  const vitePort = await freePort();
  appOrigin = `http://127.0.0.1:${vitePort}`;
  apiPort = await freePort();
  server = await startServer(apiPort);
  // Fill the demo project (the one serve printed) through a second process.
  const demo = await run(["demo", "--duration", process.env.DEMO_DURATION ?? "8s", "--quiet", "--approval-expiry", "2s", "--long-approval-expiry", "3s"]);
  assert.match(demo, new RegExp(`the first project is the demo project ${server.project}`));
  process.env.VITE_EVENTLOG_URL = server.url;
  vite = await createServer({
    configFile: path.join(examples, "vite.config.ts"),
    server: { port: vitePort, host: "127.0.0.1", strictPort: true },
    logLevel: "warn",
  });
  await vite.listen();
  context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(tmp, "chromium-")), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await context?.close().catch(() => {});
  await vite?.close().catch(() => {});
  for (const c of children) c.kill("SIGKILL");
  fs.rmSync(tmp, { recursive: true, force: true });
});

const ANALYTICS = `query($p: UUID!, $f: EventFilter, $b: TimeBucket) { analytics(projectId: $p, filter: $f, bucket: $b) {
  totalEvents eventTypeCounts { eventType count } agentInteractions { agentId events toolCalls errors }
  errorStats { totalErrors byCode { errorCode count } byTool { toolName calls errors } }
  timeline { bucketStart events errors } approvals { required approved rejected timedOut } } }`;

test("every dashboard chart shows the numbers analytics returns for the same range", async () => {
  const page = await newPage();
  await signIn(page, "/dashboard/", server.admin);
  await page.waitForFunction(() => window.eventlogDashboard?.ready === true, null, { timeout: 15_000 });
  const shown = await page.evaluate(() => {
    const d = window.eventlogDashboard;
    const data = (id) => ({
      labels: [...d.charts[id].data.labels],
      sets: d.charts[id].data.datasets.map((s) => [...s.data]),
    });
    return {
      projectId: d.projectId,
      from: d.from,
      to: d.to,
      bucket: d.bucket,
      starts: [...d.timelineStarts],
      timeline: data("timeline"),
      types: data("types"),
      agents: data("agents"),
      codes: data("codes"),
      tools: data("tools"),
      approvals: data("approvals"),
    };
  });
  assert.equal(shown.projectId, server.project);
  const a = (
    await gql(server.url, server.admin, ANALYTICS, { p: shown.projectId, f: { from: shown.from, to: shown.to }, b: shown.bucket })
  ).analytics;
  assert.ok(a.totalEvents > 50, `the demo filled the project (${a.totalEvents} events)`);

  // Timeline: every API bucket at its place, every other bucket of the range empty.
  const byStart = new Map(a.timeline.map((p) => [new Date(p.bucketStart).toISOString(), p]));
  for (const [start] of byStart) assert.ok(shown.starts.includes(start), `bucket ${start} is on the chart`);
  shown.starts.forEach((start, i) => {
    assert.equal(shown.timeline.sets[0][i], byStart.get(start)?.events ?? 0, `events at ${start}`);
    assert.equal(shown.timeline.sets[1][i], byStart.get(start)?.errors ?? 0, `errors at ${start}`);
  });
  assert.equal(shown.timeline.sets[0].reduce((x, y) => x + y, 0), a.totalEvents);

  assert.deepEqual(shown.types.labels, a.eventTypeCounts.map((t) => t.eventType));
  assert.deepEqual(shown.types.sets, [a.eventTypeCounts.map((t) => t.count)]);
  assert.deepEqual(shown.agents.labels, a.agentInteractions.map((x) => x.agentId));
  assert.deepEqual(shown.agents.sets, [
    a.agentInteractions.map((x) => x.events),
    a.agentInteractions.map((x) => x.toolCalls),
    a.agentInteractions.map((x) => x.errors),
  ]);
  assert.deepEqual(shown.codes.labels, a.errorStats.byCode.map((c) => c.errorCode));
  assert.deepEqual(shown.codes.sets, [a.errorStats.byCode.map((c) => c.count)]);
  assert.deepEqual(shown.tools.labels, a.errorStats.byTool.map((t) => t.toolName));
  assert.deepEqual(shown.tools.sets, [a.errorStats.byTool.map((t) => t.calls), a.errorStats.byTool.map((t) => t.errors)]);
  assert.deepEqual(shown.approvals.sets, [[a.approvals.approved, a.approvals.rejected, a.approvals.timedOut]]);
  assert.ok(a.approvals.required > 0 && a.errorStats.totalErrors > 0, "the demo produced approvals and errors");
  assert.equal((await page.textContent("#kpi-events .value")).replace(/\D/g, ""), String(a.totalEvents));

  // The timeline grows live, without another analytics request.
  const analyticsRequests = [];
  page.on("request", (r) => {
    if (r.method() === "POST" && (r.postData() ?? "").includes("analytics(")) analyticsRequests.push(r.url());
  });
  const before = shown.timeline.sets[0].reduce((x, y) => x + y, 0);
  await ingest(server.url, server.service, [
    { sessionId: crypto.randomUUID(), projectId: server.project, userId: "demo-user-1", eventType: "ERROR", errorCode: "LIVE_TEST", payload: { error_message: "live" } },
  ]);
  await page.waitForFunction((n) => window.eventlogDashboard.charts.timeline.data.datasets[0].data.reduce((x, y) => x + y, 0) === n + 1, before, {
    timeout: 5_000,
  });
  const errorsNow = await page.evaluate(() => window.eventlogDashboard.charts.timeline.data.datasets[1].data.reduce((x, y) => x + y, 0));
  assert.equal(errorsNow, a.timeline.reduce((x, p) => x + p.errors, 0) + 1);
  assert.deepEqual(analyticsRequests, []);
  await page.screenshot({ path: path.join(SHOTS, "dashboard.png"), fullPage: true });
  await page.close();
});

test("the events table pages with its cursor, filters change its rows, rows expand to their payload", async () => {
  const page = await newPage();
  await signIn(page, "/dashboard/", server.admin);
  await page.waitForFunction(() => document.querySelectorAll("#events-body tr.ev").length > 0, null, { timeout: 15_000 });
  const range = await page.evaluate(() => ({ from: window.eventlogDashboard.from, to: window.eventlogDashboard.to }));
  const Q = `query($p: UUID!, $f: EventFilter, $a: String) { events(projectId: $p, filter: $f, first: 50, after: $a) { nodes { id eventType errorCode payload } pageInfo { hasNextPage endCursor } } }`;
  const p1 = (await gql(server.url, server.admin, Q, { p: server.project, f: range })).events;
  const p2 = (await gql(server.url, server.admin, Q, { p: server.project, f: range, a: p1.pageInfo.endCursor })).events;
  const rowIds = () => page.$$eval("#events-body tr.ev", (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(await rowIds(), p1.nodes.map((n) => n.id));
  assert.ok(p1.pageInfo.hasNextPage);
  await page.click("#load-more");
  await page.waitForFunction((n) => document.querySelectorAll("#events-body tr.ev").length === n, 50 + p2.nodes.length);
  assert.deepEqual(await rowIds(), [...p1.nodes, ...p2.nodes].map((n) => n.id));

  // A row expands to its payload.
  const first = p1.nodes[0];
  await page.click(`#events-body tr.ev[data-id="${first.id}"]`);
  const payload = await page.textContent(`#events-body tr.ev[data-id="${first.id}"] + tr.payload pre`);
  assert.deepEqual(JSON.parse(payload), first.payload);

  // A filter changes the rows: only TOOL_RESULT, then only errors.
  await page.fill("#f-eventTypes", "TOOL_RESULT");
  await page.click("#apply-filters");
  const tr = (await gql(server.url, server.admin, Q, { p: server.project, f: { ...range, eventTypes: ["TOOL_RESULT"] } })).events;
  await page.waitForFunction((ids) => JSON.stringify([...document.querySelectorAll("#events-body tr.ev")].map((r) => r.dataset.id)) === JSON.stringify(ids), tr.nodes.map((n) => n.id));
  const types = await page.$$eval("#events-body tr.ev td:nth-child(2)", (tds) => [...new Set(tds.map((t) => t.textContent))]);
  assert.deepEqual(types, ["TOOL_RESULT"]);
  await page.fill("#f-eventTypes", "");
  await page.selectOption("#f-hasError", "true");
  await page.click("#apply-filters");
  const errs = (await gql(server.url, server.admin, Q, { p: server.project, f: { ...range, hasError: true } })).events;
  await page.waitForFunction((ids) => JSON.stringify([...document.querySelectorAll("#events-body tr.ev")].map((r) => r.dataset.id)) === JSON.stringify(ids), errs.nodes.map((n) => n.id));
  assert.ok(errs.nodes.length > 0 && errs.nodes.every((n) => n.errorCode));
  await page.close();
});

test("the session viewer shows history, a live event within 2 s, and resumes after an outage with no gap and no duplicate", async (t) => {
  const page = await newPage();
  await signIn(page, "/dashboard/", server.admin);
  await page.waitForSelector("#events-body a.session-link", { timeout: 15_000 });
  // The session link of the table opens the viewer (same tab: the token is in sessionStorage).
  // A session of the demo with a tool call (not one made by an earlier test).
  const href = await page.$$eval("#events-body tr.ev", (rows) =>
    rows.find((r) => r.children[1].textContent === "TOOL_RESULT")?.querySelector("a.session-link")?.getAttribute("href"),
  );
  assert.ok(href, "a demo session with a tool call is in the table");
  const link = await page.$(`#events-body a.session-link[href="${href}"]`);
  const session = new URL(href, appOrigin).searchParams.get("session");
  await link.click();
  await page.waitForURL(/\/session-viewer\//);
  await page.waitForFunction(() => window.eventlogViewer?.historyLoaded && window.eventlogViewer.liveState?.kind === "live", null, { timeout: 15_000 });
  const viewerIds = () => page.evaluate(() => window.eventlogViewer.eventIds());
  const domIds = () => page.$$eval("#steps [data-ids]", (nodes) => nodes.flatMap((n) => n.dataset.ids.split(" ")));
  assert.deepEqual(await viewerIds(), await allSessionEvents(server.url, server.admin, server.project, session));
  const sessionUser = await page.evaluate(() => window.eventlogViewer.events[0].userId);

  // Live: an event ingested now appears within 2 s.
  const callId = `call_live_${Date.now()}`;
  const t0 = Date.now();
  const [reqId] = await ingest(server.url, server.service, [
    { sessionId: session, projectId: server.project, userId: sessionUser, agentId: "code-agent", eventType: "TOOL_REQUEST", toolName: "web_search", payload: { tool_call_id: callId, input: { q: "live" }, risk_level: "LOW" } },
  ]);
  await page.waitForSelector(`#steps [data-ids~="${reqId}"]`, { timeout: 2_000 });
  const latency = Date.now() - t0;
  assert.ok(latency < 2_000, `live event shown after ${latency} ms`);
  t.diagnostic(`ingest -> shown in the viewer: ${latency} ms`);
  // Its result joins the same step, with the duration.
  const [resId] = await ingest(server.url, server.service, [
    { sessionId: session, projectId: server.project, userId: sessionUser, agentId: "code-agent", eventType: "TOOL_RESULT", toolName: "web_search", payload: { tool_call_id: callId, status: "success", duration_ms: 1234, output: "ok" } },
  ]);
  await page.waitForSelector(`#steps [data-ids="${reqId} ${resId}"]`, { timeout: 2_000 });
  assert.match(await page.textContent(`#steps [data-ids="${reqId} ${resId}"]`), /1\.23 s/);

  // Outage: stop the server, ingest through a second process on the same database.
  assert.equal(await stopServer(server), 0);
  await page.waitForFunction(() => window.eventlogViewer.liveState?.kind === "down", null, { timeout: 10_000 });
  assert.match(await page.textContent("#conn-banner"), /Connection lost/);
  await page.screenshot({ path: path.join(SHOTS, "session-viewer-offline.png") });
  const second = await startServer(await freePort());
  const missed = [];
  for (let i = 0; i < 5; i++) {
    const [id] = await ingest(second.url, second.service, [
      { sessionId: session, projectId: server.project, userId: sessionUser, agentId: "ops-agent", eventType: i === 2 ? "ERROR" : "TASK_PROGRESS", errorCode: i === 2 ? "DURING_OUTAGE" : null, payload: { progress: i / 5, step: i } },
    ]);
    missed.push(id);
  }
  assert.equal(await stopServer(second), 0);
  server = await startServer(apiPort);

  // The viewer reconnects by itself, replays from afterSeq: equal to sessionEvents, in order.
  await page.waitForFunction((ids) => ids.every((id) => window.eventlogViewer.ids.has(id)), missed, { timeout: 15_000 });
  await page.waitForFunction(() => window.eventlogViewer.liveState?.kind === "live", null, { timeout: 10_000 });
  assert.match(await page.textContent("#conn-banner"), /Reconnected/);
  const expected = await allSessionEvents(server.url, server.admin, server.project, session);
  assert.deepEqual(await viewerIds(), expected);
  t.diagnostic(`after the outage: ${expected.length} events, equal to sessionEvents in order`);
  const shownIds = await domIds();
  assert.equal(shownIds.length, expected.length, "every event is shown exactly once");
  assert.deepEqual([...shownIds].sort(), [...expected].sort());
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(SHOTS, "session-viewer.png") });
  await page.close();
});

test("the session viewer says so when the token expires", async () => {
  const token = (await run(["token", "--sub", "demo-admin", "--role", "admin", "--project", server.project, "--ttl", "2s"])).trim();
  const page = await newPage();
  await signIn(page, "/session-viewer/", token);
  await page.waitForSelector(".session-item", { timeout: 10_000 });
  await page.click(".session-item");
  await page.waitForFunction(() => window.eventlogViewer?.liveState?.kind === "live", null, { timeout: 10_000 });
  // exp + the server's 5 s leeway: the subscription ends with UNAUTHENTICATED, or a
  // reconnect is refused with 4403; either way the viewer stops and says so.
  await page.waitForFunction(() => window.eventlogViewer.liveState?.kind === "expired", null, { timeout: 20_000 });
  assert.match(await page.textContent("#conn-banner"), /refused the token/);
  assert.ok(await page.isVisible("#resign"));
  await page.close();
});

test("GraphiQL renders from the server itself and answers a query and a subscription with a printed token", async () => {
  const page = await newPage();
  const external = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(server.url) && !r.url().startsWith("data:")) external.push(r.url());
  });
  await page.goto(`${server.url}/graphql`);
  await page.waitForSelector(".graphiql-query-editor .CodeMirror", { timeout: 15_000 });
  // GraphiQL picks editor changes up after a short debounce: give it a moment.
  const setEditor = async (selector, value) => {
    await page.evaluate(([s, v]) => document.querySelector(s).CodeMirror.setValue(v), [selector, value]);
    await page.waitForTimeout(500);
  };
  // Headers tab: the token serve printed.
  await page.getByRole("button", { name: "Headers" }).click();
  const headers = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror";
  await page.waitForSelector(headers);
  assert.match(await page.evaluate((s) => document.querySelector(s).CodeMirror.getValue(), headers), /Authorization/);
  await setEditor(headers, JSON.stringify({ Authorization: `Bearer ${server.admin}` }));
  await setEditor(".graphiql-query-editor .CodeMirror", `{ events(projectId: "${server.project}", first: 3) { nodes { id eventType } } }`);
  await page.click(".graphiql-execute-button");
  await page.waitForFunction(() => /"eventType"/.test(document.querySelector(".graphiql-response")?.textContent ?? ""), null, { timeout: 10_000 });
  // The schema loaded too (GraphiQL's introspection passed the server's limits).
  assert.doesNotMatch(await page.textContent(".graphiql-response"), /nested too deep|errors/);

  // Subscription over the websocket: the headers go into connection_init.
  await setEditor(".graphiql-query-editor .CodeMirror", `subscription { events(projectId: "${server.project}") { id eventType errorCode } }`);
  await page.click(".graphiql-execute-button");
  await page.waitForTimeout(1000);
  const [id] = await ingest(server.url, server.service, [
    { sessionId: crypto.randomUUID(), projectId: server.project, userId: "demo-user-1", eventType: "GRAPHIQL_LIVE", payload: {} },
  ]);
  await page.waitForFunction((x) => (document.querySelector(".graphiql-response")?.textContent ?? "").includes(x), id, { timeout: 5_000 });
  assert.deepEqual(external, [], "GraphiQL loads nothing from other hosts");
  await page.screenshot({ path: path.join(SHOTS, "graphiql.png") });
  await page.close();
});
