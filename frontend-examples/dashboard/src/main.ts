// Analytics dashboard: one project's analytics for a time range as charts (Chart.js),
// the event history with the SPEC §5 filters and cursor paging, and a timeline that
// grows live from the `events` subscription without re-fetching the range.
import { Chart, registerables, type ChartConfiguration } from "chart.js";
import {
  EVENT_FIELDS,
  type EventNode,
  GraphQLError,
  el,
  fmtDateTime,
  getProject,
  getToken,
  gql,
  onUnauthenticated,
  projectsOf,
  renderSignIn,
  renderTopbar,
  setProject,
  shortId,
} from "../../shared/eventlog";
import { LiveEvents, type LiveState } from "../../shared/live";

Chart.register(...registerables);
Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
Chart.defaults.font.size = 12;
Chart.defaults.color = "#6b7385";
Chart.defaults.plugins.legend.labels.boxWidth = 10;

const COLORS = {
  events: "#3b6fd8",
  errors: "#d1453b",
  tools: "#2f9461",
  warn: "#c77d0a",
  timeout: "#9b4dca",
  grey: "#9aa3b5",
};
const PALETTE = ["#3b6fd8", "#2f9461", "#c77d0a", "#9b4dca", "#d1453b", "#1a9bb0", "#7a8597", "#e36f9b", "#5b8c2a", "#b0683a"];

type Bucket = "MINUTE" | "HOUR" | "DAY";
const RANGES: Array<{ key: string; label: string; ms: number; bucket: Bucket }> = [
  { key: "15m", label: "Last 15 minutes", ms: 15 * 60e3, bucket: "MINUTE" },
  { key: "1h", label: "Last hour", ms: 60 * 60e3, bucket: "MINUTE" },
  { key: "6h", label: "Last 6 hours", ms: 6 * 3600e3, bucket: "HOUR" },
  { key: "24h", label: "Last 24 hours", ms: 24 * 3600e3, bucket: "HOUR" },
  { key: "7d", label: "Last 7 days", ms: 7 * 86400e3, bucket: "HOUR" },
  { key: "30d", label: "Last 30 days", ms: 30 * 86400e3, bucket: "DAY" },
];
const BUCKET_MS: Record<Bucket, number> = { MINUTE: 60e3, HOUR: 3600e3, DAY: 86400e3 };

interface Analytics {
  totalEvents: number;
  sessions: number;
  eventTypeCounts: Array<{ eventType: string; count: number }>;
  agentInteractions: Array<{ agentId: string; events: number; sessions: number; toolCalls: number; errors: number }>;
  errorStats: {
    totalErrors: number;
    errorRate: number;
    byCode: Array<{ errorCode: string; count: number }>;
    byTool: Array<{ toolName: string; calls: number; errors: number }>;
  };
  timeline: Array<{ bucketStart: string; events: number; errors: number }>;
  approvals: { required: number; approved: number; rejected: number; timedOut: number };
}

const ANALYTICS = `query Analytics($p: UUID!, $f: EventFilter, $b: TimeBucket) {
  analytics(projectId: $p, filter: $f, bucket: $b) {
    totalEvents sessions
    eventTypeCounts { eventType count }
    agentInteractions { agentId events sessions toolCalls errors }
    errorStats { totalErrors errorRate byCode { errorCode count } byTool { toolName calls errors } }
    timeline { bucketStart events errors }
    approvals { required approved rejected timedOut }
  }
}`;

const EVENTS = `query Events($p: UUID!, $f: EventFilter, $o: SortOrder, $n: Int, $after: String) {
  events(projectId: $p, filter: $f, order: $o, first: $n, after: $after) {
    nodes { ${EVENT_FIELDS} }
    pageInfo { hasNextPage endCursor }
  }
}`;

const NEWEST = `query Newest($p: UUID!) { events(projectId: $p, first: 1) { nodes { seq } } }`;

/** What the page shows; `window.eventlogDashboard` exposes it to the browser tests. */
const state = {
  projectId: "",
  rangeKey: sessionStorage.getItem("eventlog.range") ?? "1h",
  bucket: "MINUTE" as Bucket,
  from: "",
  to: "",
  ready: false,
  liveAdded: 0,
  timelineStarts: [] as string[],
  charts: {} as Record<string, Chart>,
  live: null as LiveEvents | null,
  cursor: null as string | null,
};
(window as unknown as { eventlogDashboard: typeof state }).eventlogDashboard = state;

const root = document.getElementById("app")!;

function bucketStart(iso: string, bucket: Bucket): number {
  const t = Date.parse(iso);
  return Math.floor(t / BUCKET_MS[bucket]) * BUCKET_MS[bucket];
}

function bucketLabel(iso: string, bucket: Bucket): string {
  const d = new Date(iso);
  if (bucket === "DAY") return d.toLocaleDateString([], { month: "short", day: "numeric" });
  if (bucket === "HOUR") return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hour12: false });
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function card(id: string, title: string, wide = false): { card: HTMLElement; box: HTMLElement; note: HTMLElement } {
  const note = el("span", { class: "muted" });
  const box = el("div", { class: "chart-box" }, el("canvas", { id: `chart-${id}` }));
  const c = el("section", { class: wide ? "card wide" : "card", id: `card-${id}` }, el("div", { class: "head" }, el("h3", {}, title), note), box);
  return { card: c, box, note };
}

function makeChart(id: string, config: ChartConfiguration): Chart {
  state.charts[id]?.destroy();
  const canvas = document.getElementById(`chart-${id}`) as HTMLCanvasElement;
  config.options = { responsive: true, maintainAspectRatio: false, animation: false, ...config.options };
  const chart = new Chart(canvas, config);
  state.charts[id] = chart;
  return chart;
}

function kpi(id: string, label: string): HTMLElement {
  return el("div", { class: "card kpi", id: `kpi-${id}` }, el("div", { class: "value" }, "–"), el("div", { class: "label" }, label));
}

function setKpi(id: string, value: string, bad = false): void {
  const k = document.getElementById(`kpi-${id}`)!;
  k.querySelector(".value")!.textContent = value;
  k.classList.toggle("bad", bad);
}

function livePill(): HTMLElement {
  return el("span", { class: "pill connecting", id: "live-state" }, "connecting");
}

function showLiveState(s: LiveState): void {
  const pill = document.getElementById("live-state");
  if (!pill) return;
  const [cls, text] =
    s.kind === "live"
      ? ["live", "Live"]
      : s.kind === "connecting"
        ? ["connecting", s.attempt ? "Reconnecting…" : "Connecting…"]
        : s.kind === "down"
          ? ["down", `Offline · retry in ${Math.ceil(s.retryInMs / 1000)} s`]
          : ["expired", "Token expired"];
  pill.className = `pill ${cls}`;
  pill.textContent = text;
  pill.title = s.kind === "down" || s.kind === "expired" ? s.reason : "";
  if (s.kind === "expired") renderSignIn(root, "dashboard", `Your token is no longer valid (${s.reason}). Sign in again.`);
}

function layout(projects: string[]): void {
  const projectSelect = projects.length
    ? el("select", { id: "project" }, ...projects.map((p) => el("option", { value: p }, p)))
    : el("input", { id: "project", placeholder: "project id", size: "38" });
  (projectSelect as HTMLInputElement).value = state.projectId;
  const rangeSelect = el("select", { id: "range" }, ...RANGES.map((r) => el("option", { value: r.key }, r.label)));
  rangeSelect.value = state.rangeKey;
  const refresh = el("button", { class: "ghost", id: "refresh", title: "Re-query the range" }, "Refresh");
  const controls = el("div", { class: "controls" }, el("label", {}, "Project"), projectSelect, el("label", {}, "Range"), rangeSelect, refresh, livePill());
  projectSelect.addEventListener("change", () => {
    state.projectId = (projectSelect as HTMLInputElement).value.trim();
    setProject(state.projectId);
    void load();
  });
  rangeSelect.addEventListener("change", () => {
    state.rangeKey = rangeSelect.value;
    sessionStorage.setItem("eventlog.range", state.rangeKey);
    void load();
  });
  refresh.addEventListener("click", () => void load());

  const charts = [
    card("timeline", "Events and errors over time", true),
    card("approvals", "Approvals"),
    card("types", "Event types"),
    card("agents", "Agent interactions", true),
    card("codes", "Errors by code"),
    card("tools", "Tool calls and errors", true),
  ];
  const page = el(
    "main",
    { class: "page" },
    el("div", { class: "kpis" }, kpi("events", "Events"), kpi("sessions", "Sessions"), kpi("errors", "Errors"), kpi("rate", "Error rate"), kpi("approvals", "Approvals required"), kpi("agents", "Active agents")),
    el("div", { class: "grid" }, ...charts.map((c) => c.card)),
    eventsSection(),
  );
  root.replaceChildren(renderTopbar("dashboard", [controls]), el("div", { class: "banner down", id: "error-banner", hidden: "" }), page);
}

// ---- analytics -------------------------------------------------------------

async function load(): Promise<void> {
  state.ready = false;
  state.live?.stop();
  const banner = document.getElementById("error-banner")!;
  banner.hidden = true;
  if (!/^[0-9a-f-]{36}$/i.test(state.projectId)) {
    banner.textContent = "Pick a project (a UUID from your token's projects claim).";
    banner.hidden = false;
    return;
  }
  const range = RANGES.find((r) => r.key === state.rangeKey) ?? RANGES[1];
  const now = Date.now();
  state.bucket = range.bucket;
  state.to = new Date(now).toISOString();
  state.from = new Date(now - range.ms).toISOString();
  try {
    // The resume point for the live timeline, taken before the range is read: events
    // after it that are not in the range (createdAt >= to) are added as they arrive.
    const newest = await gql<{ events: { nodes: Array<{ seq: string }> } }>(NEWEST, { p: state.projectId });
    const a = await gql<{ analytics: Analytics }>(ANALYTICS, {
      p: state.projectId,
      f: { from: state.from, to: state.to },
      b: state.bucket,
    });
    renderAnalytics(a.analytics);
    state.ready = true;
    startLive(newest.events.nodes[0]?.seq ?? "0");
    await loadEvents(true);
  } catch (e) {
    banner.textContent = e instanceof GraphQLError ? `${e.code ?? "ERROR"}: ${e.message}` : String(e);
    banner.hidden = false;
  }
}

function renderAnalytics(a: Analytics): void {
  setKpi("events", a.totalEvents.toLocaleString());
  setKpi("sessions", a.sessions.toLocaleString());
  setKpi("errors", a.errorStats.totalErrors.toLocaleString(), a.errorStats.totalErrors > 0);
  setKpi("rate", `${(a.errorStats.errorRate * 100).toFixed(1)} %`, a.errorStats.errorRate > 0.05);
  setKpi("approvals", a.approvals.required.toLocaleString());
  setKpi("agents", a.agentInteractions.length.toLocaleString());

  // Every bucket of the range, so that quiet periods show as gaps (the API lists only
  // buckets with events).
  const points = new Map(a.timeline.map((p) => [new Date(p.bucketStart).toISOString(), p]));
  const step = BUCKET_MS[state.bucket];
  state.timelineStarts = [];
  for (let t = bucketStart(state.from, state.bucket); t < Date.parse(state.to); t += step) {
    state.timelineStarts.push(new Date(t).toISOString());
  }
  makeChart("timeline", {
    type: "bar",
    data: {
      labels: state.timelineStarts.map((s) => bucketLabel(s, state.bucket)),
      datasets: [
        { label: "Events", data: state.timelineStarts.map((s) => points.get(s)?.events ?? 0), backgroundColor: COLORS.events, borderRadius: 2, order: 2 },
        { label: "Errors", data: state.timelineStarts.map((s) => points.get(s)?.errors ?? 0), backgroundColor: COLORS.errors, borderRadius: 2, order: 1 },
      ],
    },
    options: {
      scales: { x: { stacked: true, grid: { display: false }, ticks: { maxTicksLimit: 12, maxRotation: 0 } }, y: { beginAtZero: true } },
      plugins: { tooltip: { mode: "index", intersect: false } },
    },
  });

  makeChart("types", {
    type: "bar",
    data: {
      labels: a.eventTypeCounts.map((t) => t.eventType),
      datasets: [{ label: "Events", data: a.eventTypeCounts.map((t) => t.count), backgroundColor: COLORS.events, borderRadius: 3 }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true }, y: { grid: { display: false }, ticks: { autoSkip: false, font: { size: 11 } } } } },
  });

  makeChart("agents", {
    type: "bar",
    data: {
      labels: a.agentInteractions.map((x) => x.agentId),
      datasets: [
        { label: "Events", data: a.agentInteractions.map((x) => x.events), backgroundColor: COLORS.events, borderRadius: 3 },
        { label: "Tool calls", data: a.agentInteractions.map((x) => x.toolCalls), backgroundColor: COLORS.tools, borderRadius: 3 },
        { label: "Errors", data: a.agentInteractions.map((x) => x.errors), backgroundColor: COLORS.errors, borderRadius: 3 },
      ],
    },
    options: { scales: { x: { grid: { display: false } }, y: { beginAtZero: true } } },
  });

  makeChart("codes", {
    type: "bar",
    data: {
      labels: a.errorStats.byCode.map((c) => c.errorCode),
      datasets: [{ label: "Errors", data: a.errorStats.byCode.map((c) => c.count), backgroundColor: PALETTE.slice(4).concat(PALETTE), borderRadius: 3 }],
    },
    options: { plugins: { legend: { display: false } }, scales: { x: { grid: { display: false } }, y: { beginAtZero: true } } },
  });

  makeChart("tools", {
    type: "bar",
    data: {
      labels: a.errorStats.byTool.map((t) => t.toolName),
      datasets: [
        { label: "Calls", data: a.errorStats.byTool.map((t) => t.calls), backgroundColor: COLORS.tools, borderRadius: 3 },
        { label: "Errors", data: a.errorStats.byTool.map((t) => t.errors), backgroundColor: COLORS.errors, borderRadius: 3 },
      ],
    },
    options: { scales: { x: { grid: { display: false } }, y: { beginAtZero: true } } },
  });

  const ap = a.approvals;
  document.querySelector("#card-approvals .head .muted")!.textContent = `${ap.required} required`;
  makeChart("approvals", {
    type: "doughnut",
    // Chart.js types the options of a generic config loosely; this is a doughnut's.
    data: {
      labels: ["Approved", "Rejected", "Timed out"],
      datasets: [{ data: [ap.approved, ap.rejected, ap.timedOut], backgroundColor: [COLORS.tools, COLORS.errors, COLORS.timeout], borderWidth: 0 }],
    },
    options: { cutout: "62%", plugins: { legend: { position: "right" } } },
  } as ChartConfiguration<"doughnut"> as unknown as ChartConfiguration);
}

// ---- live timeline ---------------------------------------------------------

function startLive(afterSeq: string): void {
  state.live = new LiveEvents({
    projectId: state.projectId,
    afterSeq,
    onState: showLiveState,
    onEvent: (e) => addToTimeline(e),
  });
  state.live.start();
}

/** Adds one live event to its bucket (appending the bucket if it is new). Events inside
 *  the queried range are already counted by `analytics`, so only later ones count. */
function addToTimeline(e: EventNode): void {
  if (Date.parse(e.createdAt) < Date.parse(state.to)) return;
  const chart = state.charts.timeline;
  if (!chart) return;
  const start = new Date(bucketStart(e.createdAt, state.bucket)).toISOString();
  let i = state.timelineStarts.indexOf(start);
  if (i < 0) {
    // Buckets ascend; a live event's bucket is at the end or after it.
    i = state.timelineStarts.findIndex((s) => s > start);
    if (i < 0) i = state.timelineStarts.length;
    state.timelineStarts.splice(i, 0, start);
    chart.data.labels!.splice(i, 0, bucketLabel(start, state.bucket));
    chart.data.datasets[0].data.splice(i, 0, 0);
    chart.data.datasets[1].data.splice(i, 0, 0);
  }
  (chart.data.datasets[0].data as number[])[i] += 1;
  if (e.errorCode) (chart.data.datasets[1].data as number[])[i] += 1;
  chart.update("none");
  state.liveAdded += 1;
  const note = document.querySelector("#card-timeline .head .muted")!;
  note.textContent = `+${state.liveAdded} live since ${new Date(state.to).toLocaleTimeString()}`;
}

// ---- events table ----------------------------------------------------------

const FILTERS: Array<{ key: string; label: string; kind: "list" | "text" | "select"; options?: string[]; placeholder?: string; span2?: boolean }> = [
  { key: "eventTypes", label: "Event types", kind: "list", placeholder: "TOOL_RESULT, ERROR" },
  { key: "agentIds", label: "Agents", kind: "list", placeholder: "planner, coder" },
  { key: "sessionId", label: "Session", kind: "text", placeholder: "session UUID" },
  { key: "userId", label: "User (admin)", kind: "text", placeholder: "demo-user-1" },
  { key: "toolName", label: "Tool", kind: "text", placeholder: "web_search" },
  { key: "errorCode", label: "Error code", kind: "text", placeholder: "TOOL_TIMEOUT" },
  { key: "hasError", label: "Errors", kind: "select", options: ["", "true", "false"] },
  { key: "approvalStatus", label: "Approval", kind: "select", options: ["", "PENDING", "APPROVED", "REJECTED", "TIMEOUT"] },
  { key: "payloadContains", label: "Payload contains (JSON)", kind: "text", placeholder: '{"status": "error"}', span2: true },
  { key: "order", label: "Order", kind: "select", options: ["NEWEST_FIRST", "OLDEST_FIRST"] },
];

function eventsSection(): HTMLElement {
  const inputs = FILTERS.map((f) => {
    let input: HTMLElement;
    if (f.kind === "select") {
      input = el("select", { id: `f-${f.key}` }, ...f.options!.map((o) => el("option", { value: o }, o === "" ? "any" : o === "true" ? "errors only" : o === "false" ? "no errors" : o)));
    } else {
      input = el("input", { id: `f-${f.key}`, placeholder: f.placeholder ?? "" });
    }
    return el("label", f.span2 ? { class: "span2" } : {}, f.label, input);
  });
  const apply = el("button", { class: "primary", id: "apply-filters" }, "Apply");
  const clear = el("button", { id: "clear-filters" }, "Clear");
  apply.addEventListener("click", () => void loadEvents(true));
  clear.addEventListener("click", () => {
    FILTERS.forEach((f) => ((document.getElementById(`f-${f.key}`) as HTMLInputElement).value = f.key === "order" ? "NEWEST_FIRST" : ""));
    void loadEvents(true);
  });
  const more = el("button", { id: "load-more" }, "Load more");
  more.addEventListener("click", () => void loadEvents(false));
  return el(
    "section",
    { class: "card", style: "margin-top:14px", id: "events-card" },
    el("div", { class: "head" }, el("h3", {}, "Events"), el("span", { class: "muted" }, "in the selected range · click a row for its payload")),
    el("div", { class: "filters" }, ...inputs, el("div", { class: "actions" }, apply, clear)),
    el(
      "table",
      { class: "events" },
      el("thead", {}, el("tr", {}, ...["Time", "Type", "Agent", "Tool", "Status", "User", "Session"].map((h) => el("th", {}, h)))),
      el("tbody", { id: "events-body" }),
    ),
    el("div", { class: "table-foot" }, more, el("span", { class: "muted", id: "events-count" }), el("span", { class: "error", id: "events-error" })),
  );
}

function filterFromForm(): { filter: Record<string, unknown>; order: string } {
  const filter: Record<string, unknown> = { from: state.from, to: state.to };
  let order = "NEWEST_FIRST";
  for (const f of FILTERS) {
    const v = (document.getElementById(`f-${f.key}`) as HTMLInputElement).value.trim();
    if (!v) continue;
    if (f.key === "order") order = v;
    else if (f.kind === "list") filter[f.key] = v.split(",").map((s) => s.trim()).filter(Boolean);
    else if (f.key === "hasError") filter.hasError = v === "true";
    else if (f.key === "payloadContains") filter.payloadContains = JSON.parse(v);
    else filter[f.key] = v;
  }
  return { filter, order };
}

async function loadEvents(reset: boolean): Promise<void> {
  const body = document.getElementById("events-body")!;
  const more = document.getElementById("load-more") as HTMLButtonElement;
  const err = document.getElementById("events-error")!;
  err.textContent = "";
  if (reset) {
    state.cursor = null;
    body.replaceChildren();
  }
  let f: { filter: Record<string, unknown>; order: string };
  try {
    f = filterFromForm();
  } catch (e) {
    err.textContent = `Payload contains: ${String(e)}`;
    return;
  }
  more.disabled = true;
  try {
    const r = await gql<{ events: { nodes: EventNode[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } }>(EVENTS, {
      p: state.projectId,
      f: f.filter,
      o: f.order,
      n: 50,
      after: state.cursor,
    });
    for (const e of r.events.nodes) body.append(...eventRows(e));
    state.cursor = r.events.pageInfo.endCursor;
    more.disabled = !r.events.pageInfo.hasNextPage;
    more.textContent = r.events.pageInfo.hasNextPage ? "Load more" : "No more events";
    document.getElementById("events-count")!.textContent = `${body.querySelectorAll("tr.ev").length} shown`;
  } catch (e) {
    err.textContent = e instanceof GraphQLError ? `${e.code}: ${e.message}` : String(e);
  }
}

function statusTag(e: EventNode): HTMLElement | string {
  if (e.errorCode) return el("span", { class: "tag err" }, e.errorCode);
  switch (e.approvalStatus) {
    case "PENDING":
      return el("span", { class: "tag warn" }, "pending");
    case "APPROVED":
      return el("span", { class: "tag ok" }, "approved");
    case "REJECTED":
      return el("span", { class: "tag err" }, "rejected");
    case "TIMEOUT":
      return el("span", { class: "tag timeout" }, "timed out");
  }
  return "";
}

function eventRows(e: EventNode): HTMLElement[] {
  const viewer = `/session-viewer/?project=${encodeURIComponent(state.projectId)}&session=${encodeURIComponent(e.sessionId)}`;
  const link = el("a", { href: viewer, class: "mono session-link", title: e.sessionId }, shortId(e.sessionId));
  link.addEventListener("click", (ev) => ev.stopPropagation());
  const row = el(
    "tr",
    { class: e.errorCode ? "ev is-error" : "ev", "data-id": e.id },
    el("td", { class: "mono", title: e.createdAt }, fmtDateTime(e.createdAt)),
    el("td", {}, el("span", { class: "tag" }, e.eventType)),
    el("td", {}, e.agentId ?? ""),
    el("td", {}, e.toolName ?? ""),
    el("td", {}, statusTag(e)),
    el("td", {}, e.userId),
    el("td", {}, link),
  );
  const detail = el("tr", { class: "payload", hidden: "" }, el("td", { colspan: "7" }, el("pre", {}, JSON.stringify(e.payload, null, 2))));
  row.addEventListener("click", () => (detail.hidden = !detail.hidden));
  return [row, detail];
}

// ---- start -----------------------------------------------------------------

function main(): void {
  const token = getToken();
  if (!token) return renderSignIn(root, "dashboard");
  onUnauthenticated((m) => renderSignIn(root, "dashboard", `The server refused the token: ${m}`));
  const projects = projectsOf(token);
  state.projectId = getProject() ?? projects[0] ?? "";
  if (projects.length && !projects.includes(state.projectId)) state.projectId = projects[0];
  layout(projects);
  void load();
}

main();
