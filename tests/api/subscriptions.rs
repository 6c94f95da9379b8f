//! Подписки по настоящему websocket: повтор и живые события, изоляция и фильтр,
//! LAGGED, истечение токена, коды закрытия 4403/4408/4409, предел подписок,
//! устаревший протокол graphql-ws.

use std::time::Duration;

use eventlog::query::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, WsEvent, spawn_app, spawn_app_with};

const SUB: &str = "subscription($p: UUID!, $f: EventFilter, $a: String) {
  events(projectId: $p, filter: $f, afterSeq: $a) { id seq userId eventType session { events } } }";

fn ev(p: Uuid, user: Option<&str>, ty: &str) -> Value {
    json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": ty, "userId": user})
}

/// Код ошибки операции: `error` (ошибка проверки запроса) или `next` с errors
/// (ошибка выполнения поля) — оба вида допускает graphql-transport-ws.
fn op_code(m: &Value) -> &str {
    let err = if m["payload"].is_array() {
        &m["payload"][0]
    } else {
        &m["payload"]["errors"][0]
    };
    err["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {m}"))
}

async fn ack(ws: &mut crate::helpers::Ws) {
    let m = ws.json(5).await;
    assert_eq!(m["type"], "connection_ack", "{m}");
}

async fn replay_then_live_with_scope_and_filter_applied(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let service = app.token("svc", Role::Service, &[p]);
    let alice = app.token("alice", Role::User, &[p]);
    // До подписки: 3 события alice и 3 чужих.
    let before: Vec<Value> = (0..3)
        .flat_map(|_| {
            [
                ev(p, Some("alice"), "TOOL_REQUEST"),
                ev(p, Some("bob"), "TOOL_REQUEST"),
            ]
        })
        .collect();
    app.ingest(&service, Value::Array(before)).await;
    let mut ws = app.ws("graphql-transport-ws", Some(&alice)).await;
    ack(&mut ws).await;
    ws.subscribe(
        "1",
        SUB,
        json!({"p": p, "a": "0", "f": {"eventTypes": ["TOOL_REQUEST", "ERROR"]}}),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = ws.json(10).await;
        assert_eq!(m["type"], "next", "{m}");
        got.push(m["payload"]["data"]["events"].clone());
    }
    // Живые: alice — подходящий тип, неподходящий тип, событие bob.
    app.ingest(
        &service,
        json!([
            ev(p, Some("bob"), "ERROR"),
            ev(p, Some("alice"), "TASK_STARTED"),
            ev(p, Some("alice"), "ERROR")
        ]),
    )
    .await;
    let m = ws.json(10).await;
    got.push(m["payload"]["data"]["events"].clone());
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|e| e["userId"] == "alice"), "{got:?}");
    assert_eq!(got[3]["eventType"], "ERROR");
    let seqs: Vec<i64> = got
        .iter()
        .map(|e| e["seq"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(got[0]["session"]["events"], 1);
    // Переподключение с последним seq ничего не теряет и не повторяет.
    let last = got[2]["seq"].as_str().unwrap().to_owned();
    let mut ws2 = app.ws("graphql-transport-ws", Some(&alice)).await;
    ack(&mut ws2).await;
    ws2.subscribe(
        "r",
        SUB,
        json!({"p": p, "a": last, "f": {"eventTypes": ["TOOL_REQUEST", "ERROR"]}}),
    )
    .await;
    let m = ws2.json(10).await;
    assert_eq!(m["payload"]["data"]["events"]["id"], got[3]["id"]);
    // Неверный afterSeq.
    ws2.subscribe("bad", SUB, json!({"p": p, "a": "ten"})).await;
    let m = ws2.json(10).await;
    assert_eq!(op_code(&m), "BAD_USER_INPUT");
    // Сервис не читает.
    let mut ws3 = app.ws("graphql-transport-ws", Some(&service)).await;
    ack(&mut ws3).await;
    ws3.subscribe("s", SUB, json!({"p": p})).await;
    let m = ws3.json(10).await;
    assert_eq!(op_code(&m), "FORBIDDEN", "{m}");
}
both!(replay_then_live_with_scope_and_filter_applied);

async fn socket_closes_with_protocol_codes(b: Backend) {
    let app = spawn_app_with(&b, |s| s.ws_init_timeout_ms = 300).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    // Неверный токен — 4403.
    let mut ws = app.ws("graphql-transport-ws", Some("garbage")).await;
    assert!(matches!(ws.next(5).await, WsEvent::Closed(Some(4403), _)));
    // Нет Authorization — 4403; ключ без учёта регистра — принимается.
    let mut ws = app.ws("graphql-transport-ws", None).await;
    ws.send(json!({"type": "connection_init", "payload": {}})).await;
    assert!(matches!(ws.next(5).await, WsEvent::Closed(Some(4403), _)));
    let mut ws = app.ws("graphql-transport-ws", None).await;
    ws.send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {alice}")}}))
        .await;
    ack(&mut ws).await;
    // Повтор id активной подписки — 4409.
    ws.subscribe("dup", SUB, json!({"p": p})).await;
    ws.subscribe("dup", SUB, json!({"p": p})).await;
    match ws.next(5).await {
        WsEvent::Closed(Some(4409), reason) => assert!(reason.contains("dup")),
        other => panic!("expected 4409, got {other:?}"),
    }
    // Нет connection_init вовремя — 4408.
    let mut ws = app.ws("graphql-transport-ws", None).await;
    assert!(matches!(ws.next(5).await, WsEvent::Closed(Some(4408), _)));
}
both!(socket_closes_with_protocol_codes);

async fn subscriptions_per_connection_are_capped_and_ids_can_be_reused_after_complete(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let mut ws = app.ws("graphql-transport-ws", Some(&alice)).await;
    ack(&mut ws).await;
    let cap = eventlog::api::graphql::ws::MAX_SUBSCRIPTIONS_PER_CONNECTION;
    for i in 0..cap {
        ws.subscribe(&i.to_string(), SUB, json!({"p": p})).await;
    }
    ws.subscribe("over", SUB, json!({"p": p})).await;
    let m = ws.json(10).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("error"), Some("over")),
        "{m}"
    );
    // Завершённый id освобождает место и может быть использован снова.
    ws.send(json!({"id": "0", "type": "complete"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.subscribe("0", SUB, json!({"p": p, "a": "0"})).await;
    let service = app.token("svc", Role::Service, &[p]);
    app.ingest(&service, json!([ev(p, Some("alice"), "X")])).await;
    // Придут события для всех подписок; среди первых должен быть ответ для "0".
    let mut saw_zero = false;
    for _ in 0..(cap + 1) {
        let m = ws.json(10).await;
        assert_ne!(m["type"], "error", "{m}");
        if m["id"] == "0" {
            saw_zero = true;
            break;
        }
    }
    assert!(saw_zero);
}
both!(subscriptions_per_connection_are_capped_and_ids_can_be_reused_after_complete);

async fn lagging_subscriber_is_told_and_token_expiry_ends_the_stream(b: Backend) {
    let app = spawn_app_with(&b, |s| s.live_buffer = 4).await;
    let p = Uuid::now_v7();
    let service = app.token("svc", Role::Service, &[p]);
    // Токен, который истекает через секунду (плюс допуск 5 с).
    let short = app
        .keys
        .mint("alice", Role::User, Some(vec![p]), chrono::Duration::seconds(1))
        .unwrap();
    let alice = app.token("alice", Role::User, &[p]);
    let mut ws = app.ws("graphql-transport-ws", Some(&alice)).await;
    ack(&mut ws).await;
    ws.subscribe(
        "lag",
        "subscription($p: UUID!) { events(projectId: $p) { seq } }",
        json!({"p": p}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 300 событий одним пакетом в буфер на 4: подписчик отстанет.
    let batch: Vec<Value> = (0..300).map(|_| ev(p, Some("alice"), "X")).collect();
    app.ingest(&service, Value::Array(batch)).await;
    let mut lagged = None;
    for _ in 0..300 {
        let m = ws.json(10).await;
        if m["type"] == "error" || m["payload"]["errors"].is_array() {
            lagged = Some(m);
            break;
        }
    }
    let m = lagged.expect("a LAGGED error");
    let err = if m["payload"].is_array() {
        &m["payload"][0]
    } else {
        &m["payload"]["errors"][0]
    };
    assert_eq!(err["extensions"]["code"], "LAGGED", "{m}");
    assert!(err["extensions"]["lastSeq"].is_string());

    let mut ws = app.ws("graphql-transport-ws", Some(&short)).await;
    ack(&mut ws).await;
    ws.subscribe("exp", SUB, json!({"p": p})).await;
    let started = std::time::Instant::now();
    let m = ws.json(15).await;
    let err = if m["payload"].is_array() {
        &m["payload"][0]
    } else {
        &m["payload"]["errors"][0]
    };
    assert_eq!(err["extensions"]["code"], "UNAUTHENTICATED", "{m}");
    assert!(started.elapsed() < Duration::from_secs(12));
}
both!(lagging_subscriber_is_told_and_token_expiry_ends_the_stream);

async fn legacy_graphql_ws_protocol_works(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let mut ws = app.ws("graphql-ws", Some(&alice)).await;
    ack(&mut ws).await;
    ws.send(json!({"id": "1", "type": "start", "payload": {"query": SUB, "variables": {"p": p}}}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.ingest(&alice, json!([ev(p, None, "HELLO")])).await;
    let m = ws.json(10).await;
    assert_eq!(m["type"], "data", "{m}");
    assert_eq!(m["payload"]["data"]["events"]["eventType"], "HELLO");
    // Повтор id в старом протоколе — ошибка операции, соединение живо.
    ws.send(json!({"id": "1", "type": "start", "payload": {"query": SUB, "variables": {"p": p}}}))
        .await;
    let m = ws.json(10).await;
    assert_eq!(m["type"], "error", "{m}");
}
both!(legacy_graphql_ws_protocol_works);
