// Live session viewer: recent sessions (`sessions`), then one session's history
// (`sessionEvents`, oldest first) followed live through the `events` subscription
// (graphql-ws, token in connection_init). On reconnect it resumes with afterSeq and
// de-duplicates by id, so the list has no gap and no duplicate. A tool call and its
// result are one step (paired by payload.tool_call_id); an approval and its outcome
// are one step (paired by payload.approval_id) with a countdown while pending.
import {
  EVENT_FIELDS,
  type EventNode,
  GraphQLError,
  decodeClaims,
  el,
  fmtTime,
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

interface SessionSummary {
  sessionId: string;
  userId: string;
  firstEventAt: string;
  lastEventAt: string;
  events: number;
  errors: number;
  agentIds: string[];
}

const SESSIONS = `query Sessions($p: UUID!, $n: Int) {
  sessions(projectId: $p, first: $n) { nodes { sessionId userId firstEventAt lastEventAt events errors agentIds } }
}`;
const HISTORY = `query History($p: UUID!, $s: UUID!, $after: String) {
  sessionEvents(projectId: $p, sessionId: $s, first: 500, after: $after) {
    nodes { ${EVENT_FIELDS} }
    pageInfo { hasNextPage endCursor }
  }
}`;

const root = document.getElementById("app")!;
const params = new URLSearchParams(location.search);

/** The viewer's model; `window.eventlogViewer` exposes it to the browser tests. */
const state = {
  projectId: "",
  sessionId: params.get("session") ?? "",
  /** The session's events in sessionEvents order: (createdAt, id) ascending. */
  events: [] as EventNode[],
  ids: new Set<string>(),
  live: null as LiveEvents | null,
  liveState: null as LiveState | null,
  historyLoaded: false,
  freshIds: new Set<string>(),
  eventIds(): string[] {
    return this.events.map((e) => e.id);
  },
};
(window as unknown as { eventlogViewer: typeof state }).eventlogViewer = state;

// ---- model -----------------------------------------------------------------

function before(a: EventNode, b: EventNode): boolean {
  const ta = Date.parse(a.createdAt);
  const tb = Date.parse(b.createdAt);
  if (ta !== tb) return ta < tb;
  // Same millisecond: the server orders by the full timestamp (microseconds), then id.
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt;
  return a.id < b.id;
}

/** Inserts an event at its place in (createdAt, id) order; false if already there. */
function insert(e: EventNode): boolean {
  if (state.ids.has(e.id)) return false;
  state.ids.add(e.id);
  let i = state.events.length;
  while (i > 0 && before(e, state.events[i - 1])) i--;
  state.events.splice(i, 0, e);
  return true;
}

type StepKind = "tool" | "approval" | "event";
interface Step {
  key: string;
  kind: StepKind;
  events: EventNode[];
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : typeof v === "number" ? String(v) : undefined;
}

/** Folds events into steps: tool call + result, approval + outcome, the rest alone. */
function steps(): Step[] {
  const out: Step[] = [];
  const tools = new Map<string, Step>();
  const approvals = new Map<string, Step>();
  for (const e of state.events) {
    const p = e.payload ?? {};
    const callId = str(p.tool_call_id);
    const approvalId = str(p.approval_id);
    if (e.eventType === "TOOL_REQUEST" && callId) {
      const s: Step = { key: `tool:${callId}`, kind: "tool", events: [e] };
      tools.set(callId, s);
      out.push(s);
    } else if (e.eventType === "TOOL_RESULT" && callId && tools.has(callId)) {
      tools.get(callId)!.events.push(e);
    } else if (e.eventType === "APPROVAL_REQUIRED" && approvalId) {
      const s: Step = { key: `approval:${approvalId}`, kind: "approval", events: [e] };
      approvals.set(approvalId, s);
      out.push(s);
    } else if (e.eventType.startsWith("APPROVAL_") && approvalId && approvals.has(approvalId)) {
      approvals.get(approvalId)!.events.push(e);
    } else {
      out.push({ key: `event:${e.id}`, kind: "event", events: [e] });
    }
  }
  return out;
}

// ---- rendering -------------------------------------------------------------

function pre(label: string, value: unknown): HTMLElement {
  return el("details", {}, el("summary", {}, label), el("pre", {}, JSON.stringify(value, null, 2)));
}

/** Clock time with milliseconds: many steps of one session share a second. */
function clock(iso: string): string {
  const d = new Date(iso);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function fmtMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function toolStep(s: Step): HTMLElement {
  const req = s.events[0];
  const res = s.events.find((e) => e.eventType === "TOOL_RESULT");
  const p = req.payload;
  const node = el("div", {});
  let cls = "step kind-tool";
  let status: HTMLElement;
  if (!res) {
    status = el("span", { class: "tag warn" }, "running…");
  } else if (res.errorCode) {
    cls += " error";
    status = el("span", { class: "tag err" }, res.errorCode);
  } else {
    cls += " ok";
    status = el("span", { class: "tag ok" }, str(res.payload.status) ?? "success");
  }
  const duration = res
    ? Number(res.payload.duration_ms ?? Date.parse(res.createdAt) - Date.parse(req.createdAt))
    : null;
  node.className = cls;
  node.append(
    el("div", { class: "time" }, clock(req.createdAt)),
    el(
      "div",
      { class: "main" },
      el(
        "div",
        { class: "line" },
        el("span", { class: "kind" }, "TOOL"),
        el("span", { class: "what" }, req.toolName ?? "tool"),
        status,
        duration != null ? el("span", { class: "tag", title: "duration" }, fmtMs(duration)) : null,
        str(p.risk_level) ? el("span", { class: `tag ${p.risk_level === "HIGH" || p.risk_level === "CRITICAL" ? "warn" : ""}` }, `risk ${p.risk_level}`) : null,
        el("span", { class: "meta" }, req.agentId ?? ""),
      ),
      p.input !== undefined ? pre("input", p.input) : null,
      res ? pre(res.errorCode ? "error" : "output", res.payload.output ?? res.payload) : null,
    ),
  );
  return node;
}

function approvalStep(s: Step): HTMLElement {
  const req = s.events[0];
  const outcome = s.events.find((e) => e.eventType === "APPROVAL_RESOLVED" || e.eventType === "APPROVAL_TIMEOUT");
  const warned = s.events.some((e) => e.eventType === "APPROVAL_TIMEOUT_WARNING");
  const p = req.payload;
  let cls = "step";
  let status: Array<HTMLElement | string>;
  if (!outcome) {
    cls += " pending";
    const expires = str(p.expires_at);
    status = [
      el("span", { class: "tag warn" }, "awaiting approval"),
      expires ? el("span", { class: "countdown", "data-expires": expires }, countdown(expires)) : "",
      warned ? el("span", { class: "tag warn" }, "expiry warning sent") : "",
    ];
  } else if (outcome.eventType === "APPROVAL_TIMEOUT") {
    cls += " timeout";
    status = [el("span", { class: "tag timeout" }, "timed out"), el("span", { class: "meta" }, `after ${fmtMs(Number(outcome.payload.waited_ms ?? 0))}`)];
  } else if (outcome.approvalStatus === "REJECTED") {
    cls += " rejected";
    status = [
      el("span", { class: "tag err" }, "rejected"),
      el("span", { class: "meta" }, `by ${str(outcome.payload.resolved_by) ?? "?"}${str(outcome.payload.comment) ? ` — “${outcome.payload.comment}”` : ""} after ${fmtMs(Number(outcome.payload.wait_ms ?? 0))}`),
    ];
  } else {
    cls += " approved";
    status = [
      el("span", { class: "tag ok" }, "approved"),
      el("span", { class: "meta" }, `by ${str(outcome.payload.resolved_by) ?? "?"} after ${fmtMs(Number(outcome.payload.wait_ms ?? 0))}`),
    ];
  }
  return el(
    "div",
    { class: cls },
    el("div", { class: "time" }, clock(req.createdAt)),
    el(
      "div",
      { class: "main" },
      el("div", { class: "line" }, el("span", { class: "kind approval" }, "APPROVAL"), el("span", { class: "what" }, req.toolName ?? "tool"), ...status),
      el("div", { class: "meta" }, [str(p.risk_level) && `risk ${p.risk_level}`, str(p.reason)].filter(Boolean).join(" · ")),
    ),
  );
}

function summary(e: EventNode): string {
  const p = e.payload;
  switch (e.eventType) {
    case "AGENT_SWITCHED":
      return `→ ${str(p.to_agent_id) ?? e.agentId ?? ""}${str(p.reason) ? ` (${p.reason})` : ""}`;
    case "DIRECT_AGENT_CALL":
      return `${str(p.agent_name) ?? e.agentId ?? ""}: ${str(p.input) ?? ""}`;
    case "TASK_PLAN_CREATED":
      return `${Array.isArray(p.steps) ? p.steps.length : "?"} steps`;
    case "TASK_STARTED":
    case "TASK_COMPLETED":
      return `${str(p.step) ?? str(p.task_id) ?? ""}${p.duration_ms != null ? ` · ${fmtMs(Number(p.duration_ms))}` : ""}`;
    case "CONTEXT_RETRIEVED":
      return `${str(p.query) ?? ""}`;
    case "ERROR":
      return `${str(p.error_message) ?? ""}${str(p.source) ? ` (${p.source})` : ""}`;
    case "MODEL_CALL":
      return `${str(p.model) ?? ""} · ${p.input_tokens ?? "?"} → ${p.output_tokens ?? "?"} tokens`;
    case "TASK_QUEUED":
      return `position ${p.queue_position ?? "?"}`;
    case "TASK_DEQUEUED":
      return `worker ${p.worker_id ?? "?"} after ${fmtMs(Number(p.wait_ms ?? 0))}`;
    default:
      return "";
  }
}

const MINOR = new Set(["TASK_PROGRESS", "TASK_QUEUED", "TASK_DEQUEUED", "TASK_STARTED", "TASK_COMPLETED", "LOG"]);

function eventStep(s: Step): HTMLElement {
  const e = s.events[0];
  const isError = !!e.errorCode || e.eventType === "ERROR";
  const cls = isError ? "step error" : MINOR.has(e.eventType) ? "step minor" : "step";
  const progress =
    e.eventType === "TASK_PROGRESS" && typeof e.payload.progress === "number"
      ? el("span", { class: "progress" }, el("span", { style: `width:${Math.round(Number(e.payload.progress) * 100)}%` }))
      : null;
  return el(
    "div",
    { class: cls },
    el("div", { class: "time" }, clock(e.createdAt)),
    el(
      "div",
      { class: "main" },
      el(
        "div",
        { class: "line" },
        el("span", { class: isError ? "tag err" : "tag" }, e.eventType),
        e.errorCode && e.eventType !== e.errorCode ? el("span", { class: "tag err" }, e.errorCode) : null,
        progress,
        el("span", { class: "meta" }, [e.agentId, summary(e)].filter(Boolean).join(" · ")),
      ),
      isError || !MINOR.has(e.eventType) ? pre("payload", e.payload) : null,
    ),
  );
}

function countdown(expiresAt: string): string {
  const left = Math.max(0, Date.parse(expiresAt) - Date.now());
  return left > 0 ? `expires in ${Math.ceil(left / 1000)} s` : "expiring…";
}

function renderSteps(): void {
  const box = document.getElementById("steps");
  if (!box) return;
  const atBottom = box.parentElement!.scrollTop + box.parentElement!.clientHeight >= box.parentElement!.scrollHeight - 40;
  const open = new Set([...box.querySelectorAll("[data-key]")].filter((n) => n.querySelector("details[open]")).map((n) => n.getAttribute("data-key")));
  const nodes = steps().map((s) => {
    const node = s.kind === "tool" ? toolStep(s) : s.kind === "approval" ? approvalStep(s) : eventStep(s);
    node.setAttribute("data-key", s.key);
    node.setAttribute("data-ids", s.events.map((e) => e.id).join(" "));
    if (s.events.some((e) => state.freshIds.has(e.id))) node.classList.add("fresh");
    if (open.has(s.key)) node.querySelectorAll("details").forEach((d) => (d.open = true));
    return node;
  });
  state.freshIds.clear();
  box.replaceChildren(...(nodes.length ? nodes : [el("div", { class: "placeholder" }, "No events in this session yet.")]));
  const errors = state.events.filter((e) => e.errorCode).length;
  const pending = box.querySelectorAll(".step.pending").length;
  document.getElementById("counters")!.replaceChildren(
    el("span", { class: "tag", id: "count-events" }, `${state.events.length} events`),
    el("span", { class: errors ? "tag err" : "tag" }, `${errors} errors`),
    el("span", { class: pending ? "tag warn" : "tag" }, `${pending} pending approvals`),
  );
  if (atBottom) box.parentElement!.scrollTop = box.parentElement!.scrollHeight;
}

function banner(kind: "down" | "resumed" | "expired" | null, text = ""): void {
  const b = document.getElementById("conn-banner")!;
  b.hidden = kind === null;
  b.className = `banner ${kind ?? ""}`;
  b.textContent = text;
}

function showLiveState(s: LiveState): void {
  const previous = state.liveState;
  state.liveState = s;
  const pill = document.getElementById("live-state")!;
  const seq = state.live?.lastSeq ?? "0";
  switch (s.kind) {
    case "connecting":
      pill.className = "pill connecting";
      pill.textContent = s.attempt ? "Reconnecting…" : "Connecting…";
      break;
    case "live":
      pill.className = "pill live";
      pill.textContent = "Live";
      if (s.resumedFrom !== null || previous?.kind === "down") {
        banner("resumed", `Reconnected at ${new Date().toLocaleTimeString()} — resumed after seq ${s.resumedFrom ?? seq}; missed events were replayed, none twice.`);
        void loadSessions();
      }
      break;
    case "down":
      pill.className = "pill down";
      pill.textContent = "Disconnected";
      banner("down", `Connection lost (${s.reason}). Retrying in ${Math.ceil(s.retryInMs / 1000)} s; will resume after seq ${seq}.`);
      break;
    case "expired":
      pill.className = "pill expired";
      pill.textContent = "Token expired";
      banner("expired", `The server refused the token (${s.reason}). Live updates stopped — sign in with a fresh token.`);
      document.getElementById("resign")!.hidden = false;
      break;
  }
}

// ---- data ------------------------------------------------------------------

async function loadSessions(): Promise<void> {
  const list = document.getElementById("session-list")!;
  try {
    const r = await gql<{ sessions: { nodes: SessionSummary[] } }>(SESSIONS, { p: state.projectId, n: 40 });
    list.replaceChildren(
      ...r.sessions.nodes.map((s) => {
        const a = el(
          "a",
          { class: s.sessionId === state.sessionId ? "session-item active" : "session-item", href: `?project=${state.projectId}&session=${s.sessionId}`, "data-session": s.sessionId },
          el("div", { class: "top" }, el("span", { class: "mono" }, shortId(s.sessionId)), el("span", { class: "muted" }, fmtTime(s.lastEventAt))),
          el("div", { class: "sub" }, `${s.userId} · ${s.agentIds.join(", ") || "no agent"}`),
          el("div", { class: "row", style: "margin-top:4px" }, el("span", { class: "tag" }, `${s.events} events`), s.errors ? el("span", { class: "tag err" }, `${s.errors} errors`) : null),
        );
        a.addEventListener("click", (ev) => {
          ev.preventDefault();
          history.pushState(null, "", a.getAttribute("href"));
          void openSession(s.sessionId);
        });
        return a;
      }),
    );
    if (!r.sessions.nodes.length) list.replaceChildren(el("div", { class: "placeholder" }, "No sessions yet. Run `eventlog demo`."));
  } catch (e) {
    list.replaceChildren(el("div", { class: "placeholder error" }, e instanceof GraphQLError ? e.message : String(e)));
  }
}

async function openSession(sessionId: string): Promise<void> {
  state.live?.stop();
  state.sessionId = sessionId;
  state.events = [];
  state.ids = new Set();
  state.historyLoaded = false;
  banner(null);
  document.querySelectorAll(".session-item").forEach((n) => n.classList.toggle("active", n.getAttribute("data-session") === sessionId));
  const detail = document.getElementById("detail")!;
  detail.replaceChildren(
    el(
      "div",
      { class: "detail-head" },
      el("div", {}, el("div", { class: "title mono" }, sessionId), el("div", { class: "facts", id: "facts" })),
      el("span", { class: "spacer" }),
      el("div", { class: "counters", id: "counters" }),
      el("span", { class: "pill connecting", id: "live-state" }, "Loading…"),
    ),
    el("div", { class: "steps", id: "steps" }, el("div", { class: "placeholder" }, "Loading history…")),
  );
  try {
    let after: string | null = null;
    for (;;) {
      const r: { sessionEvents: { nodes: EventNode[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } } = await gql(HISTORY, {
        p: state.projectId,
        s: sessionId,
        after,
      });
      r.sessionEvents.nodes.forEach(insert);
      if (!r.sessionEvents.pageInfo.hasNextPage) break;
      after = r.sessionEvents.pageInfo.endCursor;
    }
  } catch (e) {
    document.getElementById("steps")!.replaceChildren(el("div", { class: "placeholder error" }, e instanceof GraphQLError ? e.message : String(e)));
    return;
  }
  if (state.sessionId !== sessionId) return;
  state.historyLoaded = true;
  const first = state.events[0];
  document.getElementById("facts")!.replaceChildren(
    ...(first ? [el("span", {}, `user ${first.userId}`), el("span", {}, `started ${new Date(first.createdAt).toLocaleString()}`)] : []),
  );
  renderSteps();
  const detailBox = document.getElementById("detail")!;
  detailBox.scrollTop = detailBox.scrollHeight;
  // Resume point: the highest seq of the history; the server replays anything after it.
  const maxSeq = state.events.reduce((m, e) => (BigInt(e.seq) > m ? BigInt(e.seq) : m), 0n);
  state.live = new LiveEvents({
    projectId: state.projectId,
    filter: { sessionId },
    afterSeq: maxSeq.toString(),
    seen: state.ids,
    onState: showLiveState,
    onEvent: (e) => {
      if (insert(e)) {
        state.freshIds.add(e.id);
        renderSteps();
      }
    },
  });
  state.live.start();
}

function layout(projects: string[]): void {
  const projectSelect = projects.length
    ? el("select", { id: "project" }, ...projects.map((p) => el("option", { value: p }, p)))
    : el("input", { id: "project", placeholder: "project id", size: "38" });
  (projectSelect as HTMLInputElement).value = state.projectId;
  projectSelect.addEventListener("change", () => {
    state.projectId = (projectSelect as HTMLInputElement).value.trim();
    setProject(state.projectId);
    state.live?.stop();
    history.pushState(null, "", `?project=${state.projectId}`);
    void loadSessions();
  });
  const resign = el("button", { class: "primary", id: "resign", hidden: "" }, "Sign in again");
  resign.addEventListener("click", () => renderSignIn(root, "session viewer", "Paste a fresh token."));
  const refresh = el("button", { class: "ghost" }, "↻");
  refresh.title = "Refresh the list";
  refresh.addEventListener("click", () => void loadSessions());
  root.replaceChildren(
    renderTopbar("viewer", [el("span", { class: "muted" }, "Project"), projectSelect, resign]),
    el("div", { class: "banner", id: "conn-banner", hidden: "" }),
    el(
      "div",
      { class: "layout" },
      el("aside", { class: "sidebar" }, el("div", { class: "head" }, el("h3", {}, "Recent sessions"), refresh), el("div", { id: "session-list" })),
      el("section", { class: "detail", id: "detail" }, el("div", { class: "placeholder" }, "Pick a session on the left.")),
    ),
  );
}

function main(): void {
  const token = getToken();
  if (!token) return renderSignIn(root, "session viewer");
  onUnauthenticated((m) => renderSignIn(root, "session viewer", `The server refused the token: ${m}`));
  const projects = projectsOf(token);
  state.projectId = getProject() ?? projects[0] ?? "";
  const claims = decodeClaims(token);
  layout(projects);
  void loadSessions();
  if (state.sessionId) void openSession(state.sessionId);
  // Countdowns of pending approvals, and a token-expiry warning.
  window.setInterval(() => {
    document.querySelectorAll<HTMLElement>("[data-expires]").forEach((n) => (n.textContent = countdown(n.dataset.expires!)));
    if (claims && claims.exp * 1000 < Date.now() && state.liveState?.kind !== "expired") {
      document.getElementById("live-state")?.setAttribute("title", "the token has expired; the server will end the subscription");
    }
  }, 1000);
  window.setInterval(() => void loadSessions(), 15_000);
  window.addEventListener("popstate", () => {
    const s = new URLSearchParams(location.search).get("session");
    if (s) void openSession(s);
  });
}

main();
