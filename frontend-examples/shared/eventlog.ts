// What both apps share: the server URL (the one setting), the token kept in
// sessionStorage, GraphQL over fetch, the websocket client and the sign-in form.
import { createClient, type Client } from "graphql-ws";

/** eventlog's base URL: VITE_EVENTLOG_URL (frontend-examples/.env). */
export const SERVER_URL: string = (import.meta.env.VITE_EVENTLOG_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
export const WS_URL = SERVER_URL.replace(/^http/, "ws") + "/graphql/ws";

const TOKEN_KEY = "eventlog.token";
const PROJECT_KEY = "eventlog.project";

export interface Claims {
  sub: string;
  role?: string;
  projects?: string[];
  exp: number;
}

export interface EventNode {
  id: string;
  seq: string;
  sessionId: string;
  userId: string;
  agentId: string | null;
  eventType: string;
  payload: Record<string, unknown>;
  createdAt: string;
  errorCode: string | null;
  toolName: string | null;
  approvalStatus: string | null;
}

export const EVENT_FIELDS =
  "id seq sessionId userId agentId eventType payload createdAt errorCode toolName approvalStatus";

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
}

export function getProject(): string | null {
  return new URLSearchParams(location.search).get("project") ?? sessionStorage.getItem(PROJECT_KEY);
}

export function setProject(project: string): void {
  sessionStorage.setItem(PROJECT_KEY, project);
}

/** The token's claims (not verified: the server does that; used to list projects and show expiry). */
export function decodeClaims(token: string): Claims | null {
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as Claims;
  } catch {
    return null;
  }
}

export class GraphQLError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** Subscribers told when the server says the token is no longer good. */
const unauthenticated: Array<(message: string) => void> = [];
export function onUnauthenticated(f: (message: string) => void): void {
  unauthenticated.push(f);
}

/** One GraphQL operation over POST /graphql with the signed-in token. */
export async function gql<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const token = getToken();
  let resp: Response;
  try {
    resp = await fetch(SERVER_URL + "/graphql", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new GraphQLError(`cannot reach eventlog at ${SERVER_URL} (${String(e)})`, "NETWORK");
  }
  const body = (await resp.json().catch(() => ({}))) as {
    data?: T;
    errors?: Array<{ message: string; extensions?: { code?: string } }>;
  };
  if (body.errors?.length) {
    const e = body.errors[0];
    const code = e.extensions?.code;
    if (code === "UNAUTHENTICATED") unauthenticated.forEach((f) => f(e.message));
    throw new GraphQLError(e.message, code);
  }
  if (!body.data) throw new GraphQLError(`HTTP ${resp.status}`, "INTERNAL");
  return body.data;
}

/** A graphql-ws client that sends the token in connection_init. No automatic retries:
 *  the apps resume themselves with afterSeq (see session-viewer). */
export function wsClient(on: {
  connected?: () => void;
  closed?: (code: number | undefined, reason: string) => void;
}): Client {
  return createClient({
    url: WS_URL,
    lazy: true,
    retryAttempts: 0,
    connectionParams: () => ({ Authorization: `Bearer ${getToken() ?? ""}` }),
    on: {
      connected: () => on.connected?.(),
      closed: (ev) => {
        const ce = ev as CloseEvent | undefined;
        on.closed?.(ce?.code, ce?.reason ?? "");
      },
    },
  });
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Array<Node | string | null | undefined>
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

/** A short form of a UUID: its last 8 hex digits (v7 ids share their time prefix). */
export function shortId(id: string): string {
  return "…" + id.slice(-8);
}

export function fmtTime(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

export function fmtDateTime(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** Sign-in card: paste a token (as printed by `eventlog serve` / `demo` / `token`). */
export function renderSignIn(root: HTMLElement, app: string, message?: string): void {
  const input = el("textarea", { id: "token-input", rows: "4", placeholder: "eyJhbGciOiJIUzI1NiIs…", spellcheck: "false" });
  const error = el("p", { class: "error", id: "signin-error" }, message ?? "");
  const button = el("button", { id: "signin", class: "primary", type: "submit" }, "Sign in");
  const form = el(
    "form",
    { class: "card signin" },
    el("h2", {}, `Sign in to the ${app}`),
    el("p", { class: "muted" }, "Paste a token printed by ", el("code", {}, "eventlog serve"), ", ", el("code", {}, "eventlog demo"), " or ", el("code", {}, "eventlog token"), ". It stays in this tab only (sessionStorage)."),
    input,
    error,
    el("div", { class: "row" }, button, el("span", { class: "muted" }, `Server: ${SERVER_URL}`)),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    const claims = decodeClaims(token);
    if (!claims) {
      error.textContent = "This is not a JWT.";
      return;
    }
    if (claims.exp * 1000 < Date.now()) {
      error.textContent = "This token has expired; mint a new one with `eventlog token`.";
      return;
    }
    setToken(token);
    location.reload();
  });
  root.replaceChildren(form);
}

/** Header with the brand, the app's nav and the signed-in user. */
export function renderTopbar(active: "dashboard" | "viewer", extra: Node[] = []): HTMLElement {
  const claims = getToken() ? decodeClaims(getToken()!) : null;
  const bar = el(
    "header",
    { class: "topbar" },
    el("a", { class: "brand", href: "/" }, "eventlog"),
    el("a", { class: active === "dashboard" ? "nav active" : "nav", href: "/dashboard/" }, "Dashboard"),
    el("a", { class: active === "viewer" ? "nav active" : "nav", href: "/session-viewer/" }, "Sessions"),
    el("span", { class: "spacer" }),
    ...extra,
  );
  if (claims) {
    const out = el("button", { class: "ghost", id: "signout" }, "Sign out");
    out.addEventListener("click", signOut);
    bar.append(el("span", { class: "who", title: `expires ${new Date(claims.exp * 1000).toLocaleString()}` }, `${claims.sub} · ${claims.role ?? "user"}`), out);
  }
  return bar;
}

/** Projects the token names; a user token without the claim must type one in. */
export function projectsOf(token: string): string[] {
  return decodeClaims(token)?.projects ?? [];
}
