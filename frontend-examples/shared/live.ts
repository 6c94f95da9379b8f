// A live `events` subscription that survives disconnects: on every (re)connect it
// subscribes with afterSeq = the last seq it saw, so the server replays what was
// missed and continues live; events are de-duplicated by id (the spec's rule for
// clients). Close 4403 (bad or expired token at connection_init) and an
// UNAUTHENTICATED error (the token expired during the subscription) stop it for good.
import type { Client } from "graphql-ws";
import { EVENT_FIELDS, type EventNode, wsClient } from "./eventlog";

export type LiveState =
  | { kind: "connecting"; attempt: number }
  | { kind: "live"; resumedFrom: string | null }
  | { kind: "down"; reason: string; retryInMs: number }
  | { kind: "expired"; reason: string };

export interface LiveOptions {
  projectId: string;
  filter?: Record<string, unknown>;
  /** Resume point: replay events after this seq first (null = live only). */
  afterSeq: string | null;
  /** Ids already shown (so a replay does not duplicate them). */
  seen?: Iterable<string>;
  onEvent: (e: EventNode) => void;
  onState: (s: LiveState) => void;
}

const QUERY = `subscription Live($p: UUID!, $f: EventFilter, $a: String) {
  events(projectId: $p, filter: $f, afterSeq: $a) { ${EVENT_FIELDS} }
}`;

export class LiveEvents {
  private client: Client | null = null;
  private dispose: (() => void) | null = null;
  private timer: number | undefined;
  private attempt = 0;
  private stopped = false;
  private generation = 0;
  private readonly seen: Set<string>;
  /** The seq of the last event delivered (the resume point). */
  lastSeq: string | null;

  constructor(private readonly opts: LiveOptions) {
    this.lastSeq = opts.afterSeq;
    this.seen = new Set(opts.seen ?? []);
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    this.teardown();
  }

  private teardown(): void {
    this.generation++;
    this.dispose?.();
    this.dispose = null;
    void this.client?.dispose();
    this.client = null;
  }

  private connect(): void {
    this.teardown();
    const gen = this.generation;
    const resumedFrom = this.attempt > 0 ? this.lastSeq : null;
    this.opts.onState({ kind: "connecting", attempt: this.attempt });
    let closeCode: number | undefined;
    this.client = wsClient({
      connected: () => {
        if (gen !== this.generation) return;
        this.opts.onState({ kind: "live", resumedFrom });
        this.attempt = 0;
      },
      closed: (code) => {
        closeCode = code;
      },
    });
    this.dispose = this.client.subscribe<{ events: EventNode }>(
      { query: QUERY, variables: { p: this.opts.projectId, f: this.opts.filter ?? null, a: this.lastSeq } },
      {
        next: (result) => {
          if (gen !== this.generation) return;
          if (result.errors?.length) {
            const e = result.errors[0] as { message: string; extensions?: { code?: string } };
            const code = e.extensions?.code;
            if (code === "UNAUTHENTICATED") return this.expire(e.message);
            // LAGGED and the rest: resume from the last seq seen.
            return this.retry(`${code ?? "error"}: ${e.message}`, code === "LAGGED" ? 0 : undefined);
          }
          const ev = result.data?.events;
          if (!ev) return;
          this.lastSeq = ev.seq;
          if (this.seen.has(ev.id)) return;
          this.seen.add(ev.id);
          this.opts.onEvent(ev);
        },
        error: (err) => {
          if (gen !== this.generation) return;
          const code = (err as CloseEvent)?.code ?? closeCode;
          const reason = (err as CloseEvent)?.reason || (err instanceof Error ? err.message : "");
          if (code === 4403) return this.expire(reason || "token rejected");
          this.retry(code ? `connection closed (${code}${reason ? `: ${reason}` : ""})` : "connection lost");
        },
        complete: () => {
          if (gen !== this.generation) return;
          this.retry("the server ended the subscription");
        },
      },
    );
  }

  private expire(reason: string): void {
    this.stop();
    this.opts.onState({ kind: "expired", reason });
  }

  private retry(reason: string, delayMs?: number): void {
    if (this.stopped) return;
    this.teardown();
    this.attempt++;
    const wait = delayMs ?? Math.min(5000, 500 * 2 ** Math.min(this.attempt - 1, 4));
    this.opts.onState({ kind: "down", reason, retryInMs: wait });
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.connect(), wait);
  }
}
