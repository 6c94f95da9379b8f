//! Один журнал для всех писателей: два экземпляра сервера и посторонние писатели
//! на одной базе отдают подписчикам одно и то же в одном порядке журнала;
//! `afterSeq` продолжает по позиции, а не «всё с большим seq»; кэш аналитики
//! точен между экземплярами.

use std::time::Duration;

use eventlog::logger::{EventLogger, LoggerConfig};
use eventlog::model::{EventType, NewEvent};
use eventlog::query::Role;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

use crate::both;
use crate::helpers::{Backend, TestApp, Ws, spawn_app, spawn_instance};
use crate::stream::log_of;

const SUB: &str = "subscription($p: UUID!, $a: String) { events(projectId: $p, afterSeq: $a) { id seq } }";

/// Подписка по websocket на проект с `afterSeq`.
async fn subscribe(app: &TestApp, token: &str, p: Uuid, after: &str) -> Ws {
    let mut ws = app.ws("graphql-transport-ws", Some(token)).await;
    let m = ws.json(5).await;
    assert_eq!(m["type"], "connection_ack", "{m}");
    ws.subscribe("1", SUB, json!({"p": p, "a": after})).await;
    ws
}

/// Следующие `n` событий подписки: (id, seq).
async fn take(ws: &mut Ws, n: usize) -> Vec<(Uuid, i64)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = ws.json(15).await;
        assert_eq!(m["type"], "next", "{m}");
        let e = &m["payload"]["data"]["events"];
        assert!(e.is_object(), "{m}");
        out.push((
            e["id"].as_str().unwrap().parse().unwrap(),
            e["seq"].as_str().unwrap().parse().unwrap(),
        ));
    }
    out
}

fn input(p: Uuid, i: usize) -> Value {
    json!({"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "TASK_PROGRESS", "payload": {"i": i}})
}

/// Вставка события в обход сервера в открытой транзакции `conn` с заданным seq
/// (PostgreSQL) — так пишет «чужой» писатель.
async fn raw_insert_pg(conn: &mut sqlx::PgConnection, p: Uuid, seq: i64) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at, seq) \
         OVERRIDING SYSTEM VALUE VALUES ($1, $2, 'u', $3, 'TASK_PROGRESS', '{}'::jsonb, now(), $4)",
    )
    .bind(id)
    .bind(Uuid::now_v7())
    .bind(p)
    .bind(seq)
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn a_writer_holding_an_early_seq_is_delivered_in_commit_order_on_every_instance(b: Backend) {
    // Arrange: два экземпляра на одной базе, подписчики на обоих.
    let a = spawn_app(&b).await;
    let bb = spawn_instance(&a.db_url, |_| {}).await;
    let p = Uuid::now_v7();
    let user = a.token("u", Role::User, &[p]);
    let first = a.ingest(&user, json!([input(p, 0)])).await;
    assert!(first["errors"].is_null(), "{first}");
    let mut sub_a = subscribe(&a, &user, p, "0").await;
    let mut sub_b = subscribe(&bb, &user, p, "0").await;

    // Act: писатель берёт номер seq и держит транзакцию открытой; тем временем
    // сервер A фиксирует событие с большим seq; затем писатель фиксирует своё.
    let held_id;
    let held_seq;
    let later: Value;
    match &b {
        Backend::Postgres(_) => {
            let mut conn = sqlx::PgConnection::connect(&a.db_url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            let (s,): (i64,) = sqlx::query_as("SELECT nextval(pg_get_serial_sequence('event_logs', 'seq'))")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            later = a.ingest(&user, json!([input(p, 1)])).await;
            held_id = raw_insert_pg(&mut conn, p, s).await;
            sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            held_seq = s;
        }
        Backend::Sqlite => {
            // SQLite сериализует писателей: держащий транзакцию задерживает фиксацию
            // сервера, и порядок журнала — порядок фиксации.
            let mut conn = sqlx::SqliteConnection::connect(&a.db_url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at) \
                 VALUES (?, ?, 'u', ?, 'TASK_PROGRESS', '{}', '2026-01-01T00:00:00.000000Z')",
            )
            .bind(id.to_string())
            .bind(Uuid::now_v7().to_string())
            .bind(p.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
            let ingest = {
                let (addr, client, user) = (a.addr.clone(), a.client.clone(), user.clone());
                tokio::spawn(async move {
                    client
                        .post(format!("{addr}/graphql"))
                        .bearer_auth(user)
                        .json(&json!({"query": "mutation($e: [EventInput!]!) { ingestEvents(events: $e) { ids } }",
                                      "variables": {"e": [input(p, 1)]}}))
                        .send()
                        .await
                        .unwrap()
                        .json::<Value>()
                        .await
                        .unwrap()
                })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            later = ingest.await.unwrap();
            held_id = id;
            held_seq = 0;
        }
    }
    assert!(later["errors"].is_null(), "{later}");
    let tail = bb.ingest(&user, json!([input(p, 2)])).await;
    assert!(tail["errors"].is_null(), "{tail}");

    // Assert: журнал базы — эталон; обе подписки и повтор с "0" на обоих
    // экземплярах совпадают с ним в точности.
    let log = log_of(&a.store, p).await;
    assert_eq!(log.len(), 4);
    assert!(log.contains(&held_id));
    let got_a = take(&mut sub_a, 4).await;
    let got_b = take(&mut sub_b, 4).await;
    let ids = |v: &[(Uuid, i64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(ids(&got_a), log, "instance A is not in log order");
    assert_eq!(ids(&got_b), log, "instance B is not in log order");
    for app in [&a, &bb] {
        let mut again = subscribe(app, &user, p, "0").await;
        assert_eq!(
            ids(&take(&mut again, 4).await),
            log,
            "replay differs from the log"
        );
    }
    if b.is_postgres() {
        // Событие с меньшим seq зафиксировано позже: оно идёт после события с
        // большим seq, и продолжение после большего seq его не теряет.
        let later_seq = got_a.iter().find(|x| x.0 != held_id && x.1 > held_seq).unwrap().1;
        let pos_held = log.iter().position(|x| *x == held_id).unwrap();
        assert!(held_seq < later_seq);
        assert_eq!(pos_held, 2, "the held event commits after the later one");
        let mut resumed = subscribe(&bb, &user, p, &later_seq.to_string()).await;
        assert_eq!(ids(&take(&mut resumed, 2).await), log[2..].to_vec());
    }
}
both!(a_writer_holding_an_early_seq_is_delivered_in_commit_order_on_every_instance);

async fn an_embedded_logger_on_the_same_database_is_seen_live_and_in_replay(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let user = app.token("u", Role::User, &[p]);
    // Подписка до первого события: всё дальнейшее приходит живым.
    let head = app.stream.sync_to_head().await.unwrap();
    let mut live = subscribe(&app, &user, p, &head.seq.to_string()).await;
    // Посторонний писатель: свой пул и свой EventLogger, сервер о нём не знает.
    let other = eventlog::storage::Store::connect(&app.db_url, Default::default())
        .await
        .unwrap();
    let logger = EventLogger::start(other, LoggerConfig::default(), None);
    let events: Vec<_> = (0..120)
        .map(|i| NewEvent::new(Uuid::now_v7(), "u", p, EventType::TaskProgress).payload(json!({"i": i})))
        .collect();
    logger.log_batch(events.clone()).unwrap().wait().await.unwrap();
    let got = take(&mut live, 120).await;
    let want: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), want);
    let mut replay = subscribe(&app, &user, p, "0").await;
    assert_eq!(take(&mut replay, 120).await, got);
    logger.shutdown().await;
}
both!(an_embedded_logger_on_the_same_database_is_seen_live_and_in_replay);

async fn after_seq_of_an_invisible_event_resumes_after_it_and_unknown_seq_is_bad_input(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let service = app.token("svc", Role::Service, &[p]);
    let alice = app.token("alice", Role::User, &[p]);
    let r = app
        .ingest(
            &service,
            json!([
                {"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "A", "userId": "alice"},
                {"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "B", "userId": "bob"},
                {"sessionId": Uuid::now_v7(), "projectId": p, "eventType": "C", "userId": "alice"}
            ]),
        )
        .await;
    let ids: Vec<Uuid> = serde_json::from_value(r["data"]["ingestEvents"]["ids"].clone()).unwrap();
    let log = log_of(&app.store, p).await;
    assert_eq!(log, ids);
    // seq события bob, которое alice не видит: продолжение — со следующего видимого.
    let bob_seq = app
        .graphql(
            Some(&app.token("root", Role::Admin, &[p])),
            "query($p: UUID!, $id: UUID!) { event(projectId: $p, id: $id) { seq } }",
            json!({"p": p, "id": ids[1]}),
        )
        .await["data"]["event"]["seq"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = subscribe(&app, &alice, p, &bob_seq).await;
    assert_eq!(take(&mut ws, 1).await[0].0, ids[2]);
    // seq, которого в журнале нет: BAD_USER_INPUT с подсказкой, а не тихий пропуск.
    let mut ws = subscribe(&app, &alice, p, "999999999").await;
    let m = ws.json(10).await;
    let err = if m["payload"].is_array() {
        m["payload"][0].clone()
    } else {
        m["payload"]["errors"][0].clone()
    };
    assert_eq!(err["extensions"]["code"], "BAD_USER_INPUT", "{m}");
    assert!(err["message"].as_str().unwrap().contains("resubscribe"), "{m}");
}
both!(after_seq_of_an_invisible_event_resumes_after_it_and_unknown_seq_is_bad_input);

async fn cached_analytics_on_one_instance_include_an_event_ingested_on_another(b: Backend) {
    let redis = std::env::var("EVENTLOG_TEST_REDIS_URL").ok();
    let prefix = format!("eventlog-test-{}:", Uuid::new_v4().simple());
    let tweak = |s: &mut eventlog::config::Settings| {
        s.redis_url = redis.clone();
        s.redis_prefix = prefix.clone();
    };
    let a = crate::helpers::spawn_app_with(&b, tweak).await;
    let bb = spawn_instance(&a.db_url, tweak).await;
    let p = Uuid::now_v7();
    let admin = a.token("root", Role::Admin, &[p]);
    let user = a.token("u", Role::User, &[p]);
    let q =
        "query($p: UUID!) { analytics(projectId: $p) { totalEvents eventTypeCounts { eventType count } } }";
    let total = |v: &Value| v["data"]["analytics"]["totalEvents"].as_i64().unwrap();
    a.ingest(&user, json!([input(p, 0)])).await;
    let first = bb.graphql(Some(&admin), q, json!({"p": p})).await;
    assert_eq!(total(&first), 1, "{first}");
    // Тот же вопрос ещё раз — из кэша; затем событие на A и сразу вопрос к B.
    let again = bb.graphql(Some(&admin), q, json!({"p": p})).await;
    assert_eq!(again, first);
    let r = a.ingest(&user, json!([input(p, 1)])).await;
    assert!(r["errors"].is_null(), "{r}");
    let after = bb.graphql(Some(&admin), q, json!({"p": p})).await;
    assert_eq!(total(&after), 2, "a cached answer must never be stale: {after}");
    // Ответ, закэшированный на B, виден A через Redis (если он есть) и равен базе.
    let on_a = a.graphql(Some(&admin), q, json!({"p": p})).await;
    assert_eq!(on_a, after);
    // Очистка тоже меняет ключ: удалённые события исчезают из ответа.
    a.store
        .purge_older_than(chrono::Utc::now() + chrono::Duration::days(1), 1000)
        .await
        .unwrap();
    let purged = bb.graphql(Some(&admin), q, json!({"p": p})).await;
    assert_eq!(total(&purged), 0, "{purged}");
}
both!(cached_analytics_on_one_instance_include_an_event_ingested_on_another);
