#!/usr/bin/env python3
# Usage: python3 docs/scripts/sqlite_sync.py ROWS BATCH ROUNDS (docs/performance.md).
# Raw SQLite cost of synchronous=FULL vs NORMAL (WAL), the event_logs shape, ~330-byte payloads.
import sqlite3, os, time, uuid, json, statistics, sys, tempfile
rows_total = int(sys.argv[1]); batch = int(sys.argv[2]); rounds = int(sys.argv[3])
payload = json.dumps({"tool_call_id": "call_000000000001", "agent_name": "research-assistant",
    "input": {"query": "quarterly revenue by region and product line", "top_k": 8},
    "risk_level": "LOW", "risk_factors": ["network", "read_only"], "duration_ms": 1234,
    "status": "success", "note": "x" * 60})
def run(mode):
    path = os.path.join(tempfile.gettempdir(), "eventlog-sqlite-sync.db")
    for s in ("", "-wal", "-shm"):
        try: os.remove(path + s)
        except FileNotFoundError: pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute(f"PRAGMA synchronous={mode}")
    c.execute("CREATE TABLE event_logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, session_id TEXT, user_id TEXT, project_id TEXT, event_type TEXT, payload TEXT, created_at TEXT)")
    c.execute("CREATE INDEX i1 ON event_logs (project_id, created_at, id)")
    t = time.perf_counter()
    for b in range(rows_total // batch):
        c.execute("BEGIN")
        c.executemany("INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
            [(str(uuid.uuid4()), "s", "u", "p", "TOOL_REQUEST", payload, "2026-12-04T10:00:00.000000Z") for _ in range(batch)])
        c.execute("COMMIT")
    r = rows_total / (time.perf_counter() - t); c.close(); return r
res = {"FULL": [], "NORMAL": []}
for i in range(rounds):
    for m in (["FULL", "NORMAL"] if i % 2 == 0 else ["NORMAL", "FULL"]):
        res[m].append(run(m))
for m, v in res.items():
    print(f"batch {batch}: synchronous={m} median {statistics.median(v):.0f} rows/s  runs {[round(x) for x in v]}")
