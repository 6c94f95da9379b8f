//! Каждая ошибка несёт `extensions.code` (issue 11, п. 7): набор неверных запросов
//! идёт по HTTP (оба медиатипа) и по websocket и проверяется по коду, а не по тексту.
//! Плюс аудит GraphQL over HTTP пакета `graphql-http` против запущенного сервера.

use eventlog::model::NewEvent;
use eventlog::query::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

/// Неверный запрос и ожидаемый код. `request` — ошибка запроса (до выполнения):
/// с `application/graphql-response+json` ответ 400 без `data`.
struct Case {
    name: &'static str,
    query: String,
    vars: Value,
    code: &'static str,
    request: bool,
}

fn corpus(p: Uuid) -> Vec<Case> {
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {} name {} }} }} }} }}",
        "{ ofType ".repeat(12),
        "}".repeat(12)
    );
    let wide = format!(
        "{{ {} }}",
        (0..30)
            .map(|i| format!("a{i}: analytics(projectId: \"{p}\") {{ totalEvents sessions eventTypeCounts {{ eventType count }} agentInteractions {{ agentId events sessions toolCalls errors lastSeenAt }} errorStats {{ totalErrors errorRate byCode {{ errorCode count }} }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let aliases = format!(
        "{{ {} }}",
        (0..31)
            .map(|i| format!("x{i}: __typename"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let page = "query($p: UUID!, $n: Int) { events(projectId: $p, first: $n) { nodes { id } } }";
    vec![
        Case {
            name: "syntax error",
            query: "{ events(".into(),
            vars: json!({}),
            code: "GRAPHQL_PARSE_FAILED",
            request: true,
        },
        Case {
            name: "unknown field",
            query: "{ nope }".into(),
            vars: json!({}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "unknown argument",
            query: format!("{{ events(projectId: \"{p}\", colour: 1) {{ nodes {{ id }} }} }}"),
            vars: json!({}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "too deep",
            query: deep,
            vars: json!({}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "too complex",
            query: wide,
            vars: json!({}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "too many aliases",
            query: aliases,
            vars: json!({}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "unused variable",
            query: "query($id: ID!) { __typename }".into(),
            vars: json!({"id": null}),
            code: "GRAPHQL_VALIDATION_FAILED",
            request: true,
        },
        Case {
            name: "variable of the wrong type",
            query: page.into(),
            vars: json!({"p": p, "n": "fifty"}),
            code: "BAD_USER_INPUT",
            request: true,
        },
        Case {
            name: "literal argument of the wrong type",
            query: format!("{{ events(projectId: \"{p}\", first: \"ten\") {{ nodes {{ id }} }} }}"),
            vars: json!({}),
            code: "BAD_USER_INPUT",
            request: true,
        },
        // Скаляр UUID async-graphql разбирает при выполнении: ошибка поля, не запроса.
        Case {
            name: "literal UUID of the wrong type",
            query: "{ events(projectId: 5) { nodes { id } } }".into(),
            vars: json!({}),
            code: "BAD_USER_INPUT",
            request: false,
        },
        Case {
            name: "malformed UUID",
            query: page.into(),
            vars: json!({"p": "not-a-uuid"}),
            code: "BAD_USER_INPUT",
            request: false,
        },
        Case {
            name: "argument value out of range",
            query: page.into(),
            vars: json!({"p": p, "n": 100000}),
            code: "BAD_USER_INPUT",
            request: false,
        },
    ]
}

/// Ошибки из ответа websocket-сообщения (`error` с массивом или `next` с `errors`).
fn ws_errors(m: &Value) -> Vec<Value> {
    match m["type"].as_str() {
        Some("error") => m["payload"].as_array().cloned().unwrap_or_default(),
        Some("next") => m["payload"]["errors"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn post(app: &TestApp, token: &str, accept: &str, query: &str, vars: &Value) -> (u16, String, Value) {
    let r = app
        .client
        .post(format!("{}/graphql", app.addr))
        .header("accept", accept)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, r.json().await.unwrap())
}

async fn malformed_requests_get_their_code_over_http_and_websocket(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let t = app.token("alice", Role::User, &[p]);
    let mut ws = app.ws("graphql-transport-ws", Some(&t)).await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    for (i, c) in corpus(p).iter().enumerate() {
        // application/json: 200 и код у каждой ошибки.
        let (status, ct, r) = post(&app, &t, "application/json", &c.query, &c.vars).await;
        assert_eq!(status, 200, "{}: {r}", c.name);
        assert!(ct.starts_with("application/json"), "{}: {ct}", c.name);
        let errors = r["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no errors in {r}", c.name));
        for e in errors {
            assert_eq!(e["extensions"]["code"], c.code, "{}: {r}", c.name);
        }
        // application/graphql-response+json: ошибка запроса — 400 без `data`.
        let (status, ct, r) = post(&app, &t, "application/graphql-response+json", &c.query, &c.vars).await;
        assert!(
            ct.starts_with("application/graphql-response+json"),
            "{}: {ct}",
            c.name
        );
        assert_eq!(r["errors"][0]["extensions"]["code"], c.code, "{}: {r}", c.name);
        if c.request {
            assert_eq!(status, 400, "{}: {r}", c.name);
            assert!(r.get("data").is_none(), "{}: data must be absent: {r}", c.name);
        } else {
            assert_eq!(status, 200, "{}: {r}", c.name);
        }
        // websocket: тот же код.
        let id = format!("op{i}");
        ws.subscribe(&id, &c.query, c.vars.clone()).await;
        let m = ws.json(5).await;
        assert_eq!(m["id"], id.as_str(), "{}: {m}", c.name);
        let errors = ws_errors(&m);
        assert!(
            !errors.is_empty(),
            "{}: expected errors over websocket, got {m}",
            c.name
        );
        for e in errors {
            assert_eq!(e["extensions"]["code"], c.code, "{}: {m}", c.name);
        }
        if m["type"] == "next" {
            assert_eq!(ws.json(5).await["type"], "complete", "{}", c.name);
        }
    }
    // Без токена — UNAUTHENTICATED (ошибка выполнения: 200 в обоих медиатипах).
    let r = app
        .graphql(
            None,
            "query($p: UUID!) { events(projectId: $p) { nodes { id } } }",
            json!({"p": p}),
        )
        .await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{r}");
}
both!(malformed_requests_get_their_code_over_http_and_websocket);

async fn the_execution_timeout_applies_over_http_and_websocket(b: Backend) {
    let app = spawn_app_with(&b, |s| s.request_timeout_ms = 1).await;
    let p = Uuid::now_v7();
    let t = app.token("alice", Role::Admin, &[p]);
    // Засев мимо GraphQL (его мутация тоже уложилась бы не в 1 мс).
    let events: Vec<NewEvent> = (0..2000)
        .map(|i| NewEvent::new(Uuid::now_v7(), format!("u{}", i % 7), p, "TOOL_REQUEST"))
        .collect();
    app.stream.broadcast_events(events).unwrap().wait().await.unwrap();
    // Аналитика по 2000 строкам — несколько запросов к базе: заведомо дольше 1 мс.
    let q = "query($p: UUID!) { analytics(projectId: $p) { totalEvents sessions errorStats { totalErrors } timeline { bucketStart events } } }";
    let r = app.graphql(Some(&t), q, json!({"p": p})).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "TIMEOUT", "{r}");
    let mut ws = app.ws("graphql-transport-ws", Some(&t)).await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    ws.subscribe("slow", q, json!({"p": p})).await;
    let m = ws.json(5).await;
    let errors = ws_errors(&m);
    assert_eq!(errors.len(), 1, "{m}");
    assert_eq!(errors[0]["extensions"]["code"], "TIMEOUT", "{m}");
}
both!(the_execution_timeout_applies_over_http_and_websocket);

/// Аудит `graphql-http` (npm): tests/graphql-http-audit/audit.mjs против сервера;
/// 0 предупреждений и 0 ошибок. Нужны node и npm: зависимости аудита тест ставит
/// сам (`npm ci` по зафиксированному package-lock.json), если их ещё нет; без node
/// тест падает с понятной причиной, а не проходит молча.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_over_http_audit_passes_with_no_warnings() {
    let app = spawn_app(&Backend::Sqlite).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql-http-audit");
    if !dir.join("node_modules/graphql-http").exists() {
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .await
            .unwrap_or_else(|e| panic!("npm is needed for the graphql-http audit: {e}"));
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    let out = tokio::process::Command::new("node")
        .arg("audit.mjs")
        .arg(format!("{}/graphql", app.addr))
        .current_dir(&dir)
        .output()
        .await
        .expect("node must be installed to run the GraphQL over HTTP audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "audit failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 warnings, 0 errors"), "{stdout}");
}
