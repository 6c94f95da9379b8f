//! Враждебный ввод (issue 11): даты вне диапазона, повтор id внутри пакета с другим
//! содержимым, чужой id (идемпотентность в пределах проекта и пользователя).

use chrono::{DateTime, Duration, Utc};
use eventlog::logger::LogError;
use eventlog::model::NewEvent;
use eventlog::query::Role;
use migration::{Migrator, MigratorTrait, OUT_OF_RANGE_DATES_REASON};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both;
use crate::fixture::code;
use crate::helpers::{Backend, TestApp, TestDb, spawn_app, spawn_app_on, spawn_app_with, wait_for};

fn ev(project: Uuid, ty: &str) -> Value {
    json!({"sessionId": Uuid::now_v7(), "projectId": project, "eventType": ty, "payload": {"k": 1}})
}

fn message(r: &Value) -> &str {
    r["errors"][0]["message"].as_str().unwrap_or_default()
}

const PAGE: &str = "query($p: UUID!) { events(projectId: $p, first: 100) { nodes { id userId createdAt eventType payload } } }";
const ANALYTICS: &str = "query($p: UUID!) { analytics(projectId: $p) { totalEvents } }";

/// Страница и аналитика проекта читаются без ошибок; возвращает узлы страницы.
async fn readable(app: &TestApp, token: &str, p: Uuid) -> Vec<Value> {
    let r = app.graphql(Some(token), PAGE, json!({"p": p})).await;
    assert!(r["errors"].is_null(), "events page must be readable: {r}");
    let a = app.graphql(Some(token), ANALYTICS, json!({"p": p})).await;
    assert!(a["errors"].is_null(), "analytics must be readable: {a}");
    r["data"]["events"]["nodes"].as_array().unwrap().clone()
}

/// Значение счётчика в тексте /metrics (0, если его ещё нет).
async fn counter(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn ingest_refuses_dates_outside_1970_to_now_and_the_project_stays_readable(b: Backend) {
    // Arrange
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    // Act / Assert: каждая дата вне диапазона отвергает весь пакет и называет поле.
    for (bad, msg) in [
        (
            "-10000-01-01T00:00:00Z",
            "must not be before 1970-01-01T00:00:00Z",
        ),
        (
            "1969-12-31T23:59:59.999999Z",
            "must not be before 1970-01-01T00:00:00Z",
        ),
        ("0500-06-01T00:00:00Z", "must not be before 1970-01-01T00:00:00Z"),
    ] {
        let mut batch = vec![ev(p, "A"), ev(p, "B"), ev(p, "C")];
        batch[1]["createdAt"] = json!(bad);
        let r = app.ingest(&alice, Value::Array(batch)).await;
        assert_eq!(code(&r), "BAD_USER_INPUT", "{bad}: {r}");
        assert_eq!(message(&r), format!("events[1].createdAt: {msg}"), "{bad}: {r}");
        assert_eq!(r["errors"][0]["extensions"]["field"], "events[1].createdAt");
    }
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    assert_eq!(app.store.count_rejected().await.unwrap(), 0);
    // Нижняя граница включительно, и читается обратно точно.
    let mut first = ev(p, "EPOCH");
    first["createdAt"] = json!("1970-01-01T00:00:00Z");
    let r = app.ingest(&alice, json!([first])).await;
    assert!(r["errors"].is_null(), "{r}");
    let nodes = readable(&app, &alice, p).await;
    assert_eq!(nodes.len(), 1);
    let at: DateTime<Utc> = nodes[0]["createdAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, DateTime::<Utc>::UNIX_EPOCH);
    // EventLogger::log_event (встроенный путь): событие возвращается с ошибкой, не ставится.
    let bad = NewEvent::new(Uuid::now_v7(), "alice", p, "OLD").at("-10000-01-01T00:00:00Z".parse().unwrap());
    match app.stream.logger().log_event(bad) {
        Err(LogError::Invalid { event, error }) => {
            assert_eq!(error.path, "createdAt");
            assert_eq!(event.event_type, "OLD");
        }
        other => panic!("expected LogError::Invalid, got {other:?}"),
    }
    let future = NewEvent::new(Uuid::now_v7(), "alice", p, "LATE").at(Utc::now() + Duration::days(2));
    assert!(matches!(
        app.stream.logger().log_event(future),
        Err(LogError::Invalid { .. })
    ));
    // Пакет через StreamManager тоже проверяется целиком.
    let ok = NewEvent::new(Uuid::now_v7(), "alice", p, "OK");
    let old = NewEvent::new(Uuid::now_v7(), "alice", p, "OLD")
        .at(DateTime::<Utc>::UNIX_EPOCH - Duration::seconds(1));
    match app.stream.broadcast_events(vec![ok, old]) {
        Err(eventlog::logger::BatchError::Invalid(back, e)) => {
            assert_eq!(back.len(), 2);
            assert_eq!(e.path, "events[1].createdAt");
        }
        other => panic!("expected BatchError::Invalid, got {:?}", other.map(|_| ())),
    }
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    readable(&app, &alice, p).await;
}
both!(ingest_refuses_dates_outside_1970_to_now_and_the_project_stays_readable);

async fn with_retention_on_events_older_than_the_period_are_refused(b: Backend) {
    let app = spawn_app_with(&b, |s| s.retention_days = 30).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let mut old = ev(p, "OLD");
    old["createdAt"] = json!((Utc::now() - Duration::days(31)).to_rfc3339());
    let r = app.ingest(&alice, json!([ev(p, "NEW"), old])).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert!(
        message(&r).starts_with("events[1].createdAt: is older than the retention period of 30 days"),
        "{r}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    let mut recent = ev(p, "RECENT");
    recent["createdAt"] = json!((Utc::now() - Duration::days(29)).to_rfc3339());
    let r = app.ingest(&alice, json!([recent])).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
}
both!(with_retention_on_events_older_than_the_period_are_refused);

/// Строки, записанные до миграции мимо проверки (как это позволяли старые версии).
async fn insert_raw(db: &TestDb, pg: bool, project: Uuid, rows: &[(&str, &str)]) {
    let store = db.store().await;
    for (id, at) in rows {
        let sql = if pg {
            format!(
                "INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at) \
                 VALUES ('{id}', '{}', 'alice', '{project}', 'RAW', '{{\"k\": 1}}'::jsonb, '{at}')",
                Uuid::now_v7()
            )
        } else {
            format!(
                "INSERT INTO event_logs (id, session_id, user_id, project_id, event_type, payload, created_at) \
                 VALUES ('{id}', '{}', 'alice', '{project}', 'RAW', '{{\"k\":1}}', '{at}')",
                Uuid::now_v7()
            )
        };
        store.connection().execute_unprepared(&sql).await.unwrap();
    }
}

async fn ids(db: &TestDb, sql: &str) -> Vec<String> {
    let store = db.store().await;
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(store.backend(), sql.to_owned()))
        .await
        .unwrap();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            r.try_get::<String>("", "i")
                .unwrap_or_else(|_| r.try_get::<Uuid>("", "i").unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

async fn migration_moves_out_of_range_rows_to_rejected_and_down_restores_them(b: Backend) {
    // Arrange: схема до новой миграции и строки, которые старые версии принимали.
    let pg = b.is_postgres();
    let db = TestDb::new(&b).await;
    let store = db.store().await;
    Migrator::up(store.connection(), Some(2)).await.unwrap();
    let p = Uuid::now_v7();
    let good = Uuid::now_v7().to_string();
    let bad_a = Uuid::now_v7().to_string();
    let bad_b = Uuid::now_v7().to_string();
    let bad_c = Uuid::now_v7().to_string();
    let far_future = (Utc::now() + Duration::days(400))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let rows: Vec<(&str, &str)> = if pg {
        // PostgreSQL не хранит год −10000; хранит 0500 и 1969.
        vec![
            (&good, "2026-03-01T10:00:00Z"),
            (&bad_a, "0500-06-01T00:00:00Z"),
            (&bad_b, "1969-12-31T23:59:59Z"),
            (&bad_c, &far_future),
        ]
    } else {
        vec![
            (&good, "2026-03-01T10:00:00.000000Z"),
            (&bad_a, "-10000-01-01T00:00:00.000000Z"),
            (&bad_b, "1969-12-31T23:59:59.000000Z"),
            (&bad_c, &far_future),
        ]
    };
    insert_raw(&db, pg, p, &rows).await;
    let mut bad = vec![bad_a.clone(), bad_b.clone(), bad_c.clone()];
    bad.sort();
    let rejected_ids = if pg {
        format!(
            "SELECT raw_event->>'id' AS i FROM event_logs_rejected WHERE error = '{OUT_OF_RANGE_DATES_REASON}'"
        )
    } else {
        format!(
            "SELECT json_extract(raw_event, '$.id') AS i FROM event_logs_rejected WHERE error = '{OUT_OF_RANGE_DATES_REASON}'"
        )
    };
    let stored_ids = if pg {
        "SELECT id::text AS i FROM event_logs"
    } else {
        "SELECT id AS i FROM event_logs"
    };
    // Act: до миграции дат включительно (журнал и она), чтобы `down(1)` ниже
    // отменял именно её, а не более поздние миграции.
    Migrator::up(store.connection(), Some(2)).await.unwrap();
    // Assert: плохие строки — в отказах с причиной, хорошая осталась.
    assert_eq!(ids(&db, stored_ids).await, vec![good.clone()]);
    assert_eq!(ids(&db, &rejected_ids).await, bad);
    // down возвращает ровно эти строки, up снова переносит.
    Migrator::down(store.connection(), Some(1)).await.unwrap();
    let mut all = bad.clone();
    all.push(good.clone());
    all.sort();
    assert_eq!(ids(&db, stored_ids).await, all);
    assert!(ids(&db, &rejected_ids).await.is_empty());
    Migrator::up(store.connection(), Some(1)).await.unwrap();
    assert_eq!(ids(&db, &rejected_ids).await, bad);
    // Проект снова читается (на SQLite строка года −10000 делала INTERNAL каждую страницу).
    drop(store);
    let app = spawn_app_on(db, |_| {}).await;
    let alice = app.token("alice", Role::User, &[p]);
    let nodes = readable(&app, &alice, p).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], good.as_str());
}
both!(migration_moves_out_of_range_rows_to_rejected_and_down_restores_them);

async fn a_repeated_id_with_different_contents_refuses_the_batch(b: Backend) {
    let app = spawn_app(&b).await;
    let p = Uuid::now_v7();
    let alice = app.token("alice", Role::User, &[p]);
    let id = Uuid::now_v7();
    let mut first = ev(p, "FIRST");
    first["id"] = json!(id);
    first["payload"] = json!({"v": "first"});
    let mut second = first.clone();
    second["payload"] = json!({"v": "second"});
    // Разное содержимое: отказ с индексом повтора, ничего не записано.
    let r = app
        .ingest(&alice, json!([ev(p, "X"), first.clone(), second]))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert!(
        message(&r).starts_with("events[2].id: repeats the id of events[1] with different contents"),
        "{r}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    // Одинаковый повтор: принят, хранится один раз, с этим содержимым.
    let r = app
        .ingest(&alice, json!([first.clone(), ev(p, "X"), first.clone()]))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 3);
    assert_eq!(app.store.count_events().await.unwrap(), 2);
    let nodes = readable(&app, &alice, p).await;
    let stored: Vec<&Value> = nodes.iter().filter(|n| n["id"] == id.to_string()).collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["payload"], json!({"v": "first"}));
    assert_eq!(stored[0]["eventType"], "FIRST");
}
both!(a_repeated_id_with_different_contents_refuses_the_batch);

async fn an_id_stored_by_another_user_or_project_is_refused_not_acknowledged(b: Backend) {
    // Arrange: alice хранит событие с id X в проекте p.
    let app = spawn_app(&b).await;
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = app.token("alice", Role::User, &[p, q]);
    let bob = app.token("bob", Role::User, &[p]);
    let x = Uuid::now_v7();
    let mut mine = ev(p, "SECRET_TYPE");
    mine["id"] = json!(x);
    mine["payload"] = json!({"secret": "alice-only"});
    assert!(app.ingest(&alice, json!([mine.clone()])).await["errors"].is_null());
    // Act / Assert: тот же id от bob (тот же проект) — отказ, не «повтор».
    let mut squat = ev(p, "B");
    squat["id"] = json!(x);
    let r = app.ingest(&bob, json!([ev(p, "B"), squat.clone()])).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["field"], "events[1].id");
    let text = r.to_string();
    for secret in ["alice", "SECRET_TYPE", "alice-only", &p.to_string()] {
        assert!(!text.contains(secret), "the answer reveals {secret}: {text}");
    }
    // Тот же пользователь, другой проект — тоже отказ.
    let mut other_project = mine.clone();
    other_project["projectId"] = json!(q);
    let r = app.ingest(&alice, json!([other_project])).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["field"], "events[0].id");
    // Повтор владельцем — по-прежнему идемпотентный успех.
    assert!(app.ingest(&alice, json!([mine.clone()])).await["errors"].is_null());
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    assert_eq!(app.store.count_rejected().await.unwrap(), 0);

    // Гонка мимо проверки API (как её видит писатель): пакет через StreamManager.
    let conflicts_before = counter(&app, "eventlog_events_id_conflicts_total").await;
    let stolen = NewEvent::new(Uuid::now_v7(), "bob", p, "B").with_id(x);
    let fresh = NewEvent::new(Uuid::now_v7(), "bob", p, "B");
    let outcome = app
        .stream
        .broadcast_events(vec![stolen, fresh])
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(outcome.conflicts, 1, "{outcome:?}");
    assert_eq!(outcome.inserted, 1, "{outcome:?}");
    assert_eq!(outcome.duplicates, 0, "{outcome:?}");
    assert_eq!(app.store.count_rejected().await.unwrap(), 1);
    // waitForCommit: false — ответ уже ушёл: событие в отказах, метрика растёт.
    let r = app
        .graphql(
            Some(&bob),
            "mutation($e: [EventInput!]!) { ingestEvents(events: $e, waitForCommit: false) { accepted } }",
            json!({"e": [squat]}),
        )
        .await;
    assert_eq!(r["data"]["ingestEvents"]["accepted"], 1, "{r}");
    wait_for("the conflicting event in event_logs_rejected", 10, || async {
        app.store.count_rejected().await.unwrap() == 2
    })
    .await;
    assert!(counter(&app, "eventlog_events_id_conflicts_total").await >= conflicts_before + 2.0);
    let reason = ids(
        app.db.as_ref().unwrap(),
        "SELECT error AS i FROM event_logs_rejected",
    )
    .await;
    assert!(reason.iter().all(|r| r.starts_with("id conflict")), "{reason:?}");
    // Строка alice не тронута.
    let nodes = readable(&app, &alice, p).await;
    let x_rows: Vec<&Value> = nodes.iter().filter(|n| n["id"] == x.to_string()).collect();
    assert_eq!(x_rows.len(), 1);
    assert_eq!(x_rows[0]["userId"], "alice");
    assert_eq!(x_rows[0]["payload"], json!({"secret": "alice-only"}));

    // Одновременная отправка одного нового id двумя пользователями: ровно один
    // успех, второй получает BAD_USER_INPUT (проверкой API или писателем).
    for _ in 0..5 {
        let id = Uuid::now_v7();
        let mut a = ev(p, "RACE");
        a["id"] = json!(id);
        let (ra, rb) = tokio::join!(
            app.ingest(&alice, json!([a.clone()])),
            app.ingest(&bob, json!([a]))
        );
        let ok = [&ra, &rb].iter().filter(|r| r["errors"].is_null()).count();
        assert_eq!(ok, 1, "exactly one owner wins: {ra} / {rb}");
        let loser = if ra["errors"].is_null() { &rb } else { &ra };
        assert_eq!(code(loser), "BAD_USER_INPUT", "{loser}");
        assert_eq!(loser["errors"][0]["extensions"]["field"], "events[0].id");
    }
}
both!(an_id_stored_by_another_user_or_project_is_refused_not_acknowledged);

/// `PRAGMA synchronous` соединений пула сервера.
async fn synchronous(app: &TestApp) -> i64 {
    let row = app
        .store
        .connection()
        .query_one_raw(Statement::from_string(
            app.store.backend(),
            "PRAGMA synchronous".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Только SQLite: на PostgreSQL подтверждение и так ждёт сброса WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledgements_are_durable_by_default_and_normal_is_opt_in() {
    use eventlog::storage::SqliteDurability;
    let app = spawn_app(&Backend::Sqlite).await;
    // 2 = FULL: fsync при каждой фиксации, подтверждение переживает сбой питания.
    assert_eq!(synchronous(&app).await, 2);
    let fast = spawn_app_with(&Backend::Sqlite, |s| {
        s.sqlite_synchronous = SqliteDurability::Normal;
    })
    .await;
    assert_eq!(synchronous(&fast).await, 1);
    assert_eq!("NORMAL".parse::<SqliteDurability>(), Ok(SqliteDurability::Normal));
    assert!("off".parse::<SqliteDurability>().is_err());
}
