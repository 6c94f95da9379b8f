//! Мутация приёма: проверка всего пакета, имена полей в ошибках, идемпотентность,
//! права ролей, подтверждение после фиксации, BACKPRESSURE.

use eventlog::query::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::fixture::code;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

fn e(project: Uuid, ty: &str) -> Value {
    json!({"sessionId": Uuid::now_v7(), "projectId": project, "eventType": ty, "payload": {"k": 1}})
}

async fn ingest_rejects_whole_batch_and_names_index_and_field(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let future = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let cases = vec![
        (
            3,
            json!({"eventType": "bad type"}),
            "events[3].eventType: must match ^[A-Z][A-Z0-9_]{0,63}$",
        ),
        (
            1,
            json!({"payload": [1, 2]}),
            "events[1].payload: must be a JSON object",
        ),
        (
            0,
            json!({"payload": {"x": "y".repeat(70_000)}}),
            "events[0].payload: must be at most 65536 bytes",
        ),
        (
            2,
            json!({"approvalStatus": "MAYBE"}),
            "events[2].approvalStatus: must be one of",
        ),
        (
            4,
            json!({"createdAt": future}),
            "events[4].createdAt: must not be more than 5 minutes in the future",
        ),
        (
            2,
            json!({"agentId": "a".repeat(129)}),
            "events[2].agentId: must be at most 128 characters",
        ),
        (1, json!({"errorCode": "E".repeat(65)}), "events[1].errorCode"),
        (
            0,
            json!({"toolName": ""}),
            "events[0].toolName: must not be empty",
        ),
    ];
    for (idx, patch, msg) in cases {
        let mut batch: Vec<Value> = (0..5).map(|_| e(p, "TOOL_REQUEST")).collect();
        for (k, v) in patch.as_object().unwrap() {
            batch[idx][k] = v.clone();
        }
        let r = app.ingest(&alice, Value::Array(batch)).await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
        let m = r["errors"][0]["message"].as_str().unwrap();
        assert!(m.starts_with(msg), "{m} should start with {msg}");
    }
    let big: Vec<Value> = (0..1001).map(|_| e(p, "X")).collect();
    let r = app.ingest(&alice, Value::Array(big)).await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    assert!(r["errors"][0]["message"].as_str().unwrap().starts_with("events:"));
    // Ничего из отвергнутых пакетов не записано.
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    // Ровно 1000 — можно.
    let ok: Vec<Value> = (0..1000).map(|_| e(p, "X")).collect();
    let r = app.ingest(&alice, Value::Array(ok)).await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 1000, "{r}");
}
both!(ingest_rejects_whole_batch_and_names_index_and_field);

async fn ingest_is_idempotent_read_your_writes_and_keeps_input_order(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let id = Uuid::now_v7();
    let mut batch: Vec<Value> = (0..5).map(|_| e(p, "TOOL_REQUEST")).collect();
    for b in &mut batch {
        b["id"] = json!(Uuid::now_v7());
    }
    batch[1]["id"] = json!(id);
    // Тот же id дважды в одном пакете с тем же содержимым: принимается, хранится раз.
    batch[3] = batch[1].clone();
    let r = app.ingest(&alice, Value::Array(batch.clone())).await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 5);
    let ids = r["data"]["ingestEvents"]["ids"].as_array().unwrap();
    // ids в порядке входа, включая повтор.
    let sent: Vec<Value> = batch.iter().map(|b| b["id"].clone()).collect();
    assert_eq!(ids, &sent);
    // Без id сервер выдаёт UUIDv7 — и тоже в порядке входа.
    let r = app.ingest(&alice, json!([e(p, "GEN"), e(p, "GEN")])).await;
    let generated: Vec<Uuid> = r["data"]["ingestEvents"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Uuid::parse_str(i.as_str().unwrap()).unwrap())
        .collect();
    assert!(generated.iter().all(|u| u.get_version_num() == 7));
    assert!(generated[0] < generated[1]);
    // Сразу видно запросом (подтверждение после фиксации).
    let q = "query($p: UUID!, $f: EventFilter) { events(projectId: $p, first: 500, filter: $f) { nodes { id userId } } }";
    let got = app
        .graphql(
            Some(&alice),
            q,
            json!({"p": p, "f": {"eventTypes": ["TOOL_REQUEST"]}}),
        )
        .await;
    assert_eq!(got["data"]["events"]["nodes"].as_array().unwrap().len(), 4);
    assert!(
        got["data"]["events"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["userId"] == "alice")
    );
    // Повторная отправка (клиент с «хотя бы один раз») ничего не дублирует.
    let r = app.ingest(&alice, Value::Array(batch)).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.store.count_events().await.unwrap(), 6);
    // waitForCommit: false отвечает после постановки в очередь; событие появится.
    let r = app
        .graphql(
            Some(&alice),
            "mutation($e: [EventInput!]!) { ingestEvents(events: $e, waitForCommit: false) { accepted } }",
            json!({"e": [e(p, "LATER")]}),
        )
        .await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 1);
    crate::helpers::wait_for("the queued event", 10, || async {
        app.store.count_events().await.unwrap() == 7
    })
    .await;
}
both!(ingest_is_idempotent_read_your_writes_and_keeps_input_order);

async fn ingest_enforces_roles_and_projects(b: Backend) {
    let app = spawn_app(&b).await;
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = app.token("alice", Role::User, &[p]);
    let admin = app.token("root", Role::Admin, &[p]);
    let service = app.token("svc", Role::Service, &[p]);
    let mut ev = e(p, "A");
    ev["userId"] = json!("bob");
    // user и admin пишут только за себя.
    assert_eq!(code(&app.ingest(&alice, json!([ev.clone()])).await), "FORBIDDEN");
    assert_eq!(code(&app.ingest(&admin, json!([ev.clone()])).await), "FORBIDDEN");
    // Сервис пишет за любого, но обязан назвать userId.
    let r = app.ingest(&service, json!([ev.clone()])).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.ingest(&service, json!([e(p, "A"), e(p, "A")])).await;
    assert_eq!(code(&r), "BAD_USER_INPUT");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0].userId"),
        "{r}"
    );
    // Проект вне claim — FORBIDDEN, пакет не принят целиком.
    let mut other = e(q, "A");
    other["userId"] = json!("bob");
    let r = app.ingest(&service, json!([ev.clone(), other])).await;
    assert_eq!(code(&r), "FORBIDDEN");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("events[1].projectId"),
        "{r}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    // Без токена — UNAUTHENTICATED.
    let r = app
        .graphql(
            None,
            "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { accepted } }",
            json!({"e": [e(p, "A")]}),
        )
        .await;
    assert_eq!(code(&r), "UNAUTHENTICATED");
}
both!(ingest_enforces_roles_and_projects);

async fn a_full_queue_answers_backpressure_and_accepts_nothing(b: Backend) {
    // Доля одного токена — вся очередь: здесь проверяется общий предел.
    let app = spawn_app_with(&b, |s| {
        s.queue_capacity = 5;
        s.queue_share_per_token_percent = 100;
    })
    .await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let batch: Vec<Value> = (0..6).map(|_| e(p, "A")).collect();
    let r = app.ingest(&alice, Value::Array(batch)).await;
    assert_eq!(code(&r), "BACKPRESSURE", "{r}");
    assert!(r["errors"][0]["extensions"]["retryAfterMs"].as_u64().unwrap() >= 50);
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    let batch: Vec<Value> = (0..5).map(|_| e(p, "A")).collect();
    let r = app.ingest(&alice, Value::Array(batch)).await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 5, "{r}");
}
both!(a_full_queue_answers_backpressure_and_accepts_nothing);
