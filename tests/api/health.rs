//! /healthz, /readyz, /metrics.

use eventlog::query::Role;
use serde_json::json;

use crate::both;
use crate::helpers::{Backend, spawn_app};

async fn health_ready_and_metrics_report_the_writer(b: Backend) {
    let app = spawn_app(&b).await;
    assert_eq!(app.get(None, "/healthz").await.0, 200);
    let (status, body) = app.get(None, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    let p = uuid::Uuid::now_v7();
    let t = app.token("alice", Role::User, &[p]);
    let r = app
        .ingest(
            &t,
            json!([{"sessionId": uuid::Uuid::now_v7(), "projectId": p, "eventType": "X"}]),
        )
        .await;
    assert!(r["errors"].is_null());
    let text = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "eventlog_queue_depth",
        "eventlog_batch_insert_duration_seconds",
        "eventlog_events_written_total",
        "eventlog_http_request_duration_seconds",
        "eventlog_insert_errors_total",
        "eventlog_insert_retries_total",
        "eventlog_events_dropped_total",
        "eventlog_events_rejected_total",
        "eventlog_subscribers",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
}
both!(health_ready_and_metrics_report_the_writer);

async fn websocket_clients_get_close_1001_when_the_server_stops(b: Backend) {
    let app = crate::helpers::spawn_app(&b).await;
    let p = uuid::Uuid::now_v7();
    let t = app.token("alice", eventlog::query::Role::User, &[p]);
    let mut ws = app.ws("graphql-transport-ws", Some(&t)).await;
    assert_eq!(ws.json(5).await["type"], "connection_ack");
    ws.subscribe(
        "live",
        "subscription($p: UUID!) { events(projectId: $p) { id } }",
        serde_json::json!({"p": p}),
    )
    .await;
    // Act: остановка сервера.
    let report = app.stop().await;
    assert_eq!(report.lost, 0);
    // Assert: кадр закрытия 1001 (going away), а не оборванное соединение (1006).
    match ws.next(5).await {
        crate::helpers::WsEvent::Closed(Some(1001), _) => {}
        other => panic!("expected close 1001, got {other:?}"),
    }
}
both!(websocket_clients_get_close_1001_when_the_server_stops);

/// Пул проверяет только простоявшие соединения: после обрыва всех соединений базы
/// (`pg_terminate_backend`, как при перезапуске) и простоя дольше порога следующая
/// операция хранилища проходит — мёртвые соединения отбраковываются проверкой, а не
/// отдаются клиенту.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(eventlog_test_postgres),
    ignore = "needs EVENTLOG_TEST_POSTGRES_URL at build time"
)]
async fn pool_discards_connections_killed_while_idle() {
    use sqlx::Connection;
    let db = crate::helpers::TestDb::new(&Backend::require_postgres()).await;
    let store = db.store().await;
    // Несколько соединений в пуле: параллельные операции.
    let (a, b2, c) = tokio::join!(store.ping(), store.ping(), store.ping());
    a.unwrap();
    b2.unwrap();
    c.unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "no pool connection to kill");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    for _ in 0..4 {
        store
            .ping()
            .await
            .expect("a killed idle connection reached the caller");
    }
}
